"""Attention backends.

A backend is a function ``backend(q, k, v, bias=None) -> out`` on tensors laid out (B, S, heads, d), with an
optional additive ``bias`` broadcastable to (B, heads, S_q, S_k). The scale is 1/sqrt(d).

* :func:`sdpa_attention` (default): ``torch.nn.functional.scaled_dot_product_attention``. Without a bias it is
  called without a mask, so PyTorch may pick the flash kernel.
* :func:`xformers_attention`: ``xformers.ops.memory_efficient_attention``, only if xformers is importable
  (:func:`xformers_available`); nothing else in the package needs xformers.

Masks are additive biases with the release's constants, so that rows whose keys are all masked behave as in the
release (uniform weights) instead of producing NaNs.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

MASKED_BIAS = -10000.0
"""Bias of a key hidden by a mask (latent ``attention_mask`` or text ``encoder_attention_mask``)."""
PADDED_BIAS = -9980.0
"""Bias of a key added by Skiparse padding."""


def key_bias(keep: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Key mask (B, S) (True = attend) -> additive bias (B, 1, 1, S); None stays None."""
    if keep is None:
        return None
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, MASKED_BIAS)
    return bias[:, None, None, :]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PyTorch SDPA. q (B, S_q, heads, d), k/v (B, S_k, heads, d) -> (B, S_q, heads, d)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=None)
def xformers_available() -> bool:
    """Whether ``xformers.ops`` imports and loads (a broken extension counts as unavailable)."""
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or errors raised while loading its compiled extension
        return False
    return True


def xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """xformers memory-efficient attention, same contract as :func:`sdpa_attention`.

    xformers wants a bias of full shape (B, heads, S_q, S_k) whose last dimension starts at 8-aligned offsets:
    we store the key bias once, with its length rounded up to a multiple of 8, and expand it (no copy).
    """
    if not xformers_available():
        raise ImportError("xformers is not installed or its extension does not load; use sdpa_attention")
    import xformers.ops as xops

    if bias is not None:
        b, s_q, heads, _ = q.shape
        s_k = k.shape[1]
        bias = bias.to(q.dtype)
        aligned = bias.new_empty(*bias.shape[:-1], (s_k + 7) // 8 * 8)
        aligned[..., :s_k] = bias
        bias = aligned[..., :s_k].expand(b, heads, s_q, s_k)
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias)
