"""Choosing temporal chunk and tile sizes that fit a memory budget (``wfvae ... --max-memory GB``).

Two estimates of the peak activation memory of a streamed encode or decode (plus the weights):

* :func:`simulated_peak_bytes` (used when the model config is known, as in the ``wfvae`` command): the peak of
  live tensors (:mod:`wfvae.inference.memory_probe`) of the same encode/decode run on a weightless copy of the
  model on the ``meta`` device, which computes shapes only (about a second per case, no memory). It counts the
  tensors the CPU run holds exactly; on CUDA the allocator adds kernel workspaces and rounding on top.
* :func:`estimate_bytes`, a linear rule of thumb (bytes per pixel per frame in flight times the model width) for
  when no config is at hand. Its factors were read off the live-tensor peaks of WF-VAE-L/S whole clips (within
  3-8 %, see ``benchmarks/NOTES.md``); it underestimates chunked runs (0.4-0.6x: caches and the chunk layout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from wfvae.inference.tiling import tile_starts

import torch

ENCODE_FACTOR = 1.7 / 4  # per latent frame in flight: 1.7 bytes-per-element x base_channels per pixel
DECODE_FACTOR = 4.6 / 4
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


def simulated_peak_bytes(config, mode: str, height: int, width: int, dtype: torch.dtype, latent_chunk: int,
                         num_latent_frames: Optional[int] = None, tile: Optional[int] = None,
                         tile_overlap: Optional[int] = None) -> int:
    """Peak bytes of live tensors of a streamed ``mode`` ("encode"/"decode") of ``height x width`` frames with
    ``latent_chunk`` latent frames per chunk, run on a weightless copy of the WF-VAE ``config`` on the meta device.

    Three chunks are simulated (the first, which has no cache, and two steady ones), or the whole clip when
    ``num_latent_frames`` is smaller: the peak of a streamed run does not grow with the video length."""
    from wfvae.inference.memory_probe import LiveTensorPeak

    vae = _meta_model(config, dtype)
    n = 3 * latent_chunk if num_latent_frames is None else min(num_latent_frames, 3 * latent_chunk)
    f = vae.temporal_compression
    with torch.inference_mode(), LiveTensorPeak() as probe:
        if mode == "encode":
            video = torch.empty(1, 3, 1 + f * (n - 1), height, width, device="meta", dtype=dtype)
            bounds = vae.video_chunk_bounds(video.shape[2], latent_chunk)
            for _ in vae.encode_stream((video[:, :, a:b] for a, b in bounds), tile, tile_overlap):
                pass
        else:
            z = torch.empty(1, vae.config.latent_dim, n, height // 8, width // 8, device="meta", dtype=dtype)
            for _ in vae.decode_stream((z[:, :, i:i + latent_chunk] for i in range(0, n, latent_chunk)), tile,
                                       tile_overlap):
                pass
    return probe.peak_bytes


def tiled_peak_bytes(config, mode: str, height: int, width: int, dtype: torch.dtype, latent_chunk: int,
                     num_latent_frames: Optional[int], tile: int, tile_overlap: int) -> float:
    """:func:`simulated_peak_bytes` of a run tiled with ``tile``/``tile_overlap`` pixels, in seconds for any frame
    size: frames of at most 3x3 tiles are simulated whole; a larger frame is simulated on crops of 2x2 and 3x3 tiles
    and its peak extrapolated linearly in the frame area (what grows with the frame is area-proportional: the chunk's
    input and output and one stream cache per tile; one tile's activations do not grow). A whole 270x480 frame of
    64-pixel tiles takes minutes to simulate; tests compare the two."""
    def span(length: int, tiles: int) -> int:
        return min(length, tile + (tiles - 1) * (tile - tile_overlap))

    def peak(h: int, w: int) -> int:
        return simulated_peak_bytes(config, mode, h, w, dtype, latent_chunk, num_latent_frames, tile, tile_overlap)

    def tiles(h: int, w: int) -> int:
        return len(tile_starts(h, tile, tile_overlap)) * len(tile_starts(w, tile, tile_overlap))

    (h2, w2), (h3, w3) = (span(height, 2), span(width, 2)), (span(height, 3), span(width, 3))
    if (h3, w3) == (height, width):
        return float(peak(height, width))
    p2, p3 = peak(h2, w2), peak(h3, w3)
    slope = (p3 - p2) / (tiles(h3, w3) - tiles(h2, w2))
    return p3 + slope * (tiles(height, width) - tiles(h3, w3))


_META_MODELS: dict = {}


def _meta_model(config, dtype):
    """A weightless WF-VAE of ``config`` (a dict or ``vae.config``) on the meta device, cached per config."""
    from wfvae import WFVAE
    from wfvae.models.checkpoint import parameters_on_meta

    values = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    key = (repr(sorted(values.items())), dtype)
    if key not in _META_MODELS:
        with parameters_on_meta():
            vae = WFVAE(**values).eval()
        _META_MODELS[key] = torch.nn.Module.to(vae, device="meta", dtype=dtype)
    return _META_MODELS[key]


def plan(base_channels: int, temporal: int, height: int, width: int, dtype: torch.dtype, budget_gb: float,
         weights_bytes: int = 0, mode: str = "decode", num_latent_frames: Optional[int] = None,
         config=None) -> Plan:
    """Largest latent chunk (then largest tile, overlap 1/4 of it) whose estimated peak fits ``budget_gb``.

    With ``config`` (the model's config) the peak is :func:`simulated_peak_bytes`, else :func:`estimate_bytes`;
    the largest chunk is tried first (for a short clip the whole clip, which keeps no cache copies and can need less
    than chunk 1), then the largest fitting chunk is found by bisection (the peak grows with the chunk), then tiles.
    Raises ValueError when even the smallest tiles do not fit.
    """
    budget = budget_gb * 1024 ** 3
    cap = CHUNK_CAP if num_latent_frames is None else max(1, min(CHUNK_CAP, num_latent_frames))

    def cost(k, h, w, tile=None, overlap=None):
        if config is None:
            return estimate_bytes(base_channels, temporal * k, h, w, dtype, mode, weights_bytes)
        return simulated_peak_bytes(config, mode, h, w, dtype, k, num_latent_frames, tile, overlap) + weights_bytes

    if cost(cap, height, width) <= budget:  # the largest chunk fits (for a short clip the whole clip, which has no
        return Plan(cap, None, None, cost(cap, height, width) / 1024 ** 3)  # cache copies: it can beat chunk 1)
    if cost(1, height, width) <= budget:
        low, high = 1, cap - 1  # cost(low) fits; find the largest k that fits
        while low < high:
            mid = (low + high + 1) // 2
            if cost(mid, height, width) <= budget:
                low = mid
            else:
                high = mid - 1
        return Plan(low, None, None, cost(low, height, width) / 1024 ** 3)
    floor = cost(1, min(64, height), min(64, width))  # one smallest tile alone: no tiled run needs less
    if floor > budget:  # refuse at once (simulating a whole frame of 64x64 tiles takes minutes at 270x480)
        raise ValueError(f"{budget_gb} GB is too little memory for this model (one 64x64 tile needs "
                         f"{floor / 1024 ** 3:.2f} GB)")
    sizes, tile = [], (max(height, width) // 8) * 8  # candidate tiles, largest first
    while tile >= 64:
        sizes.append(tile)
        tile -= 8 if tile <= 256 else 64

    def tiled(tile):
        overlap = max(8, (tile // 4) // 8 * 8)
        if config is None:
            return overlap, cost(1, min(tile, height), min(tile, width))
        return overlap, tiled_peak_bytes(config, mode, height, width, dtype, 1, num_latent_frames, tile,
                                          overlap) + weights_bytes  # the whole frame, its tiles one after the other

    smallest = tiled(sizes[-1])[1] if sizes else floor
    if smallest <= budget:  # the smallest fits: bisect for the largest that does
        low, high = len(sizes) - 1, 0
        while low > high:
            mid = (low + high) // 2
            if tiled(sizes[mid])[1] <= budget:
                low = mid
            else:
                high = mid + 1
        overlap, c = tiled(sizes[low])
        return Plan(1, sizes[low], overlap, c / 1024 ** 3)
    raise ValueError(f"{budget_gb} GB is too little memory for this model (the smallest tiles, 64x64, need "
                     f"{smallest / 1024 ** 3:.2f} GB for {height}x{width} frames)")
