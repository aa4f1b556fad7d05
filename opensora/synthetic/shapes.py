"""Synthetic captioned text-to-video clips (one coloured shape moving over a plain background) and a checker.

Each clip shows one anti-aliased filled shape (:data:`SHAPES`) of one of six colours (:data:`COLOURS`) doing one
of six motions (:data:`MOTIONS`: translating left/right/up/down, growing or shrinking) over a low-saturation
background (:data:`BACKGROUNDS`: HSV saturation <= 0.2, value in about [0.1, 0.9]), so that the object is the only
saturated thing in the frame.

Compositional split: of the 108 (colour, shape, motion) triples, the 18 of :func:`heldout_triples` never appear in
training data (:func:`train_triples` are the other 90); every colour, shape and motion, and every (colour, motion)
pair, still does. :func:`eval_prompts` builds prompts for the held-out triples from :data:`EVAL_TEMPLATES`,
which share no template with the training captions (:data:`TRAIN_TEMPLATES`).

Checker: :func:`analyse_clip` reads the colour (majority vote of the palette hue nearest to each saturated pixel)
and the motion (least-squares slopes of the object's centroid and log area over the clip) of a uint8
``(T, H, W, 3)`` video; :func:`check` compares them with a prompt's labels. It is meant for the blurry, slightly
off-colour output of a small video VAE decoder.

Arrays: videos are uint8 ``(T, H, W, 3)`` RGB; geometry in :class:`ClipSpec` is in fractions of the frame side,
image y pointing down (so "up" means the centroid's y decreases).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 145, 20),
    "yellow": (240, 220, 30),
    "green": (40, 190, 70),
    "blue": (40, 90, 235),
    "purple": (160, 60, 210),
}
SHAPES: Dict[str, List[str]] = {
    "circle": ["ball", "circle", "disc", "dot"],
    "square": ["square", "box", "block", "tile"],
    "triangle": ["triangle", "wedge"],
}
MOTIONS: Tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink")
# Verb phrases that follow "a red ball". Those starting with an -ing word also follow "is" (see PARTICIPLES).
MOTION_PHRASES: Dict[str, List[str]] = {
    "left": ["moving left", "moves to the left", "sliding to the left", "drifting left", "travelling leftward"],
    "right": ["moving right", "moves to the right", "sliding to the right", "drifting right",
              "travelling rightward"],
    "up": ["moving up", "rising", "floating upward", "moves to the top", "climbing upward"],
    "down": ["moving down", "falling", "sinking downward", "moves to the bottom", "dropping down"],
    "grow": ["growing", "getting bigger", "expanding", "growing larger", "swelling up"],
    "shrink": ["shrinking", "getting smaller", "contracting", "shrinking away", "dwindling"],
}
PARTICIPLES: Dict[str, List[str]] = {m: [p for p in ps if p.split()[0].endswith("ing")]
                                     for m, ps in MOTION_PHRASES.items()}
# Background kind -> caption words.
BACKGROUNDS: Dict[str, List[str]] = {
    "gray": ["gray", "grey", "plain"],
    "dark": ["dark", "black"],
    "light": ["light", "white", "pale"],
    "gradient": ["gradient", "shaded"],
    "striped": ["striped"],
    "textured": ["textured", "noisy", "mottled"],
}
# Fields: {colour} {noun} {motion} (any phrase), {ing} (a participle phrase), {background} (a background word).
TRAIN_TEMPLATES: Tuple[str, ...] = (
    "a {colour} {noun} {motion}",
    "the {colour} {noun} {motion}",
    "a {colour} {noun} {motion} on a {background} background",
    "a video of a {colour} {noun} {ing}",
    "one {colour} {noun} {motion}",
    "a small {colour} {noun} {motion}",
    "{colour} {noun} {ing}",
    "a {colour} {noun} {motion} on the screen",
)
EVAL_TEMPLATES: Tuple[str, ...] = (
    "footage of a {colour} {noun} {ing}",
    "a single {colour} {noun} {ing} over a {background} backdrop",
    "here a {colour} {noun} is {ing}",
)

SLOW_TRAVERSE_FRAMES = 129           # a slow clip's path would cross the frame in this many frames
_MARGIN = 0.02                       # free border kept around the object (fraction of the frame side)
_EXTENT = {"circle": 1.0, "square": 0.886, "triangle": 1.3}   # half-extent / radius (equal-ish areas)


# ----------------------------------------------------------------------------------------------- split
def _index(colour: str, shape: str, motion: str) -> int:
    return list(COLOURS).index(colour) + 2 * list(SHAPES).index(shape) + MOTIONS.index(motion)


def all_triples() -> List[Tuple[str, str, str]]:
    """All 108 (colour, shape, motion) triples, sorted."""
    return sorted(itertools.product(COLOURS, SHAPES, MOTIONS))


def heldout_triples() -> List[Tuple[str, str, str]]:
    """The 18 evaluation-only triples: ``(ci + 2 si + mi) % 6 == 0`` (indices in COLOURS, SHAPES, MOTIONS)."""
    return [t for t in all_triples() if _index(*t) % 6 == 0]


def train_triples() -> List[Tuple[str, str, str]]:
    """The 90 training triples (all but :func:`heldout_triples`), sorted."""
    return [t for t in all_triples() if _index(*t) % 6 != 0]


# ----------------------------------------------------------------------------------------------- specs
@dataclass
class ClipSpec:
    """Everything that fixes a clip. Positions ``(x, y)`` of the object's centre and radii are fractions of the
    frame side at the first (``x0, y0, r0``) and last (``x1, y1, r1``) frame; ``rgb`` is the object's colour
    (the palette colour, slightly jittered); ``seed`` draws the background's details."""
    colour: str
    shape: str
    motion: str
    background: str
    seed: int
    x0: float
    y0: float
    x1: float
    y1: float
    r0: float
    r1: float
    rgb: Tuple[int, int, int]
    slow: bool = False
    path_start: bool = True   # False: a slow clip from the middle of its path, which no video starts with

    def to_dict(self) -> dict:
        return asdict(self)


def make_spec(colour: str, shape: str, motion: str, rng: np.random.Generator,
              background: Optional[str] = None, slow: bool = False) -> ClipSpec:
    """A random clip of the given triple: translations travel 35-50% of the frame with radius 0.10-0.16;
    grow goes from radius ~0.07 to ~0.235 (shrink the reverse); the object stays inside the frame throughout.

    ``slow``: the clip is a 17-frame piece of a path that crosses the whole frame (or grows over the whole radius
    range) in :data:`SLOW_TRAVERSE_FRAMES` frames, so that a chained long video can keep its direction; 40% of
    slow clips are the path's first piece (where a long video starts), the rest anywhere along it."""
    if colour not in COLOURS or shape not in SHAPES or motion not in MOTIONS:
        raise ValueError(f"unknown triple {(colour, shape, motion)}")
    if background is None:
        background = str(rng.choice(list(BACKGROUNDS)))
    elif background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}")
    seed = int(rng.integers(2 ** 31))
    piece = (16 / (SLOW_TRAVERSE_FRAMES - 1)) if slow else 1.0       # fraction of the full path in one clip
    where = (0.0 if rng.random() < 0.4 else rng.uniform(0, 1 - piece)) if slow else 0.0   # piece's start on the path
    if motion in ("grow", "shrink"):
        small, big = rng.uniform(0.065, 0.075), rng.uniform(0.22, 0.25)
        e = _EXTENT[shape] * big + _MARGIN
        x0, y0 = rng.uniform(e, 1 - e, size=2)
        x1, y1 = x0, y0
        if slow:   # a piece of the geometric radius path small -> big
            small, big = small * (big / small) ** where, small * (big / small) ** (where + piece)
        r0, r1 = (small, big) if motion == "grow" else (big, small)
    else:
        r0 = r1 = rng.uniform(0.10, 0.16)
        e = _EXTENT[shape] * r0 + _MARGIN
        if slow:
            span = 1 - 2 * e
            d, a = span * piece, e + span * where
        else:
            d = rng.uniform(0.35, 0.50)
            a = rng.uniform(e, 1 - e - d)
        if motion in ("right", "down"):
            start, end = a, a + d
        else:   # a slow path starts at the far side; a normal clip's range is symmetric
            start, end = (1 - a, 1 - a - d) if slow else (a + d, a)
        p = rng.uniform(e, 1 - e)
        if motion in ("left", "right"):
            x0, x1, y0, y1 = start, end, p, p
        else:
            x0, x1, y0, y1 = p, p, start, end
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.integers(-6, 7, size=3), 0, 255))
    return ClipSpec(colour, shape, motion, background, seed, float(x0), float(y0), float(x1), float(y1),
                    float(r0), float(r1), rgb, bool(slow), bool(where == 0.0))


def random_spec(rng: np.random.Generator, triples: Optional[Sequence[Tuple[str, str, str]]] = None,
                slow_fraction: float = 0.0) -> ClipSpec:
    """A random clip of a triple drawn uniformly from ``triples`` (default: :func:`train_triples`); slow with
    probability ``slow_fraction`` (see :func:`make_spec`)."""
    triples = train_triples() if triples is None else list(triples)
    colour, shape, motion = triples[int(rng.integers(len(triples)))]
    slow = bool(rng.random() < slow_fraction) if slow_fraction > 0 else False
    return make_spec(colour, shape, motion, rng, slow=slow)


# ----------------------------------------------------------------------------------------------- rendering
def background_image(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """float ``(size, size, 3)`` background in [0, 1]: a grey level field times a faint per-channel tint."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == "gray":
        level = np.full((size, size), rng.uniform(0.3, 0.65))
    elif kind == "dark":
        level = np.full((size, size), rng.uniform(0.13, 0.28))
    elif kind == "light":
        level = np.full((size, size), rng.uniform(0.68, 0.84))
    elif kind == "gradient":
        angle = rng.choice([0.0, 0.5, 1.0, 1.5, 0.25, 0.75, 1.25, 1.75]) * np.pi
        u = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) / (abs(np.cos(angle)) + abs(np.sin(angle)))
        a, b = rng.uniform(0.13, 0.84, size=2)
        level = a + (b - a) * (u + 0.5)
    elif kind == "striped":
        angle = rng.choice([0.0, 0.5, 0.25, 0.75]) * np.pi
        period = rng.uniform(0.08, 0.25)
        phase = np.cos(angle) * xx + np.sin(angle) * yy
        wave = np.clip(3 * np.sin(2 * np.pi * phase / period + rng.uniform(0, 2 * np.pi)), -1, 1)
        level = rng.uniform(0.25, 0.7) + rng.uniform(0.04, 0.09) * wave
    elif kind == "textured":
        cells = int(rng.integers(4, 10))
        grid = rng.standard_normal((cells + 1, cells + 1))
        gx = xx[0] * cells
        rows = np.stack([np.interp(gx, np.arange(cells + 1), g) for g in grid])          # (cells+1, size)
        field = np.stack([np.interp(gx, np.arange(cells + 1), c) for c in rows.T]).T     # (size, size)
        field = field / (np.abs(field).max() + 1e-6)
        level = rng.uniform(0.3, 0.65) + rng.uniform(0.08, 0.15) * field + 0.02 * rng.standard_normal((size, size))
    else:
        raise ValueError(f"unknown background {kind!r}")
    tint = 1 + rng.uniform(-0.06, 0.06, size=3)
    return np.clip(np.clip(level, 0.13, 0.84)[..., None] * tint, 0, 1)


def _signed_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (approximate outside corners) in pixels from offsets ``(px, py)`` to the shape of radius
    ``r`` pixels centred at the origin; negative inside."""
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - _EXTENT["square"] * r
    big = _EXTENT["triangle"] * r    # equilateral, apex up, circumradius ``big``; edges at distance big / 2
    edges = [(0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5)]    # outward normals (image y down)
    return np.max([nx * px + ny * py for nx, ny in edges], axis=0) - big / 2


def _frame_params(spec: ClipSpec, num_frames: int) -> np.ndarray:
    """``(T, 3)`` rows ``(x, y, r)`` in frame fractions: linear position, geometric radius."""
    tau = np.linspace(0, 1, num_frames) if num_frames > 1 else np.zeros(1)
    x = spec.x0 + (spec.x1 - spec.x0) * tau
    y = spec.y0 + (spec.y1 - spec.y0) * tau
    r = spec.r0 * (spec.r1 / spec.r0) ** tau
    return np.stack([x, y, r], axis=1)


def object_alpha(spec: ClipSpec, num_frames: int = 17, size: int = 96) -> np.ndarray:
    """float ``(T, size, size)`` coverage of the object in [0, 1] (one-pixel linear edge ramp: anti-aliased)."""
    centres = (np.arange(size) + 0.5)
    alphas = []
    for x, y, r in _frame_params(spec, num_frames) * size:
        sd = _signed_distance(spec.shape, centres[None, :] - x, centres[:, None] - y, r)
        alphas.append(np.clip(0.5 - sd, 0, 1))
    return np.stack(alphas)


def render_clip(spec: ClipSpec, num_frames: int = 17, size: int = 96) -> np.ndarray:
    """uint8 ``(T, size, size, 3)`` clip of ``spec`` (deterministic; the background is static)."""
    if num_frames < 1 or size < 8:
        raise ValueError(f"need num_frames >= 1 and size >= 8, got {num_frames}, {size}")
    bg = background_image(spec.background, np.random.default_rng(spec.seed), size)
    alpha = object_alpha(spec, num_frames, size)[..., None]
    video = bg[None] * (1 - alpha) + (np.array(spec.rgb, dtype=np.float64) / 255) * alpha
    return np.round(video * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- text
def caption(spec: ClipSpec, rng: np.random.Generator, templates: Sequence[str] = TRAIN_TEMPLATES) -> str:
    """One caption of ``spec`` from a random template, noun, motion phrase and background word."""
    return _fill(str(templates[int(rng.integers(len(templates)))]), spec.colour, spec.shape, spec.motion,
                 spec.background, rng)


def captions(spec: ClipSpec, rng: np.random.Generator, k: int = 3,
             templates: Sequence[str] = TRAIN_TEMPLATES) -> List[str]:
    """``k`` different captions of ``spec`` from ``k`` different templates (``k <= len(templates)``)."""
    picks = rng.choice(len(templates), size=k, replace=False)
    return [_fill(str(templates[i]), spec.colour, spec.shape, spec.motion, spec.background, rng) for i in picks]


def _fill(template: str, colour: str, shape: str, motion: str, background: str, rng: np.random.Generator) -> str:
    def pick(options):
        return options[int(rng.integers(len(options)))]
    text = template.format(colour=colour, noun=pick(SHAPES[shape]), motion=pick(MOTION_PHRASES[motion]),
                           ing=pick(PARTICIPLES[motion]), background=pick(BACKGROUNDS[background]))
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def eval_prompts(n: int = 36, seed: int = 0, triples: Optional[Sequence[Tuple[str, str, str]]] = None,
                 templates: Sequence[str] = EVAL_TEMPLATES, with_shape: bool = False) -> List[Tuple[str, ...]]:
    """``n`` deterministic ``(prompt, colour, motion)`` for the held-out triples (or ``triples``) from
    ``templates`` (:data:`EVAL_TEMPLATES`): prompt ``i`` is about triple ``i % len(triples)``; each pass over the
    triples shifts the template, so with ``n = 36`` every held-out triple is asked twice with different templates.
    ``tuning_prompts`` gives prompts of training triples for choosing sampling settings without the test set.
    ``with_shape``: ``(prompt, colour, motion, shape)``."""
    rng = np.random.default_rng(seed)
    triples = heldout_triples() if triples is None else list(triples)
    prompts = []
    for i in range(n):
        colour, shape, motion = triples[i % len(triples)]
        template = templates[(i + i // len(triples)) % len(templates)]
        background = str(rng.choice(list(BACKGROUNDS)))
        item = (_fill(template, colour, shape, motion, background, rng), colour, motion)
        prompts.append(item + (shape,) if with_shape else item)
    return prompts


def spread_train_triples(n: int) -> List[Tuple[str, str, str]]:
    """``min(n, 90)`` training triples spread over all of them (every 37th, cyclically)."""
    triples = train_triples()
    return [triples[(i * 37) % len(triples)] for i in range(min(n, len(triples)))]


def tuning_prompts(n: int = 36, seed: int = 1, with_shape: bool = False) -> List[Tuple[str, ...]]:
    """Prompts of ``n`` training triples (spread over all 90) in the evaluation templates: for tuning guidance or
    steps, so that the held-out :func:`eval_prompts` stay unseen by every choice."""
    return eval_prompts(n, seed, spread_train_triples(n), with_shape=with_shape)


# ----------------------------------------------------------------------------------------------- checker
def rgb_to_hsv(rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float ``(..., 3)`` RGB in [0, 1] -> hue in degrees [0, 360), saturation, value (each ``(...)``)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    c = v - rgb.min(-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(c, 1e-12)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    return (h * 60) % 360, s, v


PALETTE_HUES: Dict[str, float] = {k: float(rgb_to_hsv(np.array(v, dtype=np.float64) / 255)[0])
                                  for k, v in COLOURS.items()}
_TRAVEL = 0.42       # typical translation over a clip (fraction of the frame)
_LOG_SCALE = 2.4     # typical |change of log area| of grow / shrink


def _hue_distance(h: np.ndarray, ref: float) -> np.ndarray:
    d = np.abs(h - ref) % 360
    return np.minimum(d, 360 - d)


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 spatial mean of ``(T, H, W, C)`` frames (edges replicated): lifts pixel noise off the saturation."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9


def object_mask(video: np.ndarray, min_saturation: float = 0.35,
                min_value: float = 0.25) -> Tuple[np.ndarray, str, float]:
    """The object's pixels in a video (uint8 ``(T, H, W, 3)``, or float in [0, 1]), after a 3x3 spatial mean:
    saturated (backgrounds have saturation <= 0.2) and nearest in hue to the palette colour most of the saturated
    pixels are nearest to (stray pixels of other hues drop out). Returns (mask ``(T, H, W)`` bool, that colour's
    name or ``"none"`` without a saturated pixel, the share of saturated pixels voting for it)."""
    video = np.asarray(video)
    x = video.astype(np.float32) / 255 if video.dtype == np.uint8 else np.clip(video.astype(np.float32), 0, 1)
    x = _box3(x)
    val = x.max(-1)
    sat = (val - x.min(-1)) / np.maximum(val, 1e-12)
    mask = (sat > min_saturation) & (val > min_value)
    if not mask.any():
        return mask, "none", 0.0
    names = list(PALETTE_HUES)
    hue = rgb_to_hsv(x[mask])[0]                                                       # (N,)
    nearest = np.stack([_hue_distance(hue, PALETTE_HUES[k]) for k in names]).argmin(0)  # (N,)
    votes = np.bincount(nearest, minlength=len(names))
    best = int(votes.argmax())
    obj = np.zeros_like(mask)
    obj[mask] = nearest == best
    return obj, names[best], float(votes[best] / votes.sum())


def _fill_ratio(obj: np.ndarray) -> float:
    """Object area / bounding-box area of one ``(H, W)`` mask (about 1 for a square, pi/4 for a disc, 1/2 for a
    triangle); the box spans the 2nd to 98th percentile of the mask's rows and columns (stray pixels ignored)."""
    ys, xs = np.nonzero(obj)
    y0, y1 = np.percentile(ys, [2, 98])
    x0, x1 = np.percentile(xs, [2, 98])
    inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    return float(inside.sum() / ((y1 - y0 + 1) * (x1 - x0 + 1)))


SHAPE_FILL = (("triangle", 0.0), ("circle", 0.765), ("square", 0.93))
"""Fill-ratio thresholds of the shape reading (rendered clips read about 0.68, 0.86 and 0.99): below 0.765 a
triangle, below 0.93 a circle, else a square."""


def analyse_clip(video: np.ndarray, min_saturation: float = 0.35, min_value: float = 0.25,
                 min_area: float = 0.002, min_score: float = 0.2) -> dict:
    """Reads the object's colour and motion from a video (after a 3x3 spatial mean against pixel noise).

    Args:
        video: uint8 ``(T, H, W, 3)`` RGB, or float in [0, 1].
        min_saturation, min_value: HSV thresholds of object pixels (backgrounds have saturation <= 0.2).
        min_area: frames whose object mask covers less than this fraction of the frame are ignored.
        min_score: the least motion, as a fraction of a typical clip's (0.42 of the frame, or a log-area change of
            2.4), read as moving; lower it for slow clips (about 0.2 of the typical travel per 17 frames).

    Returns a dict: ``colour`` (a COLOURS name, or ``"none"`` when no saturated pixel), ``motion`` (a MOTIONS
    name, ``"static"`` when nothing changes, ``"none"`` when fewer than two frames show the object), ``shape``
    (a SHAPES name from the median fill ratio of the object's bounding box, :data:`SHAPE_FILL`; ``"none"``
    without a valid frame), and
    diagnostics: ``colour_share`` (fraction of object pixels voting for the colour), ``mask_fraction`` (mean
    object area / frame area), ``valid_frames``, ``dx``, ``dy`` (centroid change over the whole clip in frame
    widths / heights, fitted by least squares; y down) and ``dlog_area`` (fitted change of log area).
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) video, got shape {video.shape}")
    T, H, W, _ = video.shape
    out = dict(colour="none", motion="none", shape="none", colour_share=0.0, mask_fraction=0.0, valid_frames=0,
               dx=0.0, dy=0.0, dlog_area=0.0, fill_ratio=0.0)
    obj, colour, share = object_mask(video, min_saturation, min_value)
    if colour == "none":
        return out
    out["colour"], out["colour_share"] = colour, share
    area = obj.sum((1, 2)).astype(np.float64)                                          # (T,)
    out["mask_fraction"] = float(area.mean() / (H * W))
    valid = area >= max(min_area * H * W, 3)
    out["valid_frames"] = int(valid.sum())
    if valid.any():
        fill = float(np.median([_fill_ratio(obj[t]) for t in np.nonzero(valid)[0]]))
        out["fill_ratio"] = fill
        out["shape"] = [name for name, low in SHAPE_FILL if fill >= low][-1]
    if valid.sum() < 2:
        return out
    ys, xs = (np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W
    cx = (obj.sum(1) * xs).sum(1)[valid] / area[valid]
    cy = (obj.sum(2) * ys).sum(1)[valid] / area[valid]
    tau = np.linspace(0, 1, T)[valid] if T > 1 else np.zeros(1)
    dx, dy, dla = (float(np.polyfit(tau, v, 1)[0]) for v in (cx, cy, np.log(area[valid])))
    out.update(dx=dx, dy=dy, dlog_area=dla)
    scores = {"left": -dx, "right": dx, "up": -dy, "down": dy}
    scores = {k: v / _TRAVEL for k, v in scores.items()}
    scores.update(grow=dla / _LOG_SCALE, shrink=-dla / _LOG_SCALE)
    motion = max(scores, key=scores.get)
    out["motion"] = motion if scores[motion] > min_score else "static"
    return out


def check(video: np.ndarray, colour: str, motion: str, shape: Optional[str] = None) -> bool:
    """Whether :func:`analyse_clip` reads ``colour`` and ``motion`` (and ``shape``, when given) in ``video``
    (uint8 ``(T, H, W, 3)``)."""
    result = analyse_clip(video)
    return (result["colour"] == colour and result["motion"] == motion
            and (shape is None or result["shape"] == shape))
