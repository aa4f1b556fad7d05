"""Write the synthetic captioned text-to-video training set of :mod:`opensora.synthetic.shapes`.

    python tools/make_t2v_dataset.py OUT_DIR [--num-clips 3000] [--frames 17] [--size 96] [--fps 8] [--seed 0]
        [--captions broad|basic] [--captions-per-clip 4] [--slow-fraction 0.25]

Writes into OUT_DIR:

* ``videos/000000.mp4`` ...: H.264 clips of training triples only (never a held-out one), each with a ``.txt``
  beside it holding its first caption; crf 12 in yuv444p (~49 dB; 4:2:0 chroma would smear the saturated edges
  to ~36 dB);
* ``train.json``: the annotation list read by ``opensora.data.datasets.load_entries`` (entries ``path`` relative to
OUT_DIR,
  ``cap``: the clip's captions, ``resolution``, ``num_frames``, ``fps``, and the labels ``colour``, ``shape``,
  ``motion``, ``background``, ``slow``). ``--captions broad`` (the default) writes them with the training words
  and sentence structures of :mod:`opensora.synthetic.vocabulary` (its held-out words never appear);
  ``basic`` with the 8 templates of :mod:`opensora.synthetic.shapes` (the first shipped model's data, 3 per clip).
  ``--slow-fraction`` of the clips are slow pieces of a frame-crossing path, captioned as slow; a slow piece from
  the middle of its path carries ``"exclude_masks": ["t2iv"]`` (the image-condition trainer gives it a kept-frame
  mask, never the text-to-video one: a long video's first window starts at the path's start);
* ``eval_prompts.txt`` (one prompt per line) and ``eval_prompts.json`` (``prompt``, ``colour``, ``motion``): prompts
  about the held-out triples for the prompt-following check (:func:`opensora.synthetic.shapes.check`).

The output is generated data, not part of the repository: do not commit it. An existing data set in OUT_DIR is
kept unless ``--overwrite`` is given; a failed or interrupted run removes the clips it wrote.
"""
from __future__ import annotations

import os
import sys

from wfvae.cli_support import ErrorParser, Outputs, UsageError, check_finite_number, run_cli

OUTPUT_FILES = ("train.json", "eval_prompts.txt", "eval_prompts.json")


def build_parser() -> ErrorParser:
    p = ErrorParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--num-clips", type=int, default=3000)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captions", choices=("broad", "basic"), default="broad",
                   help="caption vocabulary (default broad: many synonyms and sentence structures)")
    p.add_argument("--captions-per-clip", type=int, default=None, help="default: 4 (broad), 3 (basic)")
    p.add_argument("--slow-fraction", type=float, default=None,
                   help="share of slow clips (default: 0.25 with broad captions, 0 with basic)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing data set in OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(args, outputs: Outputs) -> None:
    if args.num_clips < 1:
        raise UsageError(f"--num-clips must be >= 1, got {args.num_clips}")
    if args.frames < 1:
        raise UsageError(f"--frames must be >= 1, got {args.frames}")
    if args.size < 16:
        raise UsageError(f"--size must be >= 16, got {args.size}")
    check_finite_number(args.fps, "--fps", 0.0, low_open=True)
    if args.captions_per_clip is not None and not 1 <= args.captions_per_clip <= 8:
        raise UsageError(f"--captions-per-clip must be in [1, 8], got {args.captions_per_clip}")
    if args.slow_fraction is not None:
        check_finite_number(args.slow_fraction, "--slow-fraction", 0.0, 1.0)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"{args.out_dir} exists and is not a folder")
    for name in OUTPUT_FILES:
        outputs.check(os.path.join(args.out_dir, name), "data set file")
    first = os.path.join(args.out_dir, "videos", "000000.mp4")
    if os.path.exists(first) and not args.overwrite:
        raise UsageError(f"{args.out_dir} already holds a data set ({first}): pass --overwrite to replace it, or "
                         f"choose another folder")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    outputs = Outputs(overwrite=args.overwrite)
    _check_args(args, outputs)

    import numpy as np
    import torch
    from tqdm import tqdm

    from opensora.synthetic.shapes import captions, eval_prompts, random_spec, render_clip, train_triples
    from opensora.synthetic.vocabulary import broad_captions
    from wfvae.models.checkpoint import write_json_atomic
    from wfvae.io.video import VideoWriter
    from wfvae.io.frames import to_tensor

    torch.set_num_threads(1)      # tiny tensors: threads only add overhead (and contend on a shared machine)
    outputs.make_folder(os.path.join(args.out_dir, "videos"))
    rng = np.random.default_rng(args.seed)
    triples = train_triples()
    broad = args.captions == "broad"
    per_clip = args.captions_per_clip or (4 if broad else 3)
    slow_fraction = args.slow_fraction if args.slow_fraction is not None else (0.25 if broad else 0.0)
    entries, written = [], []
    try:
        for i in tqdm(range(args.num_clips), desc="clips", disable=args.quiet):
            spec = random_spec(rng, triples, slow_fraction)
            if broad:
                caps = broad_captions(spec.colour, spec.shape, spec.motion, spec.background, spec.slow, rng, per_clip)
            else:
                caps = captions(spec, rng, k=per_clip)
            name = f"videos/{i:06d}"
            with VideoWriter(os.path.join(args.out_dir, name + ".mp4"), fps=args.fps, crf=12, pix_fmt="yuv444p",
                             options={"threads": "1"}) as writer:
                writer.write(to_tensor(render_clip(spec, args.frames, args.size)))
            written.append(os.path.join(args.out_dir, name + ".mp4"))
            with open(os.path.join(args.out_dir, name + ".txt"), "w") as fh:
                written.append(fh.name)
                fh.write(caps[0] + "\n")
            entries.append({"path": name + ".mp4", "cap": caps,
                            "resolution": {"height": args.size, "width": args.size},
                            "num_frames": args.frames, "fps": args.fps, "colour": spec.colour, "shape": spec.shape,
                            "motion": spec.motion, "background": spec.background,
                            "slow": spec.slow})
            if not spec.path_start:   # the middle of a slow path: a continuation, never a video's first window
                entries[-1]["exclude_masks"] = ["t2iv"]
    except BaseException:  # failed or interrupted: no half data set (the folders go too, when this run made them)
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        raise
    write_json_atomic(entries, os.path.join(args.out_dir, "train.json"), indent=1)
    prompts = eval_prompts()
    write_json_atomic([{"prompt": prompt, "colour": colour, "motion": motion} for prompt, colour, motion in prompts],
                      os.path.join(args.out_dir, "eval_prompts.json"), indent=1)
    from wfvae.cli_support import commit, temp_path

    tmp = temp_path(os.path.join(args.out_dir, "eval_prompts.txt"))
    with open(tmp, "w") as fh:
        fh.writelines(prompt + "\n" for prompt, _, _ in prompts)
    commit(tmp, os.path.join(args.out_dir, "eval_prompts.txt"))
    if not args.quiet:
        print(f"wrote {args.num_clips} clips to {args.out_dir}")
    return 0


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
