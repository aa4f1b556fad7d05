"""Two artefacts of the shipped text-to-video model, measured: ghost trails and latent-grid stripes.

* :func:`ghost_fraction`: the share of the object's pixels (saturated, of the object's hue) that are not the
  object itself: outside its largest connected blob, or in that blob further than 1.6 equivalent radii
  (``sqrt(area / pi)``) plus 2 pixels from the blob's centroid (a smear). A rendered shape scores 0; copies left
  behind at earlier positions (ghost trails) or a smeared tail score above 0.
* :func:`grid_excess`: how much sharper the background changes across the lines of the latent grid (every
  ``cell`` pixels: the VAE's 8 times the denoiser's patch 2 = 16) than between them: the mean absolute second
  difference of the luminance (0-255) along rows and columns on the lines minus off them. About 0 means no grid;
  stripes on the grid give more.

Run on generated samples and on VAE reconstructions of rendered clips (``tools/eval_prompts.py --artifacts``):
an artefact the reconstructions already show comes from the VAE, one only the samples show from the denoiser.
Videos are uint8 ``(T, H, W, 3)``.
"""
from __future__ import annotations

import numpy as np

from opensora.synthetic.shapes import _box3, object_mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean ``(H, W)`` mask (labels spread by repeated neighbour
    minimum until nothing changes)."""
    H, W = mask.shape
    big = H * W
    labels = np.where(mask, np.arange(big).reshape(H, W), big)
    while True:
        p = np.pad(labels, 1, constant_values=big)
        spread = np.minimum.reduce([labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        spread = np.where(mask, spread, big)
        if np.array_equal(spread, labels):
            break
        labels = spread
    values, counts = np.unique(labels[mask], return_counts=True)
    return labels == values[counts.argmax()]


def ghost_fraction(video: np.ndarray, min_saturation: float = 0.35, min_value: float = 0.25) -> float:
    """Mean over frames with an object of the share of object pixels far from the object (see the module)."""
    obj, colour, _ = object_mask(video, min_saturation, min_value)
    if colour == "none":
        return 0.0
    H, W = obj.shape[1:]
    yy, xx = np.mgrid[0:H, 0:W]
    shares = []
    for frame in obj:
        area = frame.sum()
        if area < 3:
            continue
        main = largest_component(frame)
        cy, cx = yy[main].mean(), xx[main].mean()
        radius = 1.6 * np.sqrt(main.sum() / np.pi) + 2
        near = main & (np.hypot(yy - cy, xx - cx) <= radius)
        shares.append(1.0 - near.sum() / area)
    return float(np.mean(shares)) if shares else 0.0


def grid_excess(video: np.ndarray, cell: int = 16) -> float:
    """Mean |second difference| of the background's luminance (0-255) across the ``cell``-pixel grid lines minus
    that between them; the object and 3 pixels around it are left out."""
    frames = np.asarray(video).astype(np.float32)
    y = frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)                    # (T, H, W)
    val = frames.max(-1)
    sat = (val - frames.min(-1)) / np.maximum(val, 1e-6)
    near = (sat > 0.25)[..., None].astype(np.float32)
    for _ in range(3):                                                                # dilate by 3 pixels
        near = _box3(near)
    background = near[..., 0] == 0
    on, off = [], []
    for axis in (1, 2):
        d2 = np.abs(np.diff(y, n=2, axis=axis))              # index i is centred on pixel i + 1
        ok = background
        for k in (1, 2):                                      # all three pixels of the difference are background
            ok = ok[:, :-1] & ok[:, 1:] if axis == 1 else ok[:, :, :-1] & ok[:, :, 1:]
        centre = np.arange(d2.shape[axis]) + 1
        line = (centre % cell == 0) | (centre % cell == cell - 1)   # either side of a line between k*cell-1, k*cell
        shape = [1, 1, 1]
        shape[axis] = -1
        line = line.reshape(shape)
        on.append(d2[ok & line])
        off.append(d2[ok & ~line])
    on, off = np.concatenate(on), np.concatenate(off)
    if not len(on) or not len(off):
        return 0.0
    return float(on.mean() - off.mean())
