"""Building the release's annotation JSON from folders of videos and images with ``.txt`` captions beside them.

For each media file ``clip.mp4`` (or ``.jpg`` ...) with an optional ``clip.txt`` caption, an entry::

    {"path": "sub/clip.mp4",                       # relative to the annotation's root folder
     "cap": "the caption",                         # "" without a .txt
     "resolution": {"height": H, "width": W},
     "num_frames": N, "fps": 25.0,                 # videos only
     "motion_score": 3.1,                          # mean |frame_t - frame_t-1| (0..255) of a small grey copy
     "scene_cuts": [k, ...]}                       # first frames of new scenes (histogram-difference threshold)

With ``split_scenes`` a video gives one entry per scene with ``"cut": [start, end)`` (the release's field), each
with the motion score of its scene. :mod:`opensora.data.datasets` reads these files; ``tools/build_annotations.py`` is
the CLI.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from wfvae.io.video import IMAGE_EXTENSIONS, VideoReader

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


def find_media(folder: str) -> List[str]:
    """Every video and image below ``folder`` (sorted)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)]
    return sorted(found)


def read_caption(path: str) -> str:
    """The text of ``<stem>.txt`` beside a media file, stripped ("" when absent)."""
    caption = os.path.splitext(path)[0] + ".txt"
    if not os.path.isfile(caption):
        return ""
    with open(caption, encoding="utf-8") as fh:
        return fh.read().strip()


def grey_frames(path: str, short_side: int = 64, chunk: int = 32) -> Iterator[torch.Tensor]:
    """Chunks (t, h, w) of the video in grey levels 0..255, downscaled to ``short_side``."""
    with VideoReader(path) as probe:
        h, w = probe.source_size
    scale = short_side / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    with VideoReader(path, size=size, resize_mode="resize") as reader:
        for x in reader.iter_chunks(chunk):
            rgb = (x + 1) * 127.5  # (3, t, h, w)
            yield 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def motion_and_cuts(path: str, short_side: int = 64, bins: int = 32,
                    cut_threshold: float = 0.5) -> Tuple[List[float], List[int]]:
    """Per-transition mean absolute grey difference (len N - 1) and scene-cut frames of a video.

    A cut is at frame ``k`` when the total-variation distance of the grey histograms (``bins`` bins, each
    normalised to sum 1; distance ``0.5 * sum |p_k - p_k-1|`` in [0, 1]) exceeds ``cut_threshold``.
    """
    diffs, cuts, previous, prev_hist, k = [], [], None, None, 0
    for chunk in grey_frames(path, short_side):
        for frame in chunk:
            hist = torch.histc(frame, bins=bins, min=0, max=255)
            hist = hist / hist.sum().clamp(min=1)
            if previous is not None:
                diffs.append(float((frame - previous).abs().mean()))
                if 0.5 * float((hist - prev_hist).abs().sum()) > cut_threshold:
                    cuts.append(k)
            previous, prev_hist, k = frame, hist, k + 1
    return diffs, cuts


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def annotate(path: str, root: str, short_side: int = 64, cut_threshold: float = 0.5,
             split_scenes: bool = False, min_scene_frames: int = 1) -> List[Dict[str, Any]]:
    """The annotation entries of one media file (one, or one per scene with ``split_scenes``)."""
    with VideoReader(path) as reader:
        (h, w), n, fps = reader.source_size, reader.source_num_frames, reader.source_fps
    entry: Dict[str, Any] = {"path": os.path.relpath(path, root), "cap": read_caption(path),
                             "resolution": {"height": int(h), "width": int(w)}}
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return [entry]
    diffs, cuts = motion_and_cuts(path, short_side, cut_threshold=cut_threshold)
    entry.update(num_frames=int(n), fps=round(float(fps), 4), motion_score=_mean(diffs), scene_cuts=cuts)
    if not split_scenes:
        return [entry]
    bounds = [0] + cuts + [int(n)]
    scenes = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end - start >= min_scene_frames:
            scenes.append({**entry, "cut": [start, end], "motion_score": _mean(diffs[start:end - 1])})
    return scenes


def build_annotations(folders: Sequence[str], root: Optional[str] = None, **options: Any) -> List[Dict[str, Any]]:
    """Entries for every media file below ``folders``; paths relative to ``root`` (default: the first folder).
    ``options`` are those of :func:`annotate`. Files that cannot be read raise ``VideoReadError``."""
    root = root or folders[0]
    entries = []
    for folder in folders:
        for path in find_media(folder):
            entries += annotate(path, root, **options)
    return entries
