"""Choosing temporal chunk and tile sizes that fit a memory budget (``wfvae ... --max-memory GB``).

The estimate is a linear model of peak activation memory: bytes per video pixel per frame in flight, times
the model width, plus the weights. The per-pixel factors were read off the published WF-VAE-L peaks
(bf16, 33x512x512: encode 2.2 GiB, decode 5.7 GiB, i.e. about 0.7 and 1.8 x base_channels bytes-per-element
per pixel) and rounded up; ``benchmarks/vae.py`` prints the measured peaks next to the estimate on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

ENCODE_FACTOR = 1.0
DECODE_FACTOR = 2.5
CHUNK_CAP = 64  # latent frames per chunk beyond which nothing is gained


@dataclass
class Plan:
    latent_chunk: int
    tile: Optional[int]
    tile_overlap: Optional[int]
    estimate_gb: float

    def describe(self) -> str:
        tile = "no tiling" if self.tile is None else f"tile {self.tile}px overlap {self.tile_overlap}px"
        return f"latent chunk {self.latent_chunk}, {tile}, estimated peak {self.estimate_gb:.2f} GB"


def estimate_bytes(base_channels: int, frames: int, height: int, width: int, dtype: torch.dtype, mode: str,
                   weights_bytes: int = 0) -> float:
    """Estimated peak bytes to encode or decode ``frames`` video frames of ``height x width`` at once."""
    factor = DECODE_FACTOR if mode == "decode" else ENCODE_FACTOR
    elt = torch.finfo(dtype).bits // 8
    return factor * base_channels * frames * height * width * elt + weights_bytes


def plan(base_channels: int, temporal: int, height: int, width: int, dtype: torch.dtype, budget_gb: float,
         weights_bytes: int = 0, mode: str = "decode", num_latent_frames: Optional[int] = None) -> Plan:
    """Largest latent chunk (then largest tile, overlap 1/4 of it) whose estimated peak fits ``budget_gb``.

    Raises ValueError when even one latent frame of a 64x64 tile does not fit.
    """
    budget = budget_gb * 1024 ** 3
    cap = CHUNK_CAP if num_latent_frames is None else max(1, min(CHUNK_CAP, num_latent_frames))

    def cost(k, h, w):
        return estimate_bytes(base_channels, temporal * k, h, w, dtype, mode, weights_bytes)

    for k in range(cap, 0, -1):
        if cost(k, height, width) <= budget:
            return Plan(k, None, None, cost(k, height, width) / 1024 ** 3)
    tile = (max(height, width) // 8) * 8
    while tile >= 64:
        overlap = max(8, (tile // 4) // 8 * 8)
        if cost(1, min(tile, height), min(tile, width)) <= budget:
            return Plan(1, tile, overlap, cost(1, min(tile, height), min(tile, width)) / 1024 ** 3)
        tile -= 8 if tile <= 256 else 64
    raise ValueError(f"{budget_gb} GB is too little memory for this model (one 64x64 tile needs "
                     f"{cost(1, 64, 64) / 1024 ** 3:.2f} GB)")
