"""Control signals for the structure controller: canny edges, sketches, depth.

Every signal takes and returns a clip ``(3, T, H, W)`` float in ``[-1, 1]`` (the :mod:`wfvae.io.video`
convention), so a control video is handled like any video (resized, saved, read back).

* **canny** - OpenCV Canny on the grey frames (optional Gaussian blur first): edges +1 (white), the rest -1.
* **sketch** - soft pencil-like strokes: the Sobel gradient magnitude of the (slightly blurred) grey frames,
  scaled and clipped to [0, 1], small values (texture noise) dropped. Unlike Canny's thin binary edges the strokes
  are graded and as wide as the blur; unlike a "colour dodge" pencil filter they do not depend on the absolute
  brightness (dark flat regions stay blank). Strokes +1 on -1 by default (the polarity of the canny maps);
  ``invert=False`` gives dark strokes on white, e.g. to match hand-drawn sketches.
* **depth** - a depth (or disparity) video supplied by the user, or computed by an estimator the user plugs in
  (any callable ``frames (3, T, H, W) in [-1, 1] -> depth (T, H, W)`` / ``(1|3, T, H, W)``; see
  :func:`load_estimator`). No weights are needed by default. Depth is normalised over the whole clip (one
  min/max, so the frames stay consistent with each other) to ``[-1, 1]``; ``invert=True`` flips near and far.

:func:`make_control` dispatches by name; :func:`save_control` writes a control clip (the CLI's
``--save-control``).
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Optional, Union

import cv2
import numpy as np
import torch

from wfvae.io.video import IMAGE_EXTENSIONS, VideoWriter, write_image
from wfvae.io.frames import to_uint8

CONTROL_KINDS = ("canny", "sketch", "depth")
DepthEstimator = Callable[[torch.Tensor], torch.Tensor]


def _check_clip(video: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[0] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a clip (3, T, H, W) in [-1, 1], got {shape}")


def _grey(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 grey frames (T, H, W)."""
    _check_clip(video)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in to_uint8(video)])


def _from_unit(values: Union[np.ndarray, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """(T, H, W) in [0, 1] -> (3, T, H, W) in [-1, 1] with the dtype/device of ``like``."""
    x = torch.as_tensor(np.asarray(values), dtype=torch.float32) * 2 - 1
    return x.unsqueeze(0).expand(3, -1, -1, -1).to(device=like.device, dtype=like.dtype).contiguous()


def canny(video: torch.Tensor, low_threshold: float = 100, high_threshold: float = 200, blur: int = 0,
          aperture: int = 3, l2_gradient: bool = False) -> torch.Tensor:
    """Canny edges of every frame: (3, T, H, W) in [-1, 1] -> (3, T, H, W), edges 1, elsewhere -1.

    Thresholds apply to the gradient of the 0..255 grey frame (OpenCV's hysteresis: ``high_threshold`` starts an
    edge, ``low_threshold`` continues it); ``blur`` = odd Gaussian kernel size applied first (0 = none);
    ``aperture`` = Sobel size (3, 5, 7).
    """
    if not 0 <= low_threshold <= high_threshold:
        raise ValueError(f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}")
    if blur and blur % 2 == 0:
        raise ValueError(f"blur must be 0 or an odd kernel size, got {blur}")
    edges = []
    for frame in _grey(video):
        if blur:
            frame = cv2.GaussianBlur(frame, (blur, blur), 0)
        edges.append(cv2.Canny(frame, low_threshold, high_threshold, apertureSize=aperture, L2gradient=l2_gradient))
    return _from_unit(np.stack(edges) > 0, video)


def sketch(video: torch.Tensor, blur_sigma: float = 1.0, gain: float = 4.0, threshold: float = 0.02,
           invert: bool = True) -> torch.Tensor:
    """Soft pencil-like strokes from the Sobel gradient (see the module docstring): (3, T, H, W) -> (3, T, H, W).

    ``stroke = clip(gain * |Sobel(blur(grey))|, 0, 1)`` with grey in [0, 1] and the 3x3 Sobel divided by 4 (a unit
    step gives 1), zero below ``threshold`` (texture noise). ``blur_sigma`` (pixels, 0 = none) widens and softens
    the strokes; the same scale is used for every frame, so the clip stays consistent over time. ``invert``
    (default): strokes 1 on -1, else dark strokes on white.
    """
    if blur_sigma < 0 or gain <= 0 or not 0 <= threshold < 1:
        raise ValueError(f"need blur_sigma >= 0, gain > 0, 0 <= threshold < 1; got {blur_sigma}, {gain}, {threshold}")
    out = []
    for frame in _grey(video):
        grey = frame.astype(np.float32) / 255.0
        if blur_sigma > 0:
            grey = cv2.GaussianBlur(grey, (0, 0), blur_sigma)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = np.sqrt(gx * gx + gy * gy) / 4.0
        out.append(np.where(magnitude < threshold, 0.0, np.clip(gain * magnitude, 0.0, 1.0)))
    strokes = np.stack(out).astype(np.float32)
    return _from_unit(strokes if invert else 1.0 - strokes, video)


def normalize_depth(depth: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Depth maps (T, H, W), (1, T, H, W) or (3, T, H, W) (channels averaged), any range -> (3, T, H, W) in
    [-1, 1], with one min/max over the whole clip. Non-finite values count as the minimum; a constant map gives 0.
    ``invert`` flips the order (e.g. depth -> disparity-like "near is bright")."""
    depth = torch.as_tensor(depth).float()
    if depth.dim() == 4 and depth.shape[0] in (1, 3):
        depth = depth.mean(dim=0)
    if depth.dim() != 3:
        raise ValueError(f"depth of shape (T, H, W), (1, T, H, W) or (3, T, H, W) expected, got {tuple(depth.shape)}")
    finite = torch.isfinite(depth)
    if not finite.any():
        raise ValueError("depth has no finite value")
    low, high = depth[finite].min(), depth[finite].max()
    depth = torch.where(finite, depth, low)
    unit = torch.full_like(depth, 0.5) if high <= low else (depth - low) / (high - low)
    if invert:
        unit = 1.0 - unit
    return (unit * 2 - 1).unsqueeze(0).expand(3, -1, -1, -1).contiguous()


def depth(video: Optional[torch.Tensor] = None, estimator: Optional[DepthEstimator] = None,
          depth_video: Optional[torch.Tensor] = None, invert: bool = False) -> torch.Tensor:
    """Depth control (3, T, H, W) in [-1, 1]: ``depth_video`` (a user-supplied depth clip, any layout accepted
    by :func:`normalize_depth`) normalised, or ``estimator(video)`` normalised. One of the two is needed."""
    if depth_video is None:
        if estimator is None:
            raise ValueError("depth control needs a depth video or a depth estimator (a callable frames -> depth)")
        _check_clip(video)
        with torch.no_grad():
            depth_video = estimator(video)
    out = normalize_depth(depth_video, invert)
    if video is not None and out.shape[1:] != video.shape[1:]:
        raise ValueError(f"depth of {tuple(out.shape[1:])} does not match the video's {tuple(video.shape[1:])}")
    return out if video is None else out.to(video)


def load_estimator(spec: str) -> DepthEstimator:
    """A depth estimator named ``"package.module:function"`` (or ``:Class`` to be instantiated without arguments).

    It is called as ``estimator(frames)`` with frames (3, T, H, W) in [-1, 1] and returns depth (T, H, W) or
    (1|3, T, H, W) in any range (MiDaS-style disparity works too, with ``invert`` as needed).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"depth estimator must be given as module:function, got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load depth estimator {spec!r}: {exc}") from exc
    if isinstance(target, type):
        target = target()
    if not callable(target):
        raise ValueError(f"depth estimator {spec!r} is not callable")
    return target


def make_control(kind: str, video: torch.Tensor, **options) -> torch.Tensor:
    """Control signal ``kind`` (canny, sketch, depth) of a clip (3, T, H, W) in [-1, 1]; ``options`` go to the
    signal's function. For ``depth`` without an ``estimator`` option, ``video`` IS the depth clip."""
    if kind == "canny":
        return canny(video, **options)
    if kind == "sketch":
        return sketch(video, **options)
    if kind == "depth":
        if options.get("estimator") is None:
            options.pop("estimator", None)
            return depth(video=None, depth_video=video, **options).to(video)
        return depth(video=video, **options)
    raise ValueError(f"unknown control {kind!r}; choose one of {', '.join(CONTROL_KINDS)}")


def save_control(path: Union[str, os.PathLike], control: torch.Tensor, fps: float = 18.0) -> None:
    """Write a control clip (3, T, H, W) in [-1, 1] (or a batch (1, 3, T, H, W)): an image when ``path`` has an
    image extension (first frame) or a video otherwise (lossless H.264, so edges stay sharp)."""
    if control.dim() == 5:
        if control.shape[0] != 1:
            raise ValueError(f"save one control clip at a time, got a batch of {control.shape[0]}")
        control = control[0]
    _check_clip(control)
    path = os.fspath(path)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        write_image(path, control[:, :1])
        return
    with VideoWriter(path, fps=fps, lossless=True) as writer:
        writer.write(control)
