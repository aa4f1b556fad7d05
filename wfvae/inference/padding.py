"""Padding any video to the shapes WF-VAE accepts, and trimming back."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def padded_shape(t: int, h: int, w: int, temporal: int = 4, spatial: int = 8) -> Tuple[int, int, int]:
    """The smallest (1 + temporal*n, multiple of spatial, multiple of spatial) shape holding (t, h, w)."""
    return 1 + -(-(t - 1) // temporal) * temporal, -(-h // spatial) * spatial, -(-w // spatial) * spatial


def pad_video(video: torch.Tensor, temporal: int = 4, spatial: int = 8) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Pad (B, C, T, H, W) by repeating the last frame and replicating the bottom/right edge.

    Returns the padded video and the original (T, H, W) for :func:`crop_video`. ValueError for anything but a
    5-D tensor with at least one frame and one pixel, or non-positive ``temporal``/``spatial``.
    """
    _check_5d(video, "video")
    for name, value in (("temporal", temporal), ("spatial", spatial)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if 0 in video.shape:
        raise ValueError(f"video (B, C, T, H, W) has an empty dimension: shape {tuple(video.shape)}")
    t, h, w = video.shape[2:]
    tp, hp, wp = padded_shape(t, h, w, temporal, spatial)
    if (hp, wp) != (h, w):
        b, c = video.shape[:2]
        flat = video.reshape(b, c * t, h, w)
        video = F.pad(flat, (0, wp - w, 0, hp - h), mode="replicate").reshape(b, c, t, hp, wp)
    if tp != t:
        video = torch.cat([video, video[:, :, -1:].expand(-1, -1, tp - t, -1, -1)], dim=2)
    return video, (t, h, w)


def crop_video(video: torch.Tensor, size: Tuple[int, int, int]) -> torch.Tensor:
    """Trim (B, C, T', H', W') back to the (T, H, W) returned by :func:`pad_video`."""
    _check_5d(video, "video")
    if (not isinstance(size, (tuple, list)) or len(size) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size)):
        raise ValueError(f"size must be the (T, H, W) returned by pad_video, got {size!r}")
    if any(n > m for n, m in zip(size, video.shape[2:])):
        raise ValueError(f"cannot crop video of shape {tuple(video.shape)} to (T, H, W) = {tuple(size)}: it is "
                         f"smaller")
    t, h, w = size
    return video[:, :, :t, :h, :w]


def _check_5d(video, what: str) -> None:
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (B, C, T, H, W), got {type(video).__name__}")
    if video.dim() != 5:
        raise ValueError(f"{what} must be (B, C, T, H, W), got shape {tuple(video.shape)}")
