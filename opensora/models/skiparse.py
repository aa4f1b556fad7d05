"""Skiparse attention (Open-Sora Plan v1.3).

The N tokens of a sample (in (t, h, w) order) are padded with zeros to a multiple of k^2 and split into k
groups of N_pad / k tokens; self-attention runs inside each group only, at 1/k of the cost of full attention:

* single skip: token s belongs to group ``s mod k`` (every k-th token);
* group skip: token s belongs to group ``(s // k) mod k`` (every k-th run of k consecutive tokens).

The release alternates the two (even blocks single skip, odd blocks group skip), so that information can reach
any token within two blocks. Padded keys are masked; padded queries are dropped again afterwards. A group is
moved to the batch dimension: (B, N, ...) -> (B * k, N_pad / k, ...), sample-major. RoPE must be applied to
queries and keys *before* the rearrange, with the positions of the full grid.

The release only prepares masks for k in {1, 4}; every k >= 1 works here. k = 1 is full attention.

Cross-attention is not affected by Skiparse: every query sees all text tokens whatever its group. The release
still rearranges the queries and repeats the text once per group (:func:`skiparse_cross_attention`); that is
exactly plain cross-attention, which is what the model runs.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from einops import rearrange, repeat

from opensora.models.attention import PADDED_BIAS, key_bias, sdpa_attention

Backend = Callable[..., torch.Tensor]


def padded_length(num_tokens: int, ratio: int) -> int:
    """Token count after padding to a multiple of ratio^2."""
    block = ratio * ratio
    return -(-num_tokens // block) * block


def group_index(num_tokens: int, ratio: int, group: bool) -> torch.Tensor:
    """Skiparse group (0 .. ratio-1) of each of the N tokens, (N,) int64."""
    s = torch.arange(num_tokens)
    return (s // ratio) % ratio if group else s % ratio


def skiparse(x: torch.Tensor, ratio: int, group: bool) -> torch.Tensor:
    """(B, N, ...) -> (B * ratio, N_pad / ratio, ...): zero-pad, then gather each group into its own row."""
    b, n = x.shape[:2]
    pad = padded_length(n, ratio) - n
    if pad:
        x = torch.cat([x, x.new_zeros(b, pad, *x.shape[2:])], dim=1)
    if group:
        return rearrange(x, "b (n m k) ... -> (b m) (n k) ...", m=ratio, k=ratio)
    return rearrange(x, "b (g k) ... -> (b k) g ...", k=ratio)


def unskiparse(x: torch.Tensor, ratio: int, group: bool, num_tokens: int) -> torch.Tensor:
    """Inverse of :func:`skiparse`: (B * ratio, N_pad / ratio, ...) -> (B, N, ...) (padding dropped)."""
    if group:
        x = rearrange(x, "(b m) (n k) ... -> b (n m k) ...", m=ratio, k=ratio)
    else:
        x = rearrange(x, "(b k) g ... -> b (g k) ...", k=ratio)
    return x[:, :num_tokens]


def skiparse_key_bias(keep: Optional[torch.Tensor], batch: int, num_tokens: int, ratio: int, group: bool,
                      dtype: torch.dtype, device: torch.device) -> Optional[torch.Tensor]:
    """Additive key bias (B * ratio, 1, 1, N_pad / ratio) for grouped attention, or None if nothing is masked.

    ``keep`` (B, N) (True = attend) or None; keys added by the padding are always masked.
    """
    pad = padded_length(num_tokens, ratio) - num_tokens
    if keep is None and pad == 0:
        return None
    if keep is None:
        bias = torch.zeros(batch, num_tokens, dtype=dtype, device=device)
    else:
        bias = key_bias(keep, dtype)[:, 0, 0, :]
    if pad:
        bias = torch.cat([bias, bias.new_full((batch, pad), PADDED_BIAS)], dim=1)
    return skiparse(bias, ratio, group)[:, None, None, :]


def skiparse_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ratio: int, group: bool,
                       keep: Optional[torch.Tensor] = None, backend: Backend = sdpa_attention) -> torch.Tensor:
    """Skiparse self-attention.

    query, key, value: (B, N, heads, d), RoPE already applied; ``keep`` (B, N) optional key mask (True =
    attend). Returns (B, N, heads, d). With ratio 1 this is full attention (and no mask when nothing is masked).
    """
    b, n = query.shape[:2]
    bias = skiparse_key_bias(keep, b, n, ratio, group, query.dtype, query.device)
    out = backend(skiparse(query, ratio, group), skiparse(key, ratio, group), skiparse(value, ratio, group), bias)
    return unskiparse(out, ratio, group, n)


def skiparse_cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ratio: int, group: bool,
                             bias: Optional[torch.Tensor] = None, backend: Backend = sdpa_attention) -> torch.Tensor:
    """Cross-attention as the release computes it in Skiparse blocks (equal to ``backend(query, key, value, bias)``).

    query (B, N, heads, d) is grouped like the self-attention; the text key/value (B, L, heads, d) and their
    bias (B, 1, 1, L) are repeated once per group. Returns (B, N, heads, d).
    """
    n = query.shape[1]
    key = repeat(key, "b l ... -> (b r) l ...", r=ratio)
    value = repeat(value, "b l ... -> (b r) l ...", r=ratio)
    if bias is not None:
        bias = repeat(bias, "b ... -> (b r) ...", r=ratio)
    out = backend(skiparse(query, ratio, group), key, value, bias)
    return unskiparse(out, ratio, group, n)
