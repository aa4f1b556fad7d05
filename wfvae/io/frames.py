"""Frames as tensors: uint8 arrays <-> float tensors in [-1, 1], and the one resize of the project."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(t, H, W, 3)`` array -> float32 ``(3, t, H, W)`` tensor in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()
    return x.float().mul_(1 / 127.5).sub_(1.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Float ``(3, t, H, W)`` tensor in ``[-1, 1]`` (any float dtype/device) -> uint8 ``(t, H, W, 3)`` array."""
    if frames.dim() != 4 or frames.shape[0] != 3:
        raise ValueError(f"expected frames of shape (3, t, H, W), got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"expected float frames in [-1, 1], got dtype {frames.dtype}")
    x = frames.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()


RESIZE_MODES = ("crop", "resize", "cover")


def resize_frames(x: torch.Tensor, size: Optional[Tuple[int, int]], mode: str = "crop") -> torch.Tensor:
    """Resize frames ``(t, C, h, w)`` (uint8 or float) to ``size`` ``(H, W)`` with antialiased bilinear
    interpolation; the one resize of the project (reader, VAE dataset, denoiser dataset).

    ``mode``: ``"crop"`` scales so the frame covers ``(H, W)`` (aspect kept) and centre-crops to exactly ``(H, W)``;
    ``"cover"`` scales the same way without cropping (e.g. ``size=(s, s)``: short side ``s``); ``"resize"`` stretches
    to ``(H, W)``. Frames already of the target size come back unchanged; the dtype is kept. uint8 frames are
    resized channels-last (~10x faster than float on CPU).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    H, W = size
    h, w = x.shape[-2:]
    if mode == "resize":
        rh, rw = H, W
    else:
        s = max(H / h, W / w)
        rh, rw = max(H, round(h * s)), max(W, round(w * s))
    if (rh, rw) != (h, w):
        if x.dtype == torch.uint8:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    if mode == "cover":
        return x
    top, left = (rh - H) // 2, (rw - W) // 2
    return x[..., top:top + H, left:left + W]
