"""Spatial tiling with linear blending of overlaps.

Tiles are laid out on the latent grid (1 latent pixel = 8 video pixels) so that encoder and decoder tiles line
up. Each tile's output is weighted by a separable window that ramps linearly across the actual overlap with its
neighbours (and is flat at the frame border); the weighted sum is normalised by the summed weights, so the
blend is a partition of unity and there is no hard seam.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` overlapping by at least ``overlap`` covering ``[0, length)``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, left: int, right: int, device, dtype) -> torch.Tensor:
    w = torch.ones(size, device=device, dtype=dtype)
    if left > 0:
        w[:left] = torch.arange(1, left + 1, device=device, dtype=dtype) / (left + 1)
    if right > 0:
        w[size - right:] = torch.minimum(w[size - right:],
                                         torch.arange(right, 0, -1, device=device, dtype=dtype) / (right + 1))
    return w


class TileGrid:
    """Tile layout of one frame size. ``boxes`` hold (y0, y1, x0, x1) in latent units."""

    def __init__(self, latent_hw: Sequence[int], tile: Optional[int], overlap: int, in_unit: int):
        self.in_unit = in_unit  # input pixels per latent pixel (8 for the encoder, 1 for the decoder)
        h, w = latent_hw
        if tile is None:
            self.ys, self.xs = [(0, h)], [(0, w)]
        else:
            self.ys = [(s, min(s + tile, h)) for s in tile_starts(h, tile, overlap)]
            self.xs = [(s, min(s + tile, w)) for s in tile_starts(w, tile, overlap)]

    @classmethod
    def _latent_params(cls, tile, tile_overlap, s):
        if tile is None:
            return None, 0
        for name, value in (("tile", tile), ("tile_overlap", tile_overlap)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer number of pixels, got {value!r}")
        if tile_overlap is None:
            tile_overlap = max(s, (tile // 4) // s * s)
        if tile % s or tile < 2 * s or tile_overlap % s or not 0 <= tile_overlap < tile:
            raise ValueError(f"tile ({tile}) and tile_overlap ({tile_overlap}) must be multiples of {s} pixels with "
                             f"0 <= overlap < tile and tile >= {2 * s}")
        return tile // s, tile_overlap // s

    @classmethod
    def for_pixels(cls, hw, tile, tile_overlap, s: int) -> "TileGrid":
        """Grid for encoder inputs of size ``hw`` pixels."""
        t, o = cls._latent_params(tile, tile_overlap, s)
        return cls((hw[0] // s, hw[1] // s), t, o, in_unit=s)

    @classmethod
    def for_latents(cls, hw, tile, tile_overlap, s: int) -> "TileGrid":
        """Grid for decoder inputs of size ``hw`` latent pixels."""
        t, o = cls._latent_params(tile, tile_overlap, s)
        return cls(hw, t, o, in_unit=1)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @staticmethod
    def _overlaps(spans: List[Tuple[int, int]], i: int) -> Tuple[int, int]:
        left = spans[i - 1][1] - spans[i][0] if i > 0 else 0
        right = spans[i][1] - spans[i + 1][0] if i + 1 < len(spans) else 0
        return max(left, 0), max(right, 0)

    def run(self, x: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor], out_scale: float) -> torch.Tensor:
        """Apply ``fn(tile, tile_index)`` to every tile of x (B, C, T, H, W) and blend the outputs.

        ``out_scale`` is output pixels per input pixel (8 when decoding, 1/8 when encoding).
        """
        if len(self) == 1:
            return fn(x, 0)
        u = self.in_unit
        o = round(u * out_scale)  # output pixels per latent pixel
        out = weight = None
        j = 0
        for iy, (y0, y1) in enumerate(self.ys):
            for ix, (x0, x1) in enumerate(self.xs):
                y = fn(x[..., y0 * u:y1 * u, x0 * u:x1 * u], j)
                j += 1
                if out is None:
                    shape = (*y.shape[:3], self.ys[-1][1] * o, self.xs[-1][1] * o)
                    out = torch.zeros(shape, device=y.device, dtype=torch.float32)
                    weight = torch.zeros(shape[-2:], device=y.device, dtype=torch.float32)
                ly, ry = self._overlaps(self.ys, iy)
                lx, rx = self._overlaps(self.xs, ix)
                wy = _ramp((y1 - y0) * o, ly * o, ry * o, y.device, torch.float32)
                wx = _ramp((x1 - x0) * o, lx * o, rx * o, y.device, torch.float32)
                win = wy[:, None] * wx[None, :]
                out[..., y0 * o:y1 * o, x0 * o:x1 * o] += y.float() * win
                weight[y0 * o:y1 * o, x0 * o:x1 * o] += win
        return (out / weight).to(y.dtype)
