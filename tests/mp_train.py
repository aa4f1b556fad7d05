"""Run by tests/test_multiprocess_training.py as a 2-process launch: ``python tests/mp_train.py RUNS.json`` (the
first run's ``--trainer.devices 2 --trainer.strategy ddp`` makes Lightning start the second process, which runs
this script again) or ``torchrun --nproc_per_node 2 tests/mp_train.py RUNS.json``.

``RUNS.json`` is a list of argument lists of ``tools/train.py``; each process runs them in order with
``tools/train.py``'s own ``main`` (what ``python tools/train.py ARGS`` runs), so that one launch pays the process
start (torch, Lightning, diffusers imports) once for several runs. Lightning keeps the process group of the first
run for the later ones. The first run that does not exit 0 ends the script with its status.
"""
import importlib.util
import json
import os
import sys

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "train.py")


def load_train():
    """``tools/train.py`` as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        runs = json.load(fh)
    train = load_train()
    for argv in runs:
        code = train.main(argv)
        if code:
            sys.exit(code)
