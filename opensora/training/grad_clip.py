"""Adaptive gradient clipping (Open-Sora Plan v1.3 report, arXiv 2412.00131) as a Lightning callback.

The clipping threshold follows the recent gradient norms instead of being a constant::

    g_t       = ||grad||_2 (this step)
    threshold = mu + k * sigma            # mu, sigma^2: EMAs (decay beta) of the accepted norms and their variance
    g_t not finite          -> the step is skipped: every gradient is zeroed (AdamW then only decays weights a bit)
    g_t > threshold         -> gradients scaled by threshold / g_t
    mu     <- beta * mu + (1 - beta) * min(g_t, threshold)
    sigma^2 <- beta * sigma^2 + (1 - beta) * (min(g_t, threshold) - mu_old)^2

During the first ``warmup`` steps (at least 2, so that sigma is defined) only the statistics are gathered (no
clipping beyond ``max_norm``).

Under DDP, the report compares each rank's local norm with the threshold: ranks with abnormal (non-finite or above
the threshold) gradients contribute zero and the other ranks are rescaled by ``world / n_normal`` so that the
all-reduced mean is the mean of the normal ranks (:func:`rank_scale`, an ``all_gather`` of the local norms that
returns 1 / 0 in a single process); the statistics then take the mean of the normal local norms (the same on
every rank). That needs the *local* gradients, and DDP averages them during ``backward``. So ``per_rank: true``
goes with :func:`local_gradients_hook`, a DDP communication hook that leaves the gradients local::

    trainer:
      strategy: {class_path: lightning.pytorch.strategies.DDPStrategy,
                 init_args: {ddp_comm_hook: opensora.training.grad_clip.local_gradients_hook}}

and the callback all-reduces (averages) the rescaled gradients itself. Lightning registers a strategy's
``ddp_comm_hook`` on CUDA devices only, so the callback registers :func:`local_gradients_hook` itself when the run is
DDP without it (CPU / gloo runs, or a config that only sets ``per_rank``), and refuses another hook
(:func:`ensure_local_gradients`). With the default DDP the callback sees the averaged gradient, identical on every
rank, and applies the single-process rule to it. Under FSDP (``ModelParallelStrategy``,
:mod:`opensora.training.sharding`) each rank holds a shard of the averaged gradient: the norm is the global one
(squared shard norms all-reduced) and the single-process rule applies; ``per_rank`` is refused there (no rank ever
holds its own full gradient).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

import lightning as L
import torch


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Total L2 norm (float32 scalar) of the gradients of ``parameters`` (0 when none has a gradient). Under FSDP
    (``DTensor`` shards) the global norm over the ranks (:func:`opensora.training.sharding.sharded_grad_norm`)."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in parameters if p.grad is not None]
    if any(isinstance(g, DTensor) for g in grads):
        from opensora.training.sharding import sharded_grad_norm

        return sharded_grad_norm(grads)
    grads = [g.detach().float() for g in grads]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def scale_grads(parameters: Iterable[torch.nn.Parameter], factor: float) -> None:
    """Multiply every gradient by ``factor`` in place (``0`` zeroes them, NaNs included)."""
    for p in parameters:
        if p.grad is not None:
            if factor == 0:
                p.grad.zero_()
            else:
                p.grad.mul_(factor)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def local_gradients_hook(state, bucket):
    """DDP communication hook that does not communicate: gradients stay local for :class:`AdaptiveGradClip` with
    ``per_rank`` (which averages them after its per-rank rule). Returns a completed ``Future[Tensor]`` of the
    bucket. (No annotations: DDP compares them with the types themselves, and this module's postponed
    annotations are strings, which DDP rejects.)"""
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


def ensure_local_gradients(model: torch.nn.Module, local: bool = True) -> None:
    """Make a DDP-wrapped ``model`` leave gradients local (``local``: register :func:`local_gradients_hook` unless
    it is registered already) or check that it averages them (``not local``: no local hook). A model that is not
    ``DistributedDataParallel`` is left alone. Raises ``ValueError`` for a hook that contradicts ``local``."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return
    hooks = [hook for hook, _ in getattr(model, "_comm_hooks", [])]
    has_local = local_gradients_hook in hooks
    if local and not has_local:
        if hooks:
            raise ValueError(f"AdaptiveGradClip(per_rank=True) needs the local_gradients_hook DDP communication "
                             f"hook, but {hooks[0]} is registered")
        model.register_comm_hook(None, local_gradients_hook)
    elif not local and has_local:
        raise ValueError("local_gradients_hook leaves the gradients un-averaged: use it with "
                         "AdaptiveGradClip(per_rank=True) only")


def average_grads(parameters: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce every gradient to its mean over the ranks (no-op in a single process)."""
    if not _distributed():
        return
    world = torch.distributed.get_world_size()
    for p in parameters:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


def rank_scale(local_norm: torch.Tensor, threshold: float) -> float:
    """The report's DDP rule: this rank's gradient factor, 0 when its norm is abnormal (non-finite or above
    ``threshold``), else ``world / n_normal``. When no rank is normal, the finite ranks are clipped to the threshold
    (and rescaled by ``world / n_finite``) rather than skipped, so the statistics cannot stall; non-finite ranks are
    always zeroed. Single process: 1, the clipping factor, or 0."""
    return _rank_rule(local_norm, threshold)[0]


def _rank_rule(local_norm: torch.Tensor, threshold: float):
    """(factor of this rank, norm fed to the statistics or None when the step is skipped)."""
    dist = _distributed()
    norms = local_norm.detach().float().reshape(1)
    if dist:
        gathered = [torch.zeros_like(norms) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, norms)
        norms = torch.cat(gathered)
    me = torch.distributed.get_rank() if dist else 0
    finite = torch.isfinite(norms)
    normal = finite & (norms <= threshold)
    if bool(normal.any()):
        return (len(norms) / int(normal.sum()) if bool(normal[me]) else 0.0), float(norms[normal].mean())
    if bool(finite.any()):  # every finite rank is above the threshold: clip them all (never stall)
        factor = len(norms) / int(finite.sum()) * threshold / float(norms[me]) if bool(finite[me]) else 0.0
        return factor, threshold
    return 0.0, None


class AdaptiveGradClip(L.Callback):
    """Clip to ``mean + k * std`` of an EMA of the gradient norm; skip non-finite steps (module docstring).

    Args:
        beta: EMA decay of the norm statistics.
        k: threshold in standard deviations (3 in the report).
        warmup: steps that only gather statistics.
        max_norm: an absolute ceiling also applied (None: none), e.g. during warm-up.
        per_rank: the DDP rule on local gradients, then their average (with :func:`local_gradients_hook`, see the
            module docstring).
        log: log ``train/grad_norm``, ``train/grad_threshold`` and ``train/grad_skipped``.

    State (``mean``, ``var``, ``count``, ``skipped``, ``clipped``) is saved in checkpoints and restored on resume.
    Use it instead of the Trainer's ``gradient_clip_val``.
    """

    def __init__(self, beta: float = 0.99, k: float = 3.0, warmup: int = 100, max_norm: Optional[float] = None,
                 per_rank: bool = False, log: bool = True):
        super().__init__()
        if not 0 <= beta < 1 or k <= 0 or warmup < 0:
            raise ValueError(f"need 0 <= beta < 1, k > 0, warmup >= 0; got {beta}, {k}, {warmup}")
        self.beta, self.k, self.warmup, self.max_norm = beta, k, warmup, max_norm
        self.per_rank, self.log = per_rank, log
        self.mean, self.var, self.count, self.skipped, self.clipped = 0.0, 0.0, 0, 0, 0

    @property
    def threshold(self) -> float:
        """The current clipping threshold (``inf`` during warm-up unless ``max_norm``)."""
        limit = math.inf if self.count < max(self.warmup, 2) else self.mean + self.k * math.sqrt(self.var)
        return min(limit, self.max_norm) if self.max_norm is not None else limit

    def update(self, norm: float) -> None:
        """Feed one accepted norm into the statistics (the first one initialises the mean)."""
        if self.count == 0:
            self.mean, self.var = norm, 0.0
        else:
            delta = norm - self.mean
            self.mean += (1 - self.beta) * delta
            self.var = self.beta * self.var + (1 - self.beta) * delta * delta
        self.count += 1

    def clip(self, parameters: Iterable[torch.nn.Parameter]) -> Dict[str, float]:
        """Apply the rule to the gradients of ``parameters``; returns ``norm``, ``threshold``, ``factor``."""
        params = [p for p in parameters if p.grad is not None]
        norm_t = grad_norm(params)
        norm, threshold = float(norm_t), self.threshold
        if self.per_rank:
            factor, accepted = _rank_rule(norm_t, threshold)
            if accepted is None:
                self.skipped += 1
            else:
                self.update(accepted)
            if factor != 1.0:
                scale_grads(params, factor)
            average_grads(params)
            return {"norm": norm, "threshold": threshold, "factor": factor}
        if not math.isfinite(norm):
            factor = 0.0
        else:
            factor = min(1.0, threshold / max(norm, 1e-12))
        if factor == 0.0:
            self.skipped += 1
        else:
            if factor < 1.0:
                self.clipped += 1
            self.update(min(norm, threshold))
        if factor != 1.0:
            scale_grads(params, factor)
        return {"norm": norm, "threshold": threshold, "factor": factor}

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        from opensora.training.sharding import is_sharded

        if self.per_rank and is_sharded(pl_module):
            raise ValueError("AdaptiveGradClip(per_rank=True) needs each rank's own gradient, but FSDP "
                             "reduce-scatters the gradients in backward: use per_rank: false (the global-norm rule)")
        ensure_local_gradients(trainer.strategy.model, self.per_rank)

    def on_before_optimizer_step(self, trainer: "L.Trainer", pl_module: "L.LightningModule", optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        out = self.clip(params)
        if self.log:
            finite = out["threshold"] if math.isfinite(out["threshold"]) else -1.0
            pl_module.log_dict({"train/grad_norm": out["norm"] if math.isfinite(out["norm"]) else -1.0,
                                "train/grad_threshold": finite, "train/grad_skipped": float(self.skipped)},
                               on_step=True, on_epoch=False)

    def state_dict(self) -> Dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count, "skipped": self.skipped,
                "clipped": self.clipped}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        for name, value in state_dict.items():
            setattr(self, name, value)
