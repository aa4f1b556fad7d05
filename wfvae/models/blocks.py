"""WF-VAE building blocks: channel norms, residual blocks, per-frame attention, down- and upsampling.

Every block takes ``(x, cache=None)`` with x of shape (B, C, T, H, W) so that the encoder and decoder can
thread one :class:`~wfvae.models.causal.StreamCache` through all of them. Parameter names match the published
checkpoints.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from wfvae.models.causal import CausalConv3d, StreamCache, per_frame, spatial_upsample, temporal_upsample


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, ...) tensors (published ``LayerNorm``, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channels_last(x).movedim(-1, 1)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> normalised (B, ..., C), contiguous (the layout LayerNorm computes in)."""
        return self.norm(x.movedim(1, -1))


def make_norm(channels: int, norm_type: str) -> nn.Module:
    """``"layernorm"`` (per position, over channels: causal, chunkable) or ``"groupnorm"`` (32 groups, eps 1e-6).

    GroupNorm statistics of a 5D tensor span all frames, so a GroupNorm model is not exactly chunkable.
    """
    if norm_type == "layernorm":
        return ChannelLayerNorm(channels)
    if norm_type == "groupnorm":
        return nn.GroupNorm(32, channels, eps=1e-6, affine=True)
    raise ValueError(f"norm_type must be 'layernorm' or 'groupnorm', got {norm_type!r}")


class Sequence(nn.ModuleList):
    """``nn.Sequential`` that passes the stream cache along (same state-dict keys as ``nn.Sequential``)."""

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        for module in self:
            x = module(x, cache)
        return x


class ResnetBlock2D(nn.Module):
    """Per-frame residual block: norm, SiLU, conv3x3, norm, SiLU, dropout, conv3x3, (1x1 shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, dropout: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_type)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(out_channels, norm_type)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W). Intermediates die as soon as the next exists; without autograd the
        activations and the residual sum are computed in place (at most input, one activation, one output)."""
        inplace = not torch.is_grad_enabled()
        h = self.norm2(self.conv1(F.silu(self.norm1(x), inplace=inplace)))
        h = self.conv2(self.dropout(F.silu(h, inplace=inplace)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return h.add_(shortcut) if inplace else shortcut + h

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return per_frame(self._forward, x)


class ResnetBlock3D(nn.Module):
    """Causal 3D residual block with the same layout as :class:`ResnetBlock2D` (3x3x3 causal convolutions)."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, dropout: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(in_channels, norm_type)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(out_channels, norm_type)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T', H, W); the SiLUs are fused into the causal padding of the convs.

        Each intermediate is dropped as soon as the next one exists (conv1's output dies inside ``norm2``): at
        most the input, one normalised tensor, one padded frame buffer and one convolution output are alive."""
        h = self.norm2(self.conv1(self.norm1(x), cache, act=F.silu))
        if self.training and self.dropout.p > 0:
            h = self.conv2(self.dropout(F.silu(h)), cache)
        else:
            h = self.conv2(h, cache, act=F.silu)
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h if torch.is_grad_enabled() else h.add_(shortcut)


class FrameAttention(nn.Module):
    """Single-head self-attention among the H*W positions of each frame (published ``AttnBlock3DFix``).

    The 1x1x1 projections (``q``, ``k``, ``v``, ``proj_out``; published names and shapes) are applied as linear
    maps to the channels-last (B, T, H, W, C) output of the norm, so that the (B*T, H*W, C) attention layout is a
    view: no rearranging copies in or out of the attention.
    """

    def __init__(self, channels: int, norm_type: str):
        super().__init__()
        self.norm = make_norm(channels, norm_type)
        self.q = CausalConv3d(channels, channels, 1)
        self.k = CausalConv3d(channels, channels, 1)
        self.v = CausalConv3d(channels, channels, 1)
        self.proj_out = CausalConv3d(channels, channels, 1)

    @staticmethod
    def _linear(x: torch.Tensor, proj: CausalConv3d) -> torch.Tensor:
        """A 1x1x1 convolution applied to channels-last x (..., C)."""
        return F.linear(x, proj.conv.weight.flatten(1), proj.conv.bias)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        b, c, t, hh, ww = x.shape
        if isinstance(self.norm, ChannelLayerNorm):
            h = self.norm.channels_last(x)
        else:
            h = self.norm(x).movedim(1, -1)
        h = h.reshape(b * t, hh * ww, c)
        out = F.scaled_dot_product_attention(self._linear(h, self.q), self._linear(h, self.k), self._linear(h, self.v))
        out = self._linear(out, self.proj_out).view(b, t, hh, ww, c).movedim(-1, 1)
        return x + out if torch.is_grad_enabled() else out.add_(x)  # in place: no third full-size tensor


class Downsample2D(nn.Module):
    """Per-frame x2 spatial downsampling: zero pad right/bottom by 1, conv3x3 stride 2 (published ``Downsample``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return per_frame(lambda f: self.conv(F.pad(f, (0, 1, 0, 1))), x)


class Upsample2D(nn.Module):
    """Per-frame x2 nearest upsampling then conv3x3 (published ``Upsample``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return per_frame(lambda f: self.conv(F.interpolate(f, scale_factor=2.0, mode="nearest")), x)


class Downsample3D(nn.Module):
    """x2 space and time: zero pad right/bottom by 1, causal conv3x3x3 stride 2 (``Spatial2xTime2x3DDownsample``).

    (B, C, T, H, W) -> (B, C', (T + 1) // 2, H/2, W/2) for a whole video.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return self.conv(x, cache, pad_hw=1)


class Upsample3D(nn.Module):
    """x2 space and time (``Spatial2xTime2x3DUpsample``): causal temporal x2 (first frame kept once),
    bilinear x2 in space, then a causal conv3x3x3. (B, C, T, H, W) -> (B, C', 2T - 1, 2H, 2W) whole video.
    """

    def __init__(self, in_channels: int, out_channels: int, t_interpolation: str = "trilinear"):
        super().__init__()
        self.t_interpolation = t_interpolation
        self.conv = CausalConv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        x = temporal_upsample(x, self.t_interpolation, cache, self)
        return self.conv(spatial_upsample(x), cache)
