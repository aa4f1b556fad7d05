"""Exponential moving average of a model's weights, shared by every trainer of the project.

It is :class:`torch.optim.swa_utils.AveragedModel` with the EMA rule (``ema <- decay * ema + (1 - decay) * model``,
one fused ``_foreach_lerp_`` over all tensors, or two when the parameters are FSDP2 shards), buffers included: its
first update copies the model, later updates average. The copy is frozen and stays in eval mode. In a Lightning
checkpoint its tensors are under ``ema.module.`` plus the update counter ``ema.n_averaged``, so a resumed run
continues the average exactly.
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_copy(model: nn.Module, decay: float) -> AveragedModel:
    """A frozen, eval-mode EMA copy of ``model``; call ``.update_parameters(model)`` after each optimizer step and
    use ``.module`` for the averaged network."""
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=_split_sharded(get_ema_multi_avg_fn(float(decay))), use_buffers=True)
    return ema.requires_grad_(False).eval()


def _split_sharded(multi_avg_fn):
    """``multi_avg_fn`` called once on the ``DTensor`` pairs (parameters of a model sharded with FSDP2) and once on
    the plain tensors (its buffers, or everything when nothing is sharded): one ``_foreach`` call cannot mix them."""
    from torch.distributed.tensor import DTensor

    def average(ema_tensors, model_tensors, n_averaged):
        sharded = [isinstance(t, DTensor) for t in ema_tensors]
        if not any(sharded):  # the usual case: one call, as without FSDP
            return multi_avg_fn(ema_tensors, model_tensors, n_averaged)
        for kind in (True, False):
            pairs = [(e, m) for e, m, s in zip(ema_tensors, model_tensors, sharded) if s is kind]
            if pairs:
                multi_avg_fn([e for e, _ in pairs], [m for _, m in pairs], n_averaged)

    return average


def ema_weights(state: Mapping[str, torch.Tensor], owner: str = "ema") -> Dict[str, torch.Tensor]:
    """The averaged network's tensors from a checkpoint ``state_dict`` in which the EMA copy is the attribute
    ``owner``: keys under ``{owner}.module.`` (this module), or ``{owner}.`` in checkpoints of the earlier plain-copy
    EMA; empty when there is none."""
    for prefix in (f"{owner}.module.", f"{owner}."):
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k != f"{owner}.n_averaged"}
        if found:
            return found
    return {}
