"""Sharded (FSDP2) training of the denoiser under Lightning's ``ModelParallelStrategy``.

    python tools/train.py fit --config configs/opensora/tiny.yaml --trainer.accelerator cpu --trainer.devices 2 \
        --trainer.strategy.class_path lightning.pytorch.strategies.ModelParallelStrategy

(``--trainer.strategy ModelParallelStrategy`` alone is read as a strategy *name* and refused: give the class path.)

Lightning's ``FSDPStrategy`` (FSDP1) refuses ``accelerator='cpu'``; ``ModelParallelStrategy`` sets up a device mesh
(gloo on the CPU, NCCL on GPUs) and leaves the parallelisation to ``LightningModule.configure_model``, which calls
:func:`shard_denoiser`: ``torch.distributed.fsdp.fully_shard`` on every transformer block, then on the whole
denoiser, and the same on the EMA copy, so that parameters, gradients, AdamW states and the EMA are each split over
the ranks (their parameters become ``DTensor`` shards; the forward and backward all-gather one block at a time and
the gradients are reduce-scattered, averaged over the ranks).

The denoiser has no tensor-parallel plan, so both dimensions of Lightning's 2-D mesh ``(data_parallel,
tensor_parallel)`` carry data: ``fully_shard`` with that mesh is hybrid sharding, replicated over ``data_parallel``
(by default the nodes) and sharded over ``tensor_parallel`` (by default the processes of a node); on one machine
that is plain FSDP over all its processes. Every rank reads its own batches (the bucket sampler shards by
``trainer.world_size``), as under DDP, so the steps are DDP's up to the order of float32 reductions.

The frozen parts (VAE, text encoder) are not sharded: each rank keeps a full copy. Checkpoints with
``save_distributed_checkpoint: false`` are one file with the full weights (the DDP layout, read by ``python -m
opensora.training export``); with ``true`` (the strategy's default) a folder of per-rank shards, which also holds
the frozen VAE (the strategy's sharded loader asks for every key of the module); :func:`read_checkpoint` reads both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List

import torch


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` is a ``DTensor`` (a sharded module)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _shard_blocks_then_root(model: torch.nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer_blocks:
        fully_shard(block, mesh=mesh)
    # the root too reshards after forward: a forward without backward (validation, the EMA) would otherwise leave
    # full, unsharded parameters registered until the next backward
    fully_shard(model, mesh=mesh, reshard_after_forward=True)


def shard_denoiser(model: torch.nn.Module, ema, mesh) -> None:
    """FSDP2 on ``model`` (an :class:`~opensora.models.OpenSoraT2V`: each of its ``transformer_blocks``, then the
    root) and on the EMA copy's network (``ema.module``, same layout: the EMA update is then shard by shard), in
    place, over ``mesh`` (a 1-D mesh: sharded; 2-D: replicated over the first dimension, sharded over the second)."""
    _shard_blocks_then_root(model, mesh)
    if ema is not None:
        _shard_blocks_then_root(ema.module, mesh)


def full_state_dict(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The full (gathered) state dict of a sharded ``module`` on the CPU; a collective: every rank must call it.
    Rank 0 gets every tensor, the other ranks an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def sharded_grad_norm(grads: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm (float32 scalar) of gradients that are ``DTensor`` shards (FSDP2): each rank sums the squares
    of its local shards, the sums are all-reduced over every mesh dimension that the gradient is sharded on (a
    replicated dimension holds copies and is not summed). Gradients on one mesh and placement share one all-reduce.
    The same on every rank."""
    from torch.distributed.tensor import Shard

    groups: Dict[Any, List[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device_mesh, tuple(g.placements)), []).append(g)
    total = torch.zeros((), dtype=torch.float32)
    for (mesh, placements), members in groups.items():
        local = torch.stack([torch.linalg.vector_norm(g.to_local().detach().float()) ** 2 for g in members]).sum()
        for dim, placement in enumerate(placements):
            if isinstance(placement, Shard):
                torch.distributed.all_reduce(local, group=mesh.get_group(dim))
        total = total + local.cpu()
    return total.sqrt()


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A Lightning checkpoint as one dict (``state_dict``, ``hyper_parameters``, ...): a file (``torch.load``), or
    the folder that ``ModelParallelStrategy(save_distributed_checkpoint=True)`` writes, read whole in this process
    (its shards joined into full tensors)."""
    if not os.path.isdir(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    checkpoint = _load_distributed_checkpoint(Path(path))
    optimizers = sorted(k for k in checkpoint if k.startswith("optimizer_") and k[len("optimizer_"):].isdigit())
    if optimizers:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizers]
    return checkpoint
