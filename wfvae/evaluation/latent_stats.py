"""Per-channel latent statistics of a WF-VAE, for the diffusion-space ``scale`` / ``shift`` of its ``config.json``.

A diffusion model works on ``(z - shift) * scale`` (:meth:`wfvae.WFVAE.scale_latents`); with ``shift`` the mean and
``scale`` one over the standard deviation of the posterior means over the training videos, that space has zero mean
and unit variance per channel, which the noise schedule assumes (the published WF-VAE configs carry such lists).

    mean, std = latent_statistics(vae, clips)           # clips: iterable of (3, T, H, W) in [-1, 1]
    write_latent_stats("assets/models/my-vae", mean, std)
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Tuple

import torch

from wfvae.models.checkpoint import write_json_atomic


@torch.no_grad()
def latent_statistics(vae, clips: Iterable[torch.Tensor], latent_chunk=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(C,) mean and std over every position of the posterior means of ``clips`` (each (3, T, H, W)), float64
    accumulation; the VAE's current scale/shift play no part."""
    total = sq = None
    count = 0
    for clip in clips:
        z = vae.encode(clip[None].to(vae.device, vae.dtype), latent_chunk=latent_chunk).latent_dist.mean.double()
        z = z.transpose(0, 1).flatten(1)  # (C, N)
        total = z.sum(1) if total is None else total + z.sum(1)
        sq = z.square().sum(1) if sq is None else sq + z.square().sum(1)
        count += z.shape[1]
    if not count:
        raise ValueError("no clips to measure")
    mean = total / count
    std = (sq / count - mean.square()).clamp(min=0).sqrt()
    return mean.float(), std.float()


def write_latent_stats(folder: str, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """Set ``shift = mean`` and ``scale = 1 / std`` (per channel) in ``folder/config.json`` (atomic rewrite)."""
    path = os.path.join(folder, "config.json")
    with open(path) as fh:
        config = json.load(fh)
    if len(mean) != config.get("latent_dim", len(mean)):
        raise ValueError(f"{len(mean)} channel statistics for a VAE with latent_dim {config['latent_dim']}")
    config["shift"] = [round(float(v), 6) for v in mean]
    config["scale"] = [round(1.0 / max(float(v), 1e-6), 6) for v in std]
    write_json_atomic(config, path)
    return config
