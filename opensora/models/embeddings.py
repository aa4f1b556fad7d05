"""Input embeddings of the Open-Sora Plan v1.3 denoiser.

* :class:`PatchEmbed` - latent video (B, C, T, H, W) to tokens (B, N, D), N = T' * H' * W' in (t, h, w) order;
* :class:`AdaLNSingle` - timestep to the adaLN-single modulation (PixArt-alpha);
* :class:`CaptionProjection` - text-encoder features to the hidden size;
* :class:`RoPE3D` / :func:`apply_rope` - rotary position embedding over (t, h, w).

Parameter names follow the published checkpoints (which use the diffusers modules of the same role).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: (B, C, T, H, W) -> (B, T/pt * H/p * W/p, D).

    With ``patch_size_t == 1`` (the release) every frame is patched by the same ``Conv2d``, so a 1-frame latent
    (an image) goes through the same weights as a video. ``patch_size_t > 1`` uses a ``Conv3d`` instead (not in the
    release; its checkpoints always have ``patch_size_t == 1``).
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int = 2, patch_size_t: int = 1):
        super().__init__()
        self.patch_size_t = patch_size_t
        if patch_size_t == 1:
            self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        else:
            kernel = (patch_size_t, patch_size, patch_size)
            self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_size_t == 1:
            b = x.shape[0]
            x = self.proj(rearrange(x, "b c t h w -> (b t) c h w"))
            return rearrange(x, "(b t) d h w -> b (t h w) d", b=b)
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")


def timestep_features(timestep: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features (B,) -> (B, dim), laid out [cos | sin] (float32)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timestep.device)
    freqs = torch.exp(exponent / half)
    angles = timestep[:, None].float() * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TimestepEmbedding(nn.Module):
    """Timestep (B,) -> embedding (B, D): sinusoidal features then an MLP."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.timestep_embedder = MLPEmbedder(frequency_dim, hidden_size)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(timestep_features(timestep, self.frequency_dim).to(dtype))


class AdaLNSingle(nn.Module):
    """adaLN-single: one timestep embedding shared by all blocks.

    Returns the block modulation (B, 6 * D) (shift/scale/gate for attention and MLP, before each block adds its
    own ``scale_shift_table``) and the timestep embedding (B, D) used by the output layer.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.emb = TimestepEmbedding(hidden_size)
        self.silu = nn.SiLU()
        self.linear = nn.Linear(hidden_size, 6 * hidden_size)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype,
                extra: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """timestep (B,); extra (B, D) added to the timestep embedding (a pooled caption) or None."""
        embedded = self.emb(timestep, dtype)
        if extra is not None:
            embedded = embedded + extra
        return self.linear(self.silu(embedded)), embedded


class PooledCaptionEmbedding(nn.Module):
    """Masked mean of the caption features (B, L, C_text) -> Linear -> SiLU -> Linear -> (B, D).

    The last layer starts at zero, so adding this to a trained model leaves its outputs unchanged at first.
    """

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, caption: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """caption (B, L, C_text); keep (B, L) boolean, True = real token, or None (all real) -> (B, D)."""
        if keep is None:
            pooled = caption.mean(dim=1)
        else:
            weight = keep.to(caption.dtype)[..., None]                                      # (B, L, 1)
            pooled = (caption * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        return self.linear_2(self.act(self.linear_1(pooled)))


class CaptionProjection(nn.Module):
    """Text-encoder features (B, L, C_text) -> (B, L, D): Linear -> GELU(tanh) -> Linear."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(caption)))


class RoPE3D(nn.Module):
    """Rotary position embedding over (t, h, w).

    The head dimension d is split in three equal parts (t, then h, then w); each part of size d/3 is rotated by
    the token's position along that axis with the usual "rotate half" pairing (i, i + d/6). Positions are
    divided by the axis' interpolation scale. No parameters.
    """

    def __init__(self, head_dim: int, interpolation_scale_thw: Tuple[float, float, float] = (1.0, 1.0, 1.0),
                 base: float = 10000.0):
        super().__init__()
        if head_dim % 6:
            raise ValueError(f"RoPE3D needs a head dimension divisible by 6, got {head_dim}")
        self.axis_dim = head_dim // 3
        self.interpolation_scale_thw = tuple(float(s) for s in interpolation_scale_thw)
        self.base = base

    def _axis(self, length: int, scale: float, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        d = self.axis_dim
        inv_freq = 1.0 / (self.base ** (torch.arange(0, d, 2, device=device).float() / d))
        positions = torch.arange(length, device=device, dtype=torch.float32) / scale
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (length, d)
        return angles.cos(), angles.sin()

    def forward(self, grid: Tuple[int, int, int], device: torch.device,
                dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """``grid`` = (T', H', W') token grid -> (cos, sin), each (N, head_dim) for tokens in (t, h, w) order."""
        t, h, w = grid
        parts_cos, parts_sin = [], []
        for axis, (length, scale) in enumerate(zip(grid, self.interpolation_scale_thw)):
            cos, sin = self._axis(length, scale, device)
            shape = [1, 1, 1, self.axis_dim]
            shape[axis] = length
            parts_cos.append(cos.view(shape).expand(t, h, w, -1))
            parts_sin.append(sin.view(shape).expand(t, h, w, -1))
        cos = torch.cat(parts_cos, dim=-1).reshape(t * h * w, -1)
        sin = torch.cat(parts_sin, dim=-1).reshape(t * h * w, -1)
        return cos.to(dtype), sin.to(dtype)


def _rotate_half_per_axis(x: torch.Tensor) -> torch.Tensor:
    """(..., 3 * 2 * n): within each third, (x1, x2) -> (-x2, x1). Reference form of the rotation."""
    x = rearrange(x, "... (a two n) -> ... a two n", a=3, two=2)
    x1, x2 = x.unbind(dim=-2)
    return rearrange(torch.stack([-x2, x1], dim=-2), "... a two n -> ... (a two n)")


def _swap_halves_per_axis(x: torch.Tensor) -> torch.Tensor:
    """(..., 3 * 2 * n): within each third, (x1, x2) -> (x2, x1) (one copy, no negation)."""
    return x.unflatten(-1, (3, 2, -1)).flip(-2).flatten(-3)


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) (N, d) from :class:`RoPE3D` -> (cos, signed sin), each (1, N, 1, d), for :func:`rotate`.

    The sign of the rotation is moved into the small sine table (``-x2 * sin == x2 * (-sin)`` exactly), so the
    full-size work of :func:`rotate` is one swap copy, one product and one in-place multiply-add.
    """
    s = sin.unflatten(-1, (3, 2, -1))
    signed = torch.cat([-s[..., :1, :], s[..., 1:, :]], dim=-2).flatten(-3)
    return cos[None, :, None, :], signed[None, :, None, :]


def rotate(x: torch.Tensor, tables: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RoPE of x (B, N, heads, d) with tables from :func:`rope_tables` -> (B, N, heads, d)."""
    cos, signed_sin = tables
    return (x * cos).addcmul_(_swap_halves_per_axis(x), signed_sin)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, N, heads, d) with ``cos``/``sin`` (N, d) from :class:`RoPE3D`.

    Equal to ``x * cos + _rotate_half_per_axis(x) * sin`` (see :func:`rope_tables`).
    """
    return rotate(x, rope_tables(cos, sin))
