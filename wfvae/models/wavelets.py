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

from wfvae.models.causal import StreamCache, causal_frames

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


def per_channel(filters: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """Dense convolution weight (K*C, C, *kernel) that applies ``filters`` (K, 1, *kernel) to each of C channels
    and writes subband ``k`` of channel ``c`` to output channel ``k*C + c`` (the subband-major packing).

    The same tensor is the weight of the inverse ``conv_transpose`` (input ``k*C + c`` -> output ``c``). Using it
    instead of a per-channel convolution on a (B*C, 1, ...) view avoids rearranging (copying) the coefficients
    into and out of that view; the extra taps are exact zeros.
    """
    k = filters.shape[0]
    eye = torch.eye(channels, dtype=filters.dtype, device=filters.device)
    weight = filters.view(k, 1, 1, *filters.shape[2:]) * eye.view(1, channels, channels, *(1,) * (filters.dim() - 2))
    return weight.reshape(k * channels, channels, *filters.shape[2:]).to(dtype)


def haar2d(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Per-frame 2D Haar analysis. (B, C, [T,] H, W) -> (B, 4C, [T,] H/2, W/2)."""
    weight = per_channel(filters, x.shape[1], x.dtype)
    if x.dim() == 5:
        return F.conv3d(x, weight.unsqueeze(2), stride=(1, 2, 2))
    return F.conv2d(x, weight, stride=2)


def inverse_haar2d(coeffs: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Per-frame 2D Haar synthesis. (B, 4C, [T,] H, W) -> (B, C, [T,] 2H, 2W)."""
    weight = per_channel(filters, coeffs.shape[1] // 4, coeffs.dtype)
    if coeffs.dim() == 5:
        return F.conv_transpose3d(coeffs, weight.unsqueeze(2), stride=(1, 2, 2))
    return F.conv_transpose2d(coeffs, weight, stride=2)


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

    One strided convolution over all channels at once (dense :func:`per_channel` weight, no rearranging);
    the first frame is paired with itself.
    """

    def __init__(self, scale: float = HAAR3D_SCALE):
        super().__init__()
        self.register_buffer("filters", haar3d_filters(scale), persistent=False)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        frames = causal_frames(x, 2, 2, cache, self)
        if frames is None:
            raise ValueError("chunk too short for the causal Haar transform; use aligned chunks")
        return F.conv3d(frames, per_channel(self.filters, x.shape[1], x.dtype), stride=2)


class InverseHaarWavelet3D(nn.Module):
    """Causal 3D Haar synthesis, (B, 8C, T, H, W) -> (B, C, 2T - 1, 2H, 2W) for a whole video.

    In stream mode every chunk after the first yields 2T frames (only the very first frame is a duplicate).
    """

    def __init__(self, scale: float = HAAR3D_SCALE):
        super().__init__()
        self.register_buffer("filters", haar3d_filters(scale), persistent=False)

    def forward(self, coeffs: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        y = F.conv_transpose3d(coeffs, per_channel(self.filters, coeffs.shape[1] // 8, coeffs.dtype), stride=2)
        first = cache is None or cache.get(self) is None
        if cache is not None:
            cache.set(self, True)
        return y[:, :, 1:] if first else y
