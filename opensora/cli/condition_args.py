"""The image-condition and structure-control flags of ``opensora-sample``, without importing torch (so that
``opensora-sample --help`` is fast). What they do: :mod:`opensora.pipelines.conditions`."""
from __future__ import annotations

import argparse
from typing import List

# The values of opensora.pipelines.masks.MaskType and opensora.pipelines.control_signals.CONTROL_KINDS (tests check
# that they agree).
MASK_TYPES = ("t2iv", "i2v", "transition", "continuation", "clear", "random_temporal")
CONTROL_KINDS = ("canny", "sketch", "depth")


def _indices(text: str) -> List[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frame indices like '0,-1', got {text!r}") from None


def add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """The image-condition and structure-control options of ``opensora-sample``."""
    g = parser.add_argument_group("image conditions (an OpenSoraInpaint_v1_3 model)")
    g.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="condition image (once: i2v; twice: transition; more: with --cond-frames)")
    g.add_argument("--video", default=None, metavar="PATH", help="condition video (default: continuation)")
    g.add_argument("--mask-type", choices=MASK_TYPES, default=None,
                   help="which frames are kept (default from the inputs)")
    g.add_argument("--cond-frames", type=_indices, default=None, metavar="I,J,...",
                   help="output frames to keep, e.g. '0,-1' (negative: from the end)")
    g.add_argument("--noise-strength", type=float, default=0.0,
                   help="std of noise added to the kept frames, 0..10 (default 0)")
    g = parser.add_argument_group("structure control")
    g.add_argument("--controller", default=None, metavar="DIR", help="structure controller folder")
    g.add_argument("--control", choices=CONTROL_KINDS, default=None, help="control signal")
    g.add_argument("--control-video", default=None, metavar="PATH",
                   help="video the control is computed from (for depth: the depth video, unless --depth-estimator)")
    g.add_argument("--control-frames", type=_indices, default=None, metavar="I,J,...",
                   help="output frames to control (default: all)")
    g.add_argument("--control-strength", type=float, default=1.0,
                   help="factor on the controller's residuals, -10..10 (default 1)")
    g.add_argument("--save-control", default=None, metavar="PATH", help="write the control video (or image)")
    g.add_argument("--canny-low", type=float, default=100.0, help="Canny low threshold, >= 0 (default 100)")
    g.add_argument("--canny-high", type=float, default=200.0, help="Canny high threshold, >= 0 (default 200)")
    g.add_argument("--depth-estimator", default=None, metavar="MODULE:FUNCTION",
                   help="callable frames (3, T, H, W) in [-1, 1] -> depth, run on --control-video")
