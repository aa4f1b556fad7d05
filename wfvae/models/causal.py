"""Causal-in-time building blocks and the explicit stream cache that makes block-wise inference exact.

A video is processed either whole (``cache=None``) or as a stream of consecutive temporal chunks. In stream
mode every stateful module keeps what it needs from earlier chunks in a :class:`StreamCache` that the caller
creates, passes through each call and throws away; nothing is stored on the modules, and nothing depends on
the video length, so the same weights serve any length and any chunking.

Each stateful module follows one rule: given all frames seen so far, emit every output frame that is already
fully determined, and keep the rest of its input for later. Whole-video mode is the special case "one chunk
that is both the first and the last", so both modes run the same code.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


class StreamCache:
    """State carried between the temporal chunks of one encode or decode.

    ``last`` is set by the caller on the final chunk so that modules with look-ahead (trilinear temporal
    upsampling) flush what they held back. Entries are keyed by module object.
    """

    def __init__(self) -> None:
        self.store: dict = {}
        self.last: bool = False

    def get(self, module: nn.Module):
        return self.store.get(module)

    def set(self, module: nn.Module, value) -> None:
        self.store[module] = value

    def pop(self, module: nn.Module):
        return self.store.pop(module, None)

    def nbytes(self) -> int:
        """Bytes held by cached tensors (for memory accounting)."""
        total = 0
        for value in self.store.values():
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


_OUT_VARIANTS = {F.silu: torch.ops.aten.silu.out}
"""Elementwise activations that :func:`causal_frames` can write straight into its frame buffer."""


def causal_frames(x: torch.Tensor, kernel_t: int, stride_t: int, cache: Optional[StreamCache], owner: nn.Module,
                  pad_hw: int = 0, act: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
    """Frames on which a valid temporal convolution ``(kernel_t, stride_t)`` gives exactly the causal outputs
    that are determined so far.

    The sequence is left-padded with ``kernel_t - 1`` copies of its first frame (the published causal padding).
    In stream mode the frames a later window still needs are kept in ``cache`` under ``owner``; nothing is kept
    on the last chunk (``cache.last``), since no later window exists.

    ``pad_hw`` > 0 also zero-pads the right and bottom of every frame by that many pixels, in the same buffer
    (one allocation and one copy of ``x`` instead of ``F.pad`` followed by the temporal concatenation).

    ``act`` (elementwise, e.g. ``F.silu``) is applied to ``x`` first. Without autograd, an activation with an
    ``out=`` variant (``_OUT_VARIANTS``) writes its result straight into the frame buffer after the head frames,
    so the temporal concatenation costs no extra pass over the frames. Under ``torch.compile`` the plain form is
    traced instead (an ``out=`` slice would break the graph, and the compiler fuses activation and copy anyway).

    Args:
        x: (B, C, T, H, W) new frames.
    Returns:
        (B, C, T', H + pad_hw, W + pad_hw) frames to convolve, or ``None`` when no output window is complete yet.
    """
    pad = kernel_t - 1
    prev = None if cache is None else cache.get(owner)
    n_head = pad if prev is None else prev.shape[2]
    direct = (act in _OUT_VARIANTS and not pad_hw and n_head > 0 and not torch.compiler.is_compiling()
              and not (torch.is_grad_enabled() and x.requires_grad))
    if act is not None and not direct:
        x = act(x)
    if direct:
        seq = _activated_sequence(x, n_head, prev, _OUT_VARIANTS[act])
    elif pad_hw:
        seq = _padded_sequence(x, pad, prev, pad_hw)
    elif prev is None:
        seq = torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2) if pad > 0 else x
    else:
        seq = torch.cat([prev, x], dim=2)
    length = seq.shape[2]
    n_out = (length - kernel_t) // stride_t + 1 if length >= kernel_t else 0
    if cache is not None and not cache.last:
        cache.set(owner, seq[:, :, n_out * stride_t:].clone())
    if n_out == 0:
        return None
    return seq[:, :, : (n_out - 1) * stride_t + kernel_t]


def _activated_sequence(x: torch.Tensor, n: int, prev: Optional[torch.Tensor], act_out) -> torch.Tensor:
    """``cat([head, act(x)], dim=2)`` with ``act`` written into the buffer by its out-variant ``act_out``; ``head``
    is ``prev`` or ``n`` copies of the first activated frame. (B, C, T, H, W) -> (B, C, n + T, H, W)."""
    b, c, t, h, w = x.shape
    seq = x.new_empty(b, c, n + t, h, w)
    act_out(x, out=seq[:, :, n:])
    seq[:, :, :n] = seq[:, :, n:n + 1] if prev is None else prev
    return seq


def _padded_sequence(x: torch.Tensor, pad: int, prev: Optional[torch.Tensor], pad_hw: int) -> torch.Tensor:
    """``cat([head, F.pad(x, (0, pad_hw, 0, pad_hw))], dim=2)`` in one buffer, where ``head`` is ``prev`` (already
    padded) or ``pad`` copies of the first frame of ``x`` (zero-padded). (B, C, T, H, W) -> (B, C, n + T, H', W')."""
    b, c, t, h, w = x.shape
    n = pad if prev is None else prev.shape[2]
    seq = x.new_empty(b, c, n + t, h + pad_hw, w + pad_hw)
    seq[:, :, n:, :h, :w] = x
    if prev is None:
        seq[:, :, :n, :h, :w] = x[:, :, :1]
    else:
        seq[:, :, :n] = prev  # already carries its zero border
    start = 0 if prev is None else n
    seq[:, :, start:, h:].zero_()
    seq[:, :, start:, :h, w:].zero_()
    return seq


def _triple(v: Union[int, Sequence[int]]) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class CausalConv3d(nn.Module):
    """3D convolution that is causal in time: output frame ``i`` sees input frames ``<= i*stride``.

    Keys match the published checkpoints (``<name>.conv.weight``). Spatial padding is symmetric zero
    padding; temporal padding replicates the first frame.

    Shapes: (B, C_in, T, H, W) -> (B, C_out, T_out, H_out, W_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, bias: bool = True):
        super().__init__()
        kernel_size, stride, padding = _triple(kernel_size), _triple(stride), _triple(padding)
        self.kernel_t, self.stride_t = kernel_size[0], stride[0]
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(0, padding[1], padding[2]), bias=bias)

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None, pad_hw: int = 0,
                act: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Convolve ``act(x)`` (``act`` elementwise, default identity) after zero-padding the right and bottom of
        every frame by ``pad_hw``; see :func:`causal_frames` for how both are fused with the causal padding."""
        if self.kernel_t == 1 and self.stride_t == 1:
            x = x if act is None else act(x)
            return self.conv(F.pad(x, (0, pad_hw, 0, pad_hw)) if pad_hw else x)
        frames = causal_frames(x, self.kernel_t, self.stride_t, cache, self, pad_hw, act)
        if frames is None:
            raise ValueError("chunk too short for a causal convolution window; use aligned chunks (see WFVAE.encode)")
        return self.conv(frames)


class Conv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a video (B, C, T, H, W), or to images (B, C, H, W)."""

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        return per_frame(super().forward, x)


def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply an image function (N, C, H, W) -> (N, C', H', W') to each frame of (B, C, T, H, W)."""
    if x.dim() == 4:
        return fn(x)
    b, _, t = x.shape[:3]
    y = fn(x.transpose(1, 2).reshape(b * t, *x.shape[1:2], *x.shape[3:]))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class AlignedAdd(nn.Module):
    """Adds stream ``b`` to the first channels of stream ``a`` frame by frame.

    Two branches of the decoder may emit their frames at different chunk boundaries (one of them waits for a
    look-ahead frame); in stream mode the surplus of whichever branch is ahead is kept until the other
    catches up. Whole-video inputs must have equal lengths.

    Shapes: a (B, Ca, T, H, W), b (B, Cb, T', H, W) with Cb <= Ca -> (B, Ca, n, H, W).
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor, cache: Optional[StreamCache] = None) -> torch.Tensor:
        if cache is not None:
            held = cache.pop(self)
            if held is not None:
                a = torch.cat([held[0], a], dim=2)
                b = torch.cat([held[1], b], dim=2)
            n = min(a.shape[2], b.shape[2])
            if a.shape[2] > n or b.shape[2] > n:
                cache.set(self, (a[:, :, n:].clone(), b[:, :, n:].clone()))
            a, b = a[:, :, :n], b[:, :, :n]
        elif a.shape[2] != b.shape[2]:
            raise ValueError(f"branches disagree in length: {a.shape[2]} vs {b.shape[2]} frames")
        cb = b.shape[1]
        return torch.cat([a[:, :cb] + b, a[:, cb:]], dim=1)


def temporal_upsample(x: torch.Tensor, mode: str, cache: Optional[StreamCache], owner: nn.Module) -> torch.Tensor:
    """Causal x2 temporal upsampling of the published ``Spatial2xTime2x3DUpsample``.

    The first frame passes through once; frames ``1..`` are upsampled x2 in time with ``mode`` ``"nearest"``
    or ``"trilinear"`` (linear, ``align_corners=False``, clamped at both ends of frames ``1..``). Linear
    interpolation needs the next frame, so in stream mode the last frame is held back until the next chunk
    (or until ``cache.last``).

    Shapes: (B, C, T, H, W) -> (B, C, T_out, H, W); whole video: T_out = 2T - 1.
    """
    state = None if cache is None else cache.get(owner)
    out = []
    if state is None:  # first chunk: the first frame is the causal "image" frame
        out.append(x[:, :, :1])
        x = x[:, :, 1:]
        prev = None
    else:
        prev = state
    if mode == "nearest":
        if x.shape[2] > 0:
            out.append(x.repeat_interleave(2, dim=2))
        if cache is not None:
            cache.set(owner, x[:, :, :0])  # only marks that the first frame has been seen
        return torch.cat(out, dim=2)
    if mode not in ("trilinear", "linear"):
        raise ValueError(f"t_interpolation must be 'nearest' or 'trilinear', got {mode!r}")
    if prev is None or prev.shape[2] == 0:
        if x.shape[2] > 0:
            out.append(x[:, :, :1])  # clamped left edge: exactly the first frame
        seq = x
    else:
        seq = torch.cat([prev, x], dim=2)
    if seq.shape[2] >= 2:
        a, b = seq[:, :, :-1], seq[:, :, 1:]
        pairs = torch.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], dim=3)
        out.append(pairs.flatten(2, 3))
    final = cache is None or cache.last
    if final and seq.shape[2] >= 1:
        out.append(seq[:, :, -1:])  # clamped right edge
    if cache is not None and not final:
        cache.set(owner, seq[:, :, -1:].clone() if seq.shape[2] else seq)
    return torch.cat(out, dim=2)


def spatial_upsample(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 spatial upsampling of every frame (the published ``scale_factor=(1, 2, 2)`` trilinear)."""
    if x.shape[2] == 0:
        return x.new_empty(*x.shape[:3], x.shape[3] * 2, x.shape[4] * 2)
    return F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear")
