"""Haar wavelet transforms of videos, causal in time, with subband-major channel packing.

Packing: a (B, C, ...) input becomes (B, K*C, ...) with channel ``k*C + c`` holding subband ``k`` of input
channel ``c`` (so ``coeffs[:, :C]`` is the low-pass band of every channel, as the published model expects).

Subband order and signs follow the published checkpoints:

* 3D, K = 8: ``k = 4*t + 2*h + w`` where each bit selects the high-pass filter along that axis; the filter
  tap at offset ``(dt, dh, dw)`` is ``scale * (-1)**(t*dt + h*dh + w*dw)``. The published constant is
  ``scale = 0.3536`` (not exactly ``1/(2*sqrt(2))``); it is what the released weights were trained with.
* 2D, K = 4: ``k = h + 2*w`` (the published ``aa, ad, da, dd``), scale ``0.5``.

Time is causal: the first frame is paired with a copy of itself, so T = 1 + 2n frames give 1 + n
coefficient frames, and the inverse drops the duplicated first frame again.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .causal import StreamCache, causal_frames

HAAR3D_SCALE = 0.3536
"""The 3D Haar constant carried by the published WF-VAE checkpoints."""
HAAR3D_EXACT = 1.0 / (2.0 * math.sqrt(2.0))
HAAR2D_SCALE = 0.5


def haar3d_filters(scale: float = HAAR3D_SCALE) -> torch.Tensor:
    """The 8 analysis filters, float64 (8, 1, 2, 2, 2) indexed ``[k, 0, dt, dh, dw]``.

    Modules keep them in float64 (not in the state dict) and cast to the input's dtype when applied.
    """
    w = torch.empty(8, 1, 2, 2, 2, dtype=torch.float64)
    for t, h, x in itertools.product((0, 1), repeat=3):
        for dt, dh, dw in itertools.product((0, 1), repeat=3):
            w[4 * t + 2 * h + x, 0, dt, dh, dw] = (-1) ** (t * dt + h * dh + x * dw)
    return w * scale


def haar2d_filters(scale: float = HAAR2D_SCALE) -> torch.Tensor:
    """The 4 analysis filters, float64 (4, 1, 2, 2) indexed ``[k, 0, dh, dw]``."""
    w = torch.empty(4, 1, 2, 2, dtype=torch.float64)
    for h, x in itertools.product((0, 1), repeat=2):
        for dh, dw in itertools.product((0, 1), repeat=2):
            w[h + 2 * x, 0, dh, dw] = (-1) ** (h * dh + x * dw)
    return w * scale


def haar2d(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Per-frame 2D Haar analysis. (B, C, [T,] H, W) -> (B, 4C, [T,] H/2, W/2)."""
    if x.dim() == 5:
        b, c, t = x.shape[:3]
        y = F.conv2d(rearrange(x, "b c t h w -> (b c t) 1 h w"), filters.to(x.dtype), stride=2)
        return rearrange(y, "(b c t) k h w -> b (k c) t h w", b=b, c=c, t=t)
    b, c = x.shape[:2]
    y = F.conv2d(rearrange(x, "b c h w -> (b c) 1 h w"), filters.to(x.dtype), stride=2)
    return rearrange(y, "(b c) k h w -> b (k c) h w", b=b, c=c)


def inverse_haar2d(coeffs: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Per-frame 2D Haar synthesis. (B, 4C, [T,] H, W) -> (B, C, [T,] 2H, 2W)."""
    if coeffs.dim() == 5:
        b, t = coeffs.shape[0], coeffs.shape[2]
        y = F.conv_transpose2d(rearrange(coeffs, "b (k c) t h w -> (b c t) k h w", k=4), filters.to(coeffs.dtype),
                               stride=2)
        return rearrange(y, "(b c t) 1 h w -> b c t h w", b=b, t=t)
    b = coeffs.shape[0]
    y = F.conv_transpose2d(rearrange(coeffs, "b (k c) h w -> (b c) k h w", k=4), filters.to(coeffs.dtype), stride=2)
    return rearrange(y, "(b c) 1 h w -> b c h w", b=b)


class HaarWavelet2D(nn.Module):
    """Per-frame 2D Haar analysis, (B, C, T, H, W) -> (B, 4C, T, H/2, W/2). Fixed filters, not in the state dict."""

    def __init__(self, scale: float = HAAR2D_SCALE):
        super().__init__()
        self.register_buffer("filters", haar2d_filters(scale), persistent=False)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return haar2d(x, self.filters)


class InverseHaarWavelet2D(HaarWavelet2D):
    """Per-frame 2D Haar synthesis, (B, 4C, T, H, W) -> (B, C, T, 2H, 2W)."""

    def forward(self, coeffs: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return inverse_haar2d(coeffs, self.filters)


class HaarWavelet3D(nn.Module):
    """Causal 3D Haar analysis, (B, C, T, H, W) -> (B, 8C, T', H/2, W/2); whole video T' = (T + 1) // 2.

    One strided convolution over all channels at once; the first frame is paired with itself.
    """

    def __init__(self, scale: float = HAAR3D_SCALE):
        super().__init__()
        self.register_buffer("filters", haar3d_filters(scale), persistent=False)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        frames = causal_frames(x, 2, 2, cache, self)
        if frames is None:
            raise ValueError("chunk too short for the causal Haar transform; use aligned chunks")
        b, c = x.shape[:2]
        y = F.conv3d(rearrange(frames, "b c t h w -> (b c) 1 t h w"), self.filters.to(x.dtype), stride=2)
        return rearrange(y, "(b c) k t h w -> b (k c) t h w", b=b, c=c)


class InverseHaarWavelet3D(nn.Module):
    """Causal 3D Haar synthesis, (B, 8C, T, H, W) -> (B, C, 2T - 1, 2H, 2W) for a whole video.

    In stream mode every chunk after the first yields 2T frames (only the very first frame is a duplicate).
    """

    def __init__(self, scale: float = HAAR3D_SCALE):
        super().__init__()
        self.register_buffer("filters", haar3d_filters(scale), persistent=False)

    def forward(self, coeffs: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        b = coeffs.shape[0]
        y = F.conv_transpose3d(rearrange(coeffs, "b (k c) t h w -> (b c) k t h w", k=8),
                               self.filters.to(coeffs.dtype), stride=2)
        y = rearrange(y, "(b c) 1 t h w -> b c t h w", b=b)
        first = cache is None or cache.get(self) is None
        if cache is not None:
            cache.set(self, True)
        return y[:, :, 1:] if first else y
