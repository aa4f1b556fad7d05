"""Scan folders of videos/images (captions in ``.txt`` files beside them) into an Open-Sora Plan annotation JSON.

    python tools/build_annotations.py /data/clips -o /data/clips/anno.json [--split-scenes] [--cut-threshold 0.5]

Each entry has ``path`` (relative to ``--root``, default the first folder), ``cap``, ``resolution``,
``num_frames``, ``fps``, ``motion_score`` and ``scene_cuts`` (see :mod:`opensora.data.annotations`). An existing
``--output`` is kept unless ``--overwrite`` is given. A data file line
``/data/clips,/data/clips/anno.json`` then feeds :class:`opensora.data.OpenSoraDataModule`. Bad input prints one
``error:`` line and exits with status 2.
"""
import json
import os
import sys

from wfvae.cli_support import ErrorParser, Outputs, UsageError, check_finite_number, commit, run_cli, temp_path


def build_parser() -> ErrorParser:
    parser = ErrorParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders scanned recursively for videos and images")
    parser.add_argument("-o", "--output", required=True, help="annotation JSON to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--root", help="folder the entries' paths are relative to (default: the first folder)")
    parser.add_argument("--motion-size", type=int, default=64, help="short side of the grey copy for motion/cuts")
    parser.add_argument("--cut-threshold", type=float, default=0.5, help="histogram distance of a scene cut (0..1)")
    parser.add_argument("--split-scenes", action="store_true", help="one entry per scene, with its 'cut'")
    parser.add_argument("--min-scene-frames", type=int, default=1, help="drop shorter scenes (with --split-scenes)")
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.motion_size < 1:
        raise UsageError(f"--motion-size must be >= 1, got {args.motion_size}")
    check_finite_number(args.cut_threshold, "--cut-threshold", 0.0, 1.0, low_open=True)
    if args.min_scene_frames < 1:
        raise UsageError(f"--min-scene-frames must be >= 1, got {args.min_scene_frames}")
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise UsageError(f"{folder} is not a folder: give folders of videos and images")
    outputs = Outputs(overwrite=args.overwrite)
    outputs.check(args.output, "annotation file", suffixes=(".json",))

    from opensora.data.annotations import build_annotations
    from wfvae.io.video import VideoReadError

    try:
        entries = build_annotations(args.folders, args.root, short_side=args.motion_size,
                                    cut_threshold=args.cut_threshold, split_scenes=args.split_scenes,
                                    min_scene_frames=args.min_scene_frames)
    except VideoReadError as exc:
        raise UsageError(f"{exc}; remove or re-encode the file") from None
    if not entries:
        raise UsageError(f"no videos or images found in {', '.join(args.folders)}")
    outputs.make_parent(args.output)
    tmp = temp_path(args.output)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, indent=1, ensure_ascii=False)
    commit(tmp, args.output)
    return 0


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
