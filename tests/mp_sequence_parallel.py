"""Run under ``torchrun --nproc_per_node 2`` by tests/test_multiprocess_sampling.py (``mp_sequence_parallel.py OUT
[COMMANDS.json]``): every rank computes the single-process result itself (no hooks), then the sequence-parallel
one, and writes the max |difference| per case to ``OUT/rank<r>.json``.

Cases: the tiny denoiser with dense blocks only and with a Skiparse block, on 27 tokens (3 x 3 x 3, not divisible
by 2) with latent and text masks and controller residuals.

``COMMANDS.json`` (optional) lists command-line programs to run next in the same processes, each
``{"name": ..., "module": ..., "argv": [...]}``: the module runs as ``python -m MODULE ARGV`` runs it (``runpy``,
as ``__main__``, under the process group set up here), so that one launch pays the process start once for several
checks. Each rank records every command's exit status and standard error under ``"commands"`` in its JSON file.
"""
import contextlib
import io
import json
import os
import runpy
import sys

import torch
import torch.distributed as dist

from opensora.models.sequence_parallel import enable_sequence_parallel
from test_pipeline import make_transformer  # tests/ is on the path


def model_cases():
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 4, 3, 6, 6, generator=g)              # patch 2: 3 x 3 x 3 = 27 tokens
    text = torch.randn(2, 5, 16, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = torch.ones(2, 3, 6, 6)
    mask[0, :, 4:] = 0                                              # padded latent rows in the first sample
    for name, overrides in (("dense", dict(sparse1d=False)), ("skiparse", {})):
        model = make_transformer(**overrides)
        residuals = [None, 0.1 * torch.randn(2, 27, 24, generator=g), None]
        args = dict(hidden_states=latent, timestep=torch.tensor([10.0, 700.0]), encoder_hidden_states=text,
                    encoder_attention_mask=text_mask, attention_mask=mask, block_residuals=residuals)
        yield name, model, args


def main(out: str, commands_file=None) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    result = {}
    with torch.no_grad():
        for name, model, args in model_cases():
            reference = model(**args).sample
            handle = enable_sequence_parallel(model)
            seen = []  # tokens each self-attention receives (this rank's share)
            probes = [m.attn1.register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape[1]))
                      for m in model.transformer_blocks]
            parallel = model(**args).sample
            handle.remove()
            for probe in probes:
                probe.remove()
            again = model(**args).sample
            result[name] = {"diff": float((parallel - reference).abs().max()), "scale": float(reference.abs().max()),
                            "removed": bool(torch.equal(again, reference)), "tokens": seen}

    commands = {}
    if commands_file is not None:
        with open(commands_file) as fh:
            for command in json.load(fh):
                commands[command["name"]] = run_command(command["module"], command["argv"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"models": result, "commands": commands}, fh)
    dist.destroy_process_group()


def run_command(module: str, argv) -> dict:
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
