"""Reconstruction metrics of videos (B, 3, T, H, W) with values in [-1, 1].

Protocol: both videos are clamped to [-1, 1], mapped to [0, 1] and (by default) rounded to 8 bits, i.e. compared
as the frames a viewer would see; PSNR and SSIM are computed per frame and averaged over the frames of a video
(the published WF-VAE evaluation averages per-frame PSNR the same way).

* PSNR of a frame: ``10 * log10(1 / MSE)`` over its 3*H*W values in [0, 1] (MSE floored at 1e-10, i.e. 100 dB).
* SSIM of a frame: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1, population statistics,
  mean over the valid region and the three channels: the same numbers as
  ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (the map is torchmetrics', see :func:`frame_ssim`).
"""
from __future__ import annotations

import torch
from einops import rearrange
from torchmetrics.functional.image import structural_similarity_index_measure

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
SSIM_FRAMES = 4  # frames per torchmetrics call


def to_unit(video: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float32 (clamped; rounded to multiples of 1/255 when ``quantize``)."""
    x = (video.detach().float().clamp(-1, 1) + 1) / 2
    return (x * 255).round() / 255 if quantize else x


def frame_psnr(target: torch.Tensor, pred: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """PSNR in dB of every frame: (B, 3, T, H, W) pair -> (B, T)."""
    t, p = to_unit(target, quantize), to_unit(pred, quantize)
    mse = (t - p).pow(2).mean(dim=(1, 3, 4))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def frame_ssim(target: torch.Tensor, pred: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """SSIM of every frame (see the module docstring): (B, 3, T, H, W) pair -> (B, T).

    torchmetrics computes the SSIM map (Gaussian window, reflect-padded so the map has the frame's size); the mean
    is taken over the valid region only (the map minus a window radius on each side), as scikit-image does. The maps
    are computed in float32 (within 2e-6 of scikit-image's float64; float64 convolutions take a slow path with
    window-sized buffers), :data:`SSIM_FRAMES` frames at a time to bound memory.
    """
    b = target.shape[0]
    t = rearrange(to_unit(target, quantize), "b c t h w -> (b t) c h w")
    p = rearrange(to_unit(pred, quantize), "b c t h w -> (b t) c h w")
    if min(t.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(t.shape[-2:])}")
    r = SSIM_WINDOW // 2
    values = []
    for i in range(0, t.shape[0], SSIM_FRAMES):
        _, ssim_map = structural_similarity_index_measure(
            p[i:i + SSIM_FRAMES], t[i:i + SSIM_FRAMES], gaussian_kernel=True, sigma=SSIM_SIGMA,
            kernel_size=SSIM_WINDOW, data_range=1.0, k1=SSIM_K1, k2=SSIM_K2, reduction="none",
            return_full_image=True)
        values.append(ssim_map[..., r:-r, r:-r].mean(dim=(1, 2, 3)))
    return rearrange(torch.cat(values), "(b t) -> b t", b=b)


def video_psnr(target: torch.Tensor, pred: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Mean per-frame PSNR of each video: (B,)."""
    return frame_psnr(target, pred, quantize).mean(dim=1)


def video_ssim(target: torch.Tensor, pred: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Mean per-frame SSIM of each video: (B,)."""
    return frame_ssim(target, pred, quantize).mean(dim=1)
