"""Checks of a chained long video of one synthetic object: per window, and across the window boundaries.

A long video made by :class:`opensora.pipelines.long_video.ContinuationChain` is window 0 (``W`` frames) followed by
the new frames of each later window (``4 (w - k)`` frames for ``w`` latent frames per window and overlap ``k``).
:func:`analyse_long` reads, for every window, the object's colour and motion (:func:`opensora.synthetic.shapes.
analyse_clip` on that window's frames, with the smaller travel of slow clips accepted), and compares the frame to
frame change *across* each boundary (the last frame of a window to the first new frame of the next) with the
changes *inside* the windows: the object's centroid step (in frame widths) and its hue step (degrees). A seamless
chain has boundary steps like the in-window ones.

Arrays: ``video`` is uint8 ``(T, H, W, 3)``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from opensora.synthetic.shapes import _box3, analyse_clip, rgb_to_hsv

SLOW_MIN_SCORE = 0.08
"""Least motion read as moving in one window of a long video (slow clips travel about 0.2 of a typical clip)."""


def window_starts(num_frames: int, window_frames: int, overlap: int, temporal_compression: int = 4) -> List[int]:
    """First output frame of every window: 0, W, W + 4 (w - k), ... (below ``num_frames``)."""
    step = temporal_compression * ((window_frames - 1) // temporal_compression + 1 - overlap)
    return list(range(0, 1)) + list(range(window_frames, num_frames, step))


def object_track(video: np.ndarray, min_saturation: float = 0.35, min_value: float = 0.25) -> Dict[str, np.ndarray]:
    """Per frame: centroid ``x``, ``y`` (frame fractions, NaN without the object), ``area`` (pixels) and ``hue``
    (circular mean of the object's pixels, degrees; NaN without the object). The object is every saturated pixel
    (backgrounds have saturation <= 0.2), after a 3x3 mean as in :func:`analyse_clip`."""
    x = _box3(np.asarray(video).astype(np.float32) / 255)
    val = x.max(-1)
    sat = (val - x.min(-1)) / np.maximum(val, 1e-12)
    mask = (sat > min_saturation) & (val > min_value)                     # (T, H, W)
    T, H, W = mask.shape
    area = mask.sum((1, 2)).astype(np.float64)
    ys, xs = (np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask.sum(1) * xs).sum(1) / area
        cy = (mask.sum(2) * ys).sum(1) / area
    hue = np.full(T, np.nan)
    for t in range(T):
        if area[t] >= 3:
            h = np.deg2rad(rgb_to_hsv(x[t][mask[t]])[0])
            hue[t] = np.rad2deg(np.arctan2(np.sin(h).mean(), np.cos(h).mean())) % 360
    small = area < 3
    cx[small], cy[small] = np.nan, np.nan
    return {"x": cx, "y": cy, "area": area, "hue": hue}


def _hue_step(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % 360
    return np.minimum(d, 360 - d)


def analyse_long(video: np.ndarray, window_frames: int, overlap: int, colour: str, motion: str,
                 temporal_compression: int = 4) -> Dict[str, Any]:
    """Per-window colour and motion, and boundary against in-window steps, of a chained video.

    Returns ``windows`` (rows: ``start``, ``frames``, ``colour``, ``motion``, ``ok``), ``boundary_steps`` and
    ``inside_steps`` (centroid steps, frame widths), ``boundary_hue_steps`` / ``inside_hue_steps`` (degrees), and the
    summary: ``windows_ok`` (fraction of windows with the prompt's colour and motion), ``max_boundary_step``,
    ``max_inside_step``, ``mean_boundary_step``, ``mean_inside_step``, ``seamless`` (every boundary step <= the
    largest in-window step, and every boundary hue step <= the largest in-window hue step), and ``ok``
    (``seamless`` and every window right).
    """
    video = np.asarray(video)
    T = video.shape[0]
    starts = window_starts(T, window_frames, overlap, temporal_compression)
    ends = starts[1:] + [T]
    rows = []
    for s, e in zip(starts, ends):
        got = analyse_clip(video[s:e], min_score=SLOW_MIN_SCORE)
        rows.append({"start": s, "frames": e - s, "colour": got["colour"], "motion": got["motion"],
                     "ok": got["colour"] == colour and got["motion"] == motion})
    track = object_track(video)
    step = np.hypot(np.diff(track["x"]), np.diff(track["y"]))              # (T - 1,): frame t -> t + 1
    hue_step = _hue_step(track["hue"][1:], track["hue"][:-1])
    boundary = np.zeros(T - 1, dtype=bool)
    boundary[[s - 1 for s in starts[1:] if s >= 1]] = True

    def finite(a):
        return a[np.isfinite(a)]

    b, i = finite(step[boundary]), finite(step[~boundary])
    bh, ih = finite(hue_step[boundary]), finite(hue_step[~boundary])
    missing = int(np.isnan(step[boundary]).sum())
    seamless = (missing == 0 and len(i) > 0 and (len(b) == 0 or b.max() <= i.max())
                and (len(bh) == 0 or len(ih) > 0 and bh.max() <= ih.max()))
    out = {"windows": rows, "boundary_steps": b.tolist(), "inside_steps_count": int(len(i)),
           "boundary_hue_steps": bh.tolist(),
           "windows_ok": sum(r["ok"] for r in rows) / len(rows),
           "max_boundary_step": float(b.max()) if len(b) else 0.0,
           "mean_boundary_step": float(b.mean()) if len(b) else 0.0,
           "max_inside_step": float(i.max()) if len(i) else float("nan"),
           "mean_inside_step": float(i.mean()) if len(i) else float("nan"),
           "max_boundary_hue_step": float(bh.max()) if len(bh) else 0.0,
           "max_inside_hue_step": float(ih.max()) if len(ih) else float("nan"),
           "boundaries_without_object": missing, "seamless": bool(seamless)}
    out["ok"] = bool(seamless and all(r["ok"] for r in rows))
    return out


def summarise(reports: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Over several videos: the fraction of windows right, of seamless videos and of videos right throughout, and
    the mean boundary and in-window centroid steps."""
    n = max(len(reports), 1)
    windows = [w for r in reports for w in r["windows"]]
    return {"videos": len(reports), "windows": len(windows),
            "windows_ok": sum(w["ok"] for w in windows) / max(len(windows), 1),
            "seamless": sum(r["seamless"] for r in reports) / n,
            "videos_ok": sum(r["ok"] for r in reports) / n,
            "mean_boundary_step": float(np.mean([r["mean_boundary_step"] for r in reports])) if reports else 0.0,
            "mean_inside_step": float(np.nanmean([r["mean_inside_step"] for r in reports])) if reports else 0.0}


TRANSLATIONS = {"left": ("x", -1), "right": ("x", 1), "up": ("y", -1), "down": ("y", 1)}
"""Motion -> (track axis, sign of travel along it)."""


def travel_ratio(generated: np.ndarray, rendered: np.ndarray, motion: str, kept: int = 1) -> float:
    """How far a continuation moved its object, as a share of how far the rendered clip moves it, after the
    ``kept`` frames both share: 1 = as far, 0 = static, < 0 = the wrong way. Both ``(T, H, W, 3)`` uint8 of the same
    length; ``motion`` one of :data:`TRANSLATIONS`. NaN when an end frame has no object."""
    if motion not in TRANSLATIONS:
        raise ValueError(f"travel is measured for translations {sorted(TRANSLATIONS)}, got {motion!r}")
    if not 1 <= kept < len(rendered) or len(generated) != len(rendered):
        raise ValueError(f"need clips of the same length above kept={kept}, got {len(generated)}, {len(rendered)}")
    axis, sign = TRANSLATIONS[motion]
    gen, ref = object_track(generated)[axis], object_track(rendered)[axis]
    want = sign * (ref[-1] - ref[kept - 1])
    if not want > 0:
        raise ValueError("the rendered clip does not move along its motion")
    return float(sign * (gen[-1] - gen[kept - 1]) / want)


def continuation_travel(pipe, prompts: Sequence[Tuple[str, str, str, str]], kept: int = 1, seed: int = 0,
                        **call_kwargs: Any) -> Dict[str, Any]:
    """The continuation model alone, without chaining: for each ``(prompt, colour, motion, shape)`` of a translation
    (:func:`opensora.synthetic.vocabulary.slow_prompts`), a slow clip from the middle of its path is rendered, its
    first ``kept`` frames are given to ``pipe`` (an image-condition pipeline, ``continuation`` mask) with the prompt,
    and :func:`travel_ratio` compares the generated window with the clip.

    Returns ``rows`` (``prompt``, ``motion``, ``ratio``) and ``mean_ratio``, ``static`` (share of ratios below 0.25)
    and ``wrong_way`` (share below 0). A chain can only keep moving if this is near 1 with few static windows."""
    import torch

    from opensora.synthetic.shapes import make_spec, render_clip
    from wfvae.io.frames import to_tensor, to_uint8

    frames = int(call_kwargs.pop("num_frames", pipe.settings["num_frames"]))
    size = int(call_kwargs.pop("height", pipe.settings["height"]))
    call_kwargs.pop("width", None)
    rng = np.random.default_rng(seed)
    rows = []
    for i, (prompt, colour, motion, shape) in enumerate(prompts):
        if motion not in TRANSLATIONS:
            continue
        spec = make_spec(colour, shape, motion, rng, slow=True)
        while spec.path_start:                       # a piece from the middle: motion before and after it
            spec = make_spec(colour, shape, motion, rng, slow=True)
        clip = render_clip(spec, frames, size)                                     # (T, H, W, 3) uint8
        video = to_tensor(clip)                                                    # (3, T, H, W)
        latents = pipe(prompt, video=video[:, :kept], mask_type="continuation", cond_frames=list(range(kept)),
                       num_frames=frames, height=size, width=size, output_type="latent",
                       generator=torch.Generator().manual_seed(seed + i), **call_kwargs).frames
        generated = to_uint8(pipe.decode_latents(latents).float().clamp(-1, 1)[0])
        rows.append({"prompt": prompt, "motion": motion, "ratio": travel_ratio(generated, clip, motion, kept)})
    ratios = np.array([r["ratio"] for r in rows], dtype=np.float64)
    if not len(ratios):
        raise ValueError("no prompt of a translation (left, right, up, down)")
    return {"rows": rows, "mean_ratio": float(np.nanmean(ratios)), "static": float(np.mean(ratios < 0.25)),
            "wrong_way": float(np.mean(ratios < 0))}
