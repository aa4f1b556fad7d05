"""Several multi-process checks in one launch (tests/test_multiprocess.py): ``python tests/mp_driver.py JOBS.json
OUT`` (a first training run's ``--trainer.devices 2 --trainer.strategy ddp`` makes Lightning start the second
process, which runs this script again) or ``torchrun --nproc_per_node 2 tests/mp_driver.py JOBS.json OUT``.

Process start-up (torch, Lightning, diffusers imports) costs more than the checks, so each process runs every job
of ``JOBS.json`` in order, each a dict with a ``name`` and one of:

* ``"train": [ARGS]``: ``tools/train.py ARGS`` through that script's own ``main`` (Lightning keeps the process group
  of the first run for the later ones);
* ``"module": MODULE, "argv": [ARGS]``: ``python -m MODULE ARGS`` as ``python -m`` runs it (``runpy``, as
  ``__main__``), its standard error captured;
* ``"sequence_parallel": true``: the model cases of tests/mp_sequence_parallel.py.

:class:`StepLosses` is a callback for runs that ``mp_probe.Probe`` cannot digest (FSDP: sharded weights).

Jobs other than training set up the default process group (gloo) when nothing did. After each job every rank
writes ``OUT/<name>-rank<r>.json`` (``{"code": exit status, "stderr": ...}``, or the model cases' results); the
first job that does not exit 0 ends the script with its status (the other rank could wait in a collective).
"""
import contextlib
import functools
import importlib.util
import io
import json
import os
import runpy
import sys
import time

import lightning as L

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "train.py")


@functools.lru_cache(maxsize=None)
def load_train():
    """``tools/train.py`` as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_group():
    """The default process group of the launch (gloo), set up here unless something did."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist


def run_module(module: str, argv) -> dict:
    """``python -m MODULE ARGV`` in this process: ``{"code": exit status, "stderr": what it wrote there}``."""
    saved = sys.argv
    sys.argv = [module, *argv]
    err = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return {"code": code, "stderr": err.getvalue()}


def run_job(job: dict) -> dict:
    if "train" in job:
        return {"code": load_train().main(job["train"])}
    if "module" in job:
        process_group()
        return run_module(job["module"], job["argv"])
    from mp_sequence_parallel import results

    process_group()
    return {"code": 0, "models": results()}


class StepLosses(L.Callback):
    """Every rank appends ``{"step": s, "loss": training loss, "numel": ..., "sharded": ...}`` to
    ``<out>/<tag>-rank<r>.jsonl`` after each optimizer step (``mp_driver.StepLosses`` in a run's callbacks):
    ``numel``, the number of elements of the denoiser's parameters that this rank holds (its shards under FSDP),
    ``sharded`` whether they are ``DTensor`` shards. Unlike ``mp_probe.Probe`` it digests nothing that FSDP shards."""

    def __init__(self, out: str, tag: str):
        super().__init__()
        self.out, self.tag = out, tag

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, f"{self.tag}-rank{trainer.global_rank}.jsonl"), "a") as fh:
            params = list(pl_module.model.parameters())
            local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
            fh.write(json.dumps({"step": trainer.global_step, "loss": float(outputs["loss"]), "time": time.time(),
                                 "numel": sum(t.numel() for t in local),
                                 "sharded": any(hasattr(p, "to_local") for p in params)}) + "\n")


def main(jobs_file: str, out: str) -> int:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    with open(jobs_file) as fh:
        jobs = json.load(fh)
    for job in jobs:
        record = run_job(job)
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))
        with open(os.path.join(out, f"{job['name']}-rank{rank}.json"), "w") as fh:
            json.dump(record, fh)
        if record["code"]:
            return record["code"]
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
