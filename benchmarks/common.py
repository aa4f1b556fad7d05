"""Shared benchmark plumbing: one fresh process per case, timing, peak memory, the report header.

A case is a JSON dict; the script re-runs itself with ``--case JSON`` and prints one JSON result line, so every
case starts with clean peak-memory counters. On CUDA a script may send a JSON *list* of cases to one child (the
allocator's peak counter is reset per case, so one process serves many cases and the start-up is paid once).
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable


def measure(fn: Callable[[], object], device, warmup: int, repeats: int, grad: bool = False) -> dict:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup``, and its peak memory in GiB.

    CUDA: allocator peak above what was allocated before; CPU: growth of the process's peak RSS.
    """
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        gc.collect()  # the previous case of a grouped child (see run_child_case) is gone
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    with torch.set_grad_enabled(grad):
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 1024 ** 3
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024 / 1024 ** 3
    return {"median_s": statistics.median(times), "peak_gib": peak}


def fast_math(device, cudnn_benchmark: bool = True) -> None:
    """TF32 and (unless ``cudnn_benchmark`` is false) cuDNN autotuning on CUDA (what the published numbers used as
    "fp32")."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = cudnn_benchmark


def header(title: str, device: str, warmup: int, repeats: int) -> None:
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = (f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"{torch.get_num_threads()} threads)")
    print(f"# {title}")
    print(f"device: {name}; torch {torch.__version__}; date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"median of {repeats} after {warmup} warm-up runs\n")


def add_timing_args(parser) -> None:
    """The flags every benchmark takes: ``--warmup``, ``--repeats`` and the hidden ``--case`` of a child process."""
    import argparse

    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)


def run_child_case(args, run_case: Callable[[dict], dict]) -> bool:
    """In a child process (``--case JSON``, see :func:`run_in_subprocess`): run that case (or each case of a list,
    an error in one becoming its ``{"error": ...}``), print the result as JSON and return True; otherwise return
    False."""
    if not args.case:
        return False
    spec = json.loads(args.case)
    if isinstance(spec, dict):
        print(json.dumps(run_case(spec)))
        return True
    results = []
    for one in spec:
        try:
            results.append(run_case(one))
        except Exception as exc:  # noqa: BLE001 -- one failed case (e.g. out of memory) must not lose the others
            results.append({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    print(json.dumps(results))
    return True


def run_in_subprocess(script: str, spec) -> object:
    """Run ``script --case JSON`` and return its result (a dict, or a list for a list of cases), or
    ``{"error": last stderr line}`` (for each case of a list) when the child failed."""
    out = subprocess.run([sys.executable, os.path.abspath(script), "--case", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        error = {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        return [error] * len(spec) if isinstance(spec, list) else error
    return json.loads(out.stdout.strip().splitlines()[-1])


def vae_inputs(op: str, shape: str, latent_dim: int, dtype, device):
    """The input of one WF-VAE case (seed 1, made on the CPU so every device gets the same values): a video
    (1, 3, T, H, W) in [-1, 1] to encode, or latents (1, latent_dim, 1 + (T - 1) / 4, H / 8, W / 8) to decode, for
    ``shape`` "TxHxW"."""
    import torch

    t, h, w = (int(v) for v in shape.lower().split("x"))
    g = torch.Generator().manual_seed(1)
    if op == "encode":
        return (torch.rand(1, 3, t, h, w, generator=g) * 2 - 1).to(device, dtype)
    return torch.randn(1, latent_dim, 1 + (t - 1) // 4, h // 8, w // 8, generator=g).to(device, dtype)


def random_wfvae_folder(model: str, folder: str) -> str:
    """Random weights (seed 0) of WF-VAE ``model`` saved once in the release layout, so that our implementation
    and the published one measure the same weights."""
    import dataclasses

    import torch

    from wfvae import WFVAE

    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        WFVAE(**dataclasses.asdict(vae_config(model))).save_pretrained(folder)
    return folder


def published_wfvae(path: str, folder: str, dtype, device):
    """The published WF-VAE (a checkout of PKU-YuanGroup/WF-VAE at ``path``, only measured, never installed or
    copied) loaded from ``folder``."""
    sys.path.insert(0, os.path.abspath(path))
    try:
        from causalvideovae.model.vae.modeling_wfvae import WFVAEModel
    except ImportError as exc:
        raise SystemExit(f"error: --published {path} is not a PKU-YuanGroup/WF-VAE checkout ({exc})") from None
    return WFVAEModel.from_pretrained(folder, torch_dtype=dtype).eval().to(device)


def vae_config(name: str):
    """WF-VAE configuration by benchmark name: ``l16`` / ``s8`` (the released presets) or ``tiny``."""
    from wfvae import WFVAEConfig
    from wfvae.models.presets import WFVAE_L_16CHN, WFVAE_S_8CHN

    if name == "l16":
        return WFVAE_L_16CHN
    if name == "s8":
        return WFVAE_S_8CHN
    return WFVAEConfig(base_channels=16, latent_dim=8, encoder_energy_flow_hidden_size=16,
                       decoder_energy_flow_hidden_size=16, norm_type="layernorm", t_interpolation="trilinear")
