"""Test-only instrumentation of multi-process training runs (tests/test_multiprocess.py).

:class:`Probe` is a Lightning callback added to a run's config; every rank appends one JSON line per optimizer step
to ``<out>/<tag>-rank<r>.jsonl`` with what the tests compare across ranks and across runs:

* ``indices``: the dataset indices of the step's batch (recorded by wrapping the training set's ``__getitem__``;
  the loader fetches batches in step order, so the first ``B`` indices not yet used are this step's batch);
* ``shapes``: the shape of every tensor of the batch; ``buckets``: the bucket key (denoiser data) or the kind
  (``video`` / ``image``, VAE data) of each index;
* ``weights``: a digest per top-level child of the LightningModule (``vae``, ``ema``, ``model`` ...) after the step;
* ``local`` / ``applied``: gradient norm and digest after backward (the rank's own gradient when a local-gradient
  communication hook is registered) and right before the optimizer step (after the clipping callbacks);
* ``times``: the denoiser's diffusion times of the step (its ``timesteps`` wrapped);
* ``clip``: the state of :class:`opensora.training.grad_clip.AdaptiveGradClip` when the run has one.

``poison_step`` / ``poison_rank``: that rank's gradient becomes NaN after backward at that step (a rank with an
abnormal gradient). Nothing here changes what the library computes otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from typing import Dict, Iterable, Optional

import lightning as L
import torch


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 (16 hex digits) of the bytes of ``tensors`` in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def state_digests(state: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """Digest per top-level prefix of a state dict (keys sorted), e.g. ``{"vae": ..., "ema": ...}``."""
    groups: Dict[str, list] = {}
    for key in sorted(state):
        groups.setdefault(key.split(".", 1)[0], []).append(state[key])
    return {prefix: digest(tensors) for prefix, tensors in groups.items()}


def _grads(module: torch.nn.Module):
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return {"norm": 0.0, "digest": ""}
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads]))
    return {"norm": float(norm), "digest": digest(g + 0.0 for g in grads)}  # + 0.0: -0.0 and 0.0 hash alike


class Probe(L.Callback):
    """Per-rank, per-step records of a run (module docstring)."""

    def __init__(self, out: str, tag: str = "run", poison_step: Optional[int] = None, poison_rank: int = 1):
        super().__init__()
        self.out, self.tag, self.poison_step, self.poison_rank = out, tag, poison_step, poison_rank
        self.pending: deque = deque()
        self.record: dict = {}

    def setup(self, trainer, pl_module, stage) -> None:
        dataset = trainer.datamodule.train_set
        pending, base = self.pending, type(dataset)

        def getitem(this, index):
            pending.append(int(index[0]) if isinstance(index, tuple) else int(index))
            return base.__getitem__(this, index)

        dataset.__class__ = type(f"Probed{base.__name__}", (base,), {"__getitem__": getitem})
        if callable(getattr(pl_module, "timesteps", None)):  # the denoiser's diffusion times of each step
            draw = pl_module.timesteps

            def timesteps(batch):
                times = draw(batch)
                self.record.setdefault("times", []).extend(times.tolist())
                return times

            pl_module.timesteps = timesteps
        self.buckets = ([list(k) for k in dataset.keys()] if hasattr(dataset, "keys")
                        else [dataset.kind(i) for i in range(len(dataset))])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        shapes = {k: list(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
        size = next(iter(shapes.values()))[0]
        self.record = {"step": trainer.global_step + 1, "rank": trainer.global_rank,
                       "world": trainer.world_size, "shapes": shapes,
                       "indices": [self.pending.popleft() for _ in range(size)]}
        self.record["buckets"] = [self.buckets[i] for i in self.record["indices"]]

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step + 1 == self.poison_step and trainer.global_rank == self.poison_rank:
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        self.record["local"] = _grads(pl_module)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.record["applied"] = _grads(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record["weights"] = state_digests(pl_module.state_dict())
        self.record["time"] = time.time()
        for cb in trainer.callbacks:
            if type(cb).__name__ == "AdaptiveGradClip":
                self.record["clip"] = cb.state_dict()
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, f"{self.tag}-rank{trainer.global_rank}.jsonl"), "a") as fh:
            fh.write(json.dumps(self.record) + "\n")


def read(out: str, tag: str, rank: int) -> Dict[int, dict]:
    """``{step: record}`` of one rank of one run."""
    with open(os.path.join(out, f"{tag}-rank{rank}.jsonl")) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {row["step"]: row for row in rows}


# ------------------------------------------------------------------------------------------------ launching
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0 and released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv, cwd, torchrun: int = 0, timeout: float = 300):
    """Run ``python ARGV`` (``torchrun`` > 0: under ``python -m torch.distributed.run`` with that many processes)
    with this checkout and tests/ importable, one thread per process and a fresh rendezvous port; a failure or a
    hang past ``timeout`` seconds fails the calling test with the end of the output."""
    import signal
    import subprocess
    import sys

    import pytest

    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]), OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cmd = [sys.executable]
    if torchrun:
        cmd += ["-m", "torch.distributed.run", f"--nproc_per_node={torchrun}", "--master_addr=127.0.0.1",
                f"--master_port={port}"]
    cmd += [str(a) for a in argv]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang takes every rank down
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s:\n{out[-2000:]}\n{err[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-2000:]}\n{err[-6000:]}")
    return out, err
