"""WF-VAE training losses, each reduced to a per-element MEAN.

Generator objective (see :class:`wfvae.training.module.WFVAETraining`)::

    loss = rec + perceptual_weight * perceptual + kl_weight * kl + wavelet_weight * wavelet + d_weight * gan

* ``rec``: mean |x - x_hat| (or squared error) over all B*3*T*H*W elements;
* ``perceptual``: mean over frames of a per-frame distance (LPIPS, 1 - MS-SSIM, or nothing), see
:func:`build_perceptual`;
* ``kl``: mean over all latent elements of the posterior's KL to N(0, I);
* ``wavelet``: mean |enc_l1 - dec_l1| + mean |enc_l2 - dec_l2| (energy-flow coefficients of the encoder and the
  decoder, the WF-VAE "wavelet loss");
* ``gan``: hinge generator loss -mean D(x_hat), weighted by the adaptive weight :func:`adaptive_gan_weight`.

Scaling relative to the published code. The published losses are SUMS over all elements divided by the batch
size (their issue #19). A published weight ``w_sum`` of a term with ``N_term`` elements per sample corresponds here
to ``w_mean = w_sum * N_term / N_video`` with ``N_video = 3*T*H*W`` (the reconstruction term's count). The
published perceptual term is a per-image value broadcast over every pixel before the sum, so its weight is the same
in both conventions; the adaptive GAN weight is a ratio of gradient norms and is also unchanged. Only the KL and
wavelet weights change meaning: with a 4x8x8 model with C latent channels, the published ``kl_weight`` equals ours
times ``48 / C``; the defaults here keep the published numbers (1e-6, 0.1), which makes both terms relatively
stronger than in the published runs (KL stays negligible either way).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from wfvae.models.encoder_decoder import DiagonalGaussian

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``"l1"``) or squared (``"l2"``) error over all elements of (B, C, T, H, W) tensors."""
    if kind == "l1":
        return (x - x_hat).abs().mean()
    if kind == "l2":
        return (x - x_hat).pow(2).mean()
    raise ValueError(f"rec_loss must be 'l1' or 'l2', got {kind!r}")


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """Mean over all (B, C, t, h, w) latent elements of KL(q(z|x) || N(0, I))."""
    return posterior.kl().mean()


def wavelet_loss(enc_l1: torch.Tensor, dec_l1: torch.Tensor, enc_l2: torch.Tensor, dec_l2: torch.Tensor) -> torch.Tensor:
    """Energy-flow loss: mean |enc - dec| of the level-1 plus that of the level-2 Haar coefficients.

    The decoder predicts the coefficients of the encoder's wavelet pyramid: level 1 (B, 12, T', H/4, W/4) and
    level 2 (B, 24, t', H/8, W/8) for the default 2D/3D levels; shapes of each pair match.
    """
    return (enc_l1 - dec_l1).abs().mean() + (enc_l2 - dec_l2).abs().mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss -mean D(x_hat)."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        disc_weight: float = 0.5, eps: float = 1e-6, max_weight: float = 1e6) -> torch.Tensor:
    """||d rec / d W|| / (||d gan / d W|| + eps), clamped to [0, max_weight], times ``disc_weight`` (detached).

    ``W`` is the decoder's last layer (``vae.decoder.conv_out.weight``); eps and the clamp are the published
    values. ``rec_loss`` should include the perceptual term, as published.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach() * disc_weight


# ------------------------------------------------------------------------------------------------ MS-SSIM
def ms_ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 7, sigma: float = 1.5,
            weights: Sequence[float] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003, torchmetrics) of (N, C, H, W) images in [0, 1]; returns (N,).

    Uses as many of the 5 standard scales as the image size allows (torchmetrics needs the smaller side to exceed
    ``(window_size - 1) * 2 ** (scales - 1)``; the weights of the scales used are renormalised), so that small
    training crops (64 px) work. torchmetrics' Gaussian window spans 3.5 sigma on each side (11 taps at sigma 1.5);
    ``window_size`` enters its size rule. Contrast terms are clamped at 0 before the power (``normalize="relu"``), a
    common guard against NaN gradients.
    """
    side = min(x.shape[-2:])
    levels = max((n for n in range(1, len(weights) + 1) if side > (window_size - 1) * 2 ** (n - 1)), default=0)
    if levels == 0:
        raise ValueError(f"MS-SSIM needs images larger than {window_size - 1} pixels, got {tuple(x.shape[-2:])}")
    betas = tuple(float(w) / sum(weights[:levels]) for w in weights[:levels])
    return multiscale_structural_similarity_index_measure(
        x.float(), y.float(), gaussian_kernel=True, sigma=sigma, kernel_size=window_size, data_range=1.0,
        betas=betas, normalize="relu", reduction="none")


class MSSSIMLoss(nn.Module):
    """Weight-free perceptual substitute: 1 - MS-SSIM per frame, averaged. Inputs (N, 3, H, W) in [-1, 1]."""

    name = "msssim"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (1.0 - ms_ssim((x.float() + 1) / 2, (y.float() + 1) / 2)).mean()


class NoPerceptual(nn.Module):
    """``perceptual: none``: always 0."""

    name = "none"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


def build_perceptual(kind: str, lpips_weights: Optional[str] = None, lpips_backbone: Optional[str] = None,
                     pretrained: bool = True) -> nn.Module:
    """The perceptual distance selected by ``perceptual: lpips|msssim|none``; modules map a pair of frame batches
    (N, 3, H, W) in [-1, 1] to a scalar (mean over frames). LPIPS needs its weight files
    (see :mod:`wfvae.training.lpips`)."""
    if kind == "lpips":
        from wfvae.training.lpips import LPIPS

        return LPIPS(pretrained=pretrained, heads_path=lpips_weights, backbone_path=lpips_backbone)
    if kind == "msssim":
        return MSSSIMLoss()
    if kind == "none":
        return NoPerceptual()
    raise ValueError(f"perceptual must be 'lpips', 'msssim' or 'none', got {kind!r}")


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), the per-frame view the perceptual distances take."""
    return rearrange(video, "b c t h w -> (b t) c h w")
