"""Frame masks for the image condition controller (i2v, transition, continuation, ...).

Semantics follow the Open-Sora Plan v1.3 release: a pixel mask (T, 1, H, W) holds **1 where frames are
generated and 0 where they are kept** from the condition video; generated frames of the masked video are black
(the release masks uint8 pixels, ``video * (mask < 0.5)``, before normalising to [-1, 1]). The mask is
compressed to the latent grid with the 4 video frames behind each latent frame as 4 channels
(:func:`compress_mask`).
"""
from __future__ import annotations

import enum
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange


class MaskType(str, enum.Enum):
    t2iv = "t2iv"  # generate everything (text to image/video)
    i2v = "i2v"  # keep the first frame
    transition = "transition"  # keep the first and the last frame
    continuation = "continuation"  # keep the first k frames (k drawn from the clear-ratio range)
    clear = "clear"  # keep everything
    random_temporal = "random_temporal"  # keep a random subset of frames


RELEASE_VIDEO_MIX = {"t2iv": 1, "i2v": 8, "transition": 8, "continuation": 2, "clear": 0, "random_temporal": 1}
"""Training mix of the released v1.3 I2V model for videos (``mask_config.yaml``)."""
RELEASE_IMAGE_MIX = {"t2iv": 0, "clear": 0}
"""For images; all-zero weights mean "uniform", as in the release."""


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def frame_mask(mask_type: MaskType, num_frames: int, keep: Optional[Sequence[int]] = None,
               min_clear_ratio: float = 0.0, max_clear_ratio: float = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-frame mask (T,) with 1 = generate, 0 = keep.

    ``keep`` (frame indices) overrides the random choices of ``continuation`` (first ``len(keep)`` frames are
    expected) and ``random_temporal``; negative indices count from the end.
    """
    mask_type = MaskType(mask_type)
    if not 0 <= min_clear_ratio <= max_clear_ratio <= 1:
        raise ValueError(f"need 0 <= min_clear_ratio <= max_clear_ratio <= 1, got {min_clear_ratio}, {max_clear_ratio}")
    m = torch.ones(num_frames)
    if keep is not None:
        idx = [i + num_frames if i < 0 else i for i in keep]
        bad = [i for i, j in zip(keep, idx) if not 0 <= j < num_frames]
        if bad:
            raise ValueError(f"frame indices {bad} are outside a {num_frames}-frame video")
        m[idx] = 0
        return m
    if mask_type is MaskType.i2v:
        m[0] = 0
    elif mask_type is MaskType.transition:
        m[0] = 0
        m[-1] = 0
    elif mask_type is MaskType.continuation:
        m[: _randint(math.floor(num_frames * min_clear_ratio), math.ceil(num_frames * max_clear_ratio), generator)] = 0
    elif mask_type is MaskType.clear:
        m.zero_()
    elif mask_type is MaskType.random_temporal:
        n = _randint(math.floor(num_frames * min_clear_ratio), math.ceil(num_frames * max_clear_ratio), generator)
        m[torch.randperm(num_frames, generator=generator)[:n]] = 0
    return m


def pixel_mask(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Broadcast a per-frame mask (T,) to the pixel mask (1, T, H, W) (channel first, like a video)."""
    return frames.view(1, -1, 1, 1).expand(1, frames.numel(), height, width).clone()


def sample_mask_type(mix: Dict[str, float], generator: Optional[torch.Generator] = None) -> MaskType:
    """Draw a mask type with probabilities proportional to ``mix`` (all zeros: uniform, as the release does)."""
    names = list(mix)
    weights = torch.tensor([float(mix[n]) for n in names])
    if (weights < 0).any():
        raise ValueError(f"mask mix weights must be >= 0: {mix}")
    if weights.sum() == 0:
        weights = torch.ones(len(names))
    return MaskType(names[int(torch.multinomial(weights, 1, generator=generator))])


def compress_mask(mask: torch.Tensor, stride_t: int = 4, stride_hw: int = 8) -> torch.Tensor:
    """Pixel mask (B, 1, T, H, W) -> latent-grid mask (B, stride_t, T', H/stride, W/stride).

    Each spatial cell is the bilinear downsample of its frame; channel ``c`` of latent frame ``j`` is video frame
    ``stride_t*(j-1) + 1 + c`` (latent frame 0 holds the first frame repeated ``stride_t`` times), T odd.
    """
    b, _, t, h, w = mask.shape
    small = F.interpolate(rearrange(mask, "b c t h w -> (b c t) 1 h w"), size=(h // stride_hw, w // stride_hw),
                          mode="bilinear")
    small = rearrange(small, "(b t) 1 h w -> b t h w", b=b, t=t)
    if t % 2 == 1:
        small = torch.cat([small[:, :1].expand(-1, stride_t, -1, -1), small[:, 1:]], dim=1)
    return rearrange(small, "b (n s) h w -> b s n h w", s=stride_t)


def condition_noise(video: torch.Tensor, mask: torch.Tensor, generator: Optional[torch.Generator] = None,
                    log_sigma_mean: float = -3.0, log_sigma_std: float = 0.5, skip_prob: float = 0.05,
                    strength: Optional[float] = None) -> torch.Tensor:
    """Add Gaussian noise to the kept (mask 0) frames of a condition video (B, C, T, H, W).

    Training (``strength=None``): per sample, sigma = exp(N(log_sigma_mean, log_sigma_std)), skipped with
    probability ``skip_prob`` (the paper's recipe). Inference: a fixed ``strength`` (0 = none).
    ``mask`` is (B, 1, T, H, W) or broadcastable; generated frames stay untouched (they are zero anyway).
    """
    b = video.shape[0]
    if strength is None:
        sigma = torch.exp(log_sigma_mean + log_sigma_std * torch.randn(b, generator=generator))
        sigma = sigma * (torch.rand(b, generator=generator) >= skip_prob)
    else:
        sigma = torch.full((b,), float(strength))
    sigma = sigma.to(video).view(b, 1, 1, 1, 1)
    noise = torch.randn(video.shape, generator=generator, dtype=video.dtype, device="cpu").to(video.device)
    return video + sigma * noise * (mask < 0.5)
