"""Scan folders of videos/images (captions in ``.txt`` files beside them) into an Open-Sora Plan annotation JSON.

    python tools/build_annotations.py /data/clips -o /data/clips/anno.json [--split-scenes] [--cut-threshold 0.5]

Each entry has ``path`` (relative to ``--root``, default the first folder), ``cap``, ``resolution``,
``num_frames``, ``fps``, ``motion_score`` and ``scene_cuts`` (see :mod:`opensora.annotations`). A data file line
``/data/clips,/data/clips/anno.json`` then feeds :class:`opensora.data.OpenSoraDataModule`. Bad input prints one
``error:`` line and exits with status 2.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opensora.annotations import build_annotations  # noqa: E402
from wfvae.video_io import VideoReadError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders scanned recursively for videos and images")
    parser.add_argument("-o", "--output", required=True, help="annotation JSON to write")
    parser.add_argument("--root", help="folder the entries' paths are relative to (default: the first folder)")
    parser.add_argument("--motion-size", type=int, default=64, help="short side of the grey copy for motion/cuts")
    parser.add_argument("--cut-threshold", type=float, default=0.5, help="histogram distance of a scene cut (0..1)")
    parser.add_argument("--split-scenes", action="store_true", help="one entry per scene, with its 'cut'")
    parser.add_argument("--min-scene-frames", type=int, default=1, help="drop shorter scenes (with --split-scenes)")
    args = parser.parse_args(argv)
    try:
        if args.motion_size < 1 or not 0 < args.cut_threshold <= 1:
            raise ValueError("--motion-size must be >= 1 and --cut-threshold in (0, 1]")
        entries = build_annotations(args.folders, args.root, short_side=args.motion_size,
                                    cut_threshold=args.cut_threshold, split_scenes=args.split_scenes,
                                    min_scene_frames=args.min_scene_frames)
        if not entries:
            raise ValueError(f"no videos or images found in {', '.join(args.folders)}")
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=1, ensure_ascii=False)
    except (OSError, ValueError, VideoReadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
