"""Shared benchmark plumbing: one fresh process per case, timing, peak memory, the report header.

A case is a JSON dict; the script re-runs itself with ``--case JSON`` and prints one JSON result line, so every
case starts with clean peak-memory counters.
"""
from __future__ import annotations

import datetime
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


def fast_math(device) -> None:
    """TF32 and cuDNN autotuning on CUDA (what the published numbers used as "fp32")."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def header(title: str, device: str, warmup: int, repeats: int) -> None:
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
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
    """In a child process (``--case JSON``, see :func:`run_in_subprocess`): run that case, print its result as JSON
    and return True; otherwise return False."""
    if not args.case:
        return False
    print(json.dumps(run_case(json.loads(args.case))))
    return True


def run_in_subprocess(script: str, spec: dict) -> dict:
    """Run ``script --case JSON`` and return its result dict, or ``{"error": last stderr line}``."""
    out = subprocess.run([sys.executable, os.path.abspath(script), "--case", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


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
