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

    Returns the padded video and the original (T, H, W) for :func:`crop_video`.
    """
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
    t, h, w = size
    return video[:, :, :t, :h, :w]
