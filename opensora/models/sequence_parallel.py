"""Exact sequence-parallel inference of :class:`~opensora.models.transformer.OpenSoraT2V` (Ulysses-style).

With ``P`` processes, every rank holds the same inputs and runs the whole model, but each block processes only
its ``n = ceil(N / P)`` of the ``N`` video tokens (the last rank's share is zero-padded when ``P`` does not divide
``N``)::

    tokens x (B, N, D) --shard--> (B, n, D) on each rank                      (before the first block)
    self-attention: q, k, v (B, n, H, d) --all-to-all--> (B, N, H / P, d)      (all tokens, this rank's heads)
                    dense or Skiparse attention over all N tokens, exactly as in one process
                    (B, N, H / P, d) --all-to-all--> (B, n, H, d)
    everything else of a block (norms, modulation, cross-attention, MLP) is per token
    output (B, n, D) --all-gather--> (B, N, D)                                 (after the last block)

so every rank ends with the full prediction, equal to the single-process one up to float rounding of the
smaller matrix products, and the scheduler steps stay identical on all ranks. The head count must be divisible
by ``P``. The model is not changed: :func:`enable_sequence_parallel` adds forward hooks to the blocks and wraps
each self-attention's :meth:`~opensora.models.transformer.SelfAttention.attend` on the instance; the returned
handle's ``remove()`` restores single-process behaviour.

Activation memory per rank falls by about ``P`` (the attention of ``H / P`` heads, the MLP of ``N / P`` tokens);
the weights are replicated. Launch with ``torchrun --nproc_per_node P`` (gloo on the CPU, NCCL on GPUs):
``opensora-sample`` (``python -m opensora.cli``) then calls :func:`launch_device` and :func:`from_launcher`, samples
on every rank and writes the outputs from rank 0.
"""
from __future__ import annotations

import atexit
import math
import os
from typing import Callable, List, Optional

import torch
import torch.distributed as dist
from einops import rearrange

from opensora.models.transformer import OpenSoraBlock, SelfAttention

BLOCK_ARGS = ("hidden_states", "context", "modulation", "rope", "keep", "context_bias", "residual")


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """All-to-all over dim 0 of ``x`` (P, ...): chunk ``i`` goes to rank ``i``; returns the P chunks received."""
    x = x.contiguous()
    out = torch.empty_like(x)  # contiguous too (empty_like keeps the strides of a permuted view)
    dist.all_to_all_single(out, x, group=group)
    return out


class SequenceParallel:
    """Hooks that run a model's blocks on a share of the tokens (module docstring); made by
    :func:`enable_sequence_parallel`."""

    def __init__(self, model: torch.nn.Module, group=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("sequence parallelism needs torch.distributed initialised (e.g. launched by torchrun)")
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.blocks: List[OpenSoraBlock] = [m for m in model.modules() if isinstance(m, OpenSoraBlock)]
        attentions = [m for m in model.modules() if isinstance(m, SelfAttention)]
        if not self.blocks:
            raise ValueError("the model has no OpenSoraBlock to parallelise")
        for attn in attentions:
            if attn.heads % self.world:
                raise ValueError(f"sequence parallelism over {self.world} processes needs a head count divisible "
                                 f"by {self.world}; the model has {attn.heads} heads")
        self.num_tokens: Optional[int] = None
        self.handles = []
        first, last = self.blocks[0], self.blocks[-1]
        for block in self.blocks:
            self.handles.append(block.register_forward_pre_hook(self._before_block(block is first), with_kwargs=True))
        self.handles.append(last.register_forward_hook(self._after_last))
        for attn in attentions:
            attn.attend = self._attend(attn.attend)  # instance attribute: wraps the class method
        self.attentions = attentions

    # ------------------------------------------------------------------ token shards
    def share(self, num_tokens: int) -> int:
        """Tokens per rank (n = ceil(N / P))."""
        return math.ceil(num_tokens / self.world)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's tokens of x (B, N, ...): (B, n, ...), zero-padded."""
        return self._shard(x, 1)

    def _shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n = self.share(self.num_tokens)
        pad = n * self.world - x.shape[dim]
        if pad:
            shape = list(x.shape)
            shape[dim] = pad
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        return x.narrow(dim, self.rank * n, n)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, ...) shares of all ranks -> (B, N, ...)."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts, dim=1)[:, :self.num_tokens]

    # ------------------------------------------------------------------ hooks
    def _before_block(self, first: bool) -> Callable:
        def hook(module, args, kwargs):
            values = dict(zip(BLOCK_ARGS, args))
            values.update(kwargs)
            if first:
                self.num_tokens = values["hidden_states"].shape[1]
                values["hidden_states"] = self.shard(values["hidden_states"])
            cos, sin = values["rope"]
            values["rope"] = (self._shard(cos, 0), self._shard(sin, 0))
            if values.get("residual") is not None:
                values["residual"] = self.shard(values["residual"])
            return (), values

        return hook

    def _after_last(self, module, args, output: torch.Tensor) -> torch.Tensor:
        return self.gather(output)

    def _attend(self, attend: Callable) -> Callable:
        def parallel_attend(q, k, v, keep=None):
            q, k, v = (self._to_heads(t) for t in (q, k, v))
            return self._to_tokens(attend(q, k, v, keep))

        return parallel_attend

    def _to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, H, d) token share -> (B, N, H / P, d): all tokens, this rank's heads."""
        x = _all_to_all(rearrange(x, "b n (p h) d -> p b n h d", p=self.world), self.group)
        return rearrange(x, "p b n h d -> b (p n) h d")[:, :self.num_tokens]

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, H / P, d) -> (B, n, H, d): back to this rank's tokens, all heads."""
        n = self.share(self.num_tokens)
        pad = n * self.world - x.shape[1]
        if pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)
        x = _all_to_all(rearrange(x, "b (p n) h d -> p b n h d", p=self.world), self.group)
        return rearrange(x, "p b n h d -> b n (p h) d")

    def remove(self) -> None:
        """Back to single-process behaviour."""
        for handle in self.handles:
            handle.remove()
        for attn in self.attentions:
            attn.__dict__.pop("attend", None)
        self.handles, self.attentions = [], []


def enable_sequence_parallel(model: torch.nn.Module, group=None) -> SequenceParallel:
    """Split ``model``'s video tokens over the processes of ``group`` (default: the whole world) in every forward
    pass; returns the handle (``remove()`` undoes it). Every rank must call the model with the same inputs."""
    return SequenceParallel(model, group)


def launched_world() -> int:
    """The process count of a ``torchrun`` launch (``WORLD_SIZE``), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_device(device: torch.device) -> torch.device:
    """Under a multi-process launch, a CUDA ``device`` without an index becomes this process' GPU
    (``cuda:LOCAL_RANK``); anything else is returned as it is."""
    if launched_world() > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def from_launcher(model: torch.nn.Module, device: torch.device) -> Optional[SequenceParallel]:
    """Sequence parallelism over the processes of a ``torchrun`` launch (None in a single process): initialises
    the default process group when nothing did (NCCL for CUDA ``device``, else gloo; destroyed at exit)."""
    if launched_world() <= 1:
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return enable_sequence_parallel(model)
