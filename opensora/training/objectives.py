"""The v-prediction training objective, shared by the denoiser trainer
(:mod:`opensora.training.denoiser`) and the structure
controller trainer (:mod:`opensora.training.controller`).

For clean latents ``x0``, noise ``eps`` and ``a = alphas_cumprod[t]`` of the training schedule::

    x_t = sqrt(a) x0 + sqrt(1 - a) eps          (diffusers' ``DDPMScheduler.add_noise``)
    v   = sqrt(a) eps - sqrt(1 - a) x0          (diffusers' ``DDPMScheduler.get_velocity``)
"""
from __future__ import annotations

from typing import Tuple

import torch


def v_prediction(alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                 steps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy input and v target for integer timesteps ``steps`` (B,).

    ``alphas_cumprod`` (num_train_timesteps,) is taken on the latents' device and dtype, as diffusers does.
    Returns ``(x_t, v, a)``: x_t and v shaped like ``latents`` (B, ...), and ``a`` (B,) (e.g. for SNR weights,
    ``snr = a / (1 - a)``).
    """
    acp = alphas_cumprod.to(latents.device, latents.dtype)[steps]
    a = acp.view(-1, *([1] * (latents.dim() - 1)))
    sqrt_a, sqrt_1ma = a.sqrt(), (1 - a).sqrt()
    return sqrt_a * latents + sqrt_1ma * noise, sqrt_a * noise - sqrt_1ma * latents, acp
