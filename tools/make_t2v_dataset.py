"""Write the synthetic captioned text-to-video training set of :mod:`opensora.synthetic`.

    python tools/make_t2v_dataset.py OUT_DIR [--num-clips 3000] [--frames 17] [--size 96] [--fps 8] [--seed 0]

Writes into OUT_DIR:

* ``videos/000000.mp4`` ...: H.264 clips of training triples only (never a held-out one), each with a ``.txt``
  beside it holding its first caption; crf 12 in yuv444p (~49 dB; 4:2:0 chroma would smear the saturated edges
  to ~36 dB);
* ``train.json``: the annotation list read by ``opensora.data.load_entries`` (entries ``path`` relative to OUT_DIR,
  ``cap``: three captions from different training templates, ``resolution``, ``num_frames``, ``fps``, and the
  labels ``colour``, ``shape``, ``motion``, ``background``);
* ``eval_prompts.txt`` (one prompt per line) and ``eval_prompts.json`` (``prompt``, ``colour``, ``motion``): prompts
  about the held-out triples for the prompt-following check (:func:`opensora.synthetic.check`).

The output is generated data, not part of the repository: do not commit it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opensora.synthetic import captions, eval_prompts, random_spec, render_clip, train_triples  # noqa: E402
from wfvae.checkpoint import write_json_atomic  # noqa: E402
from wfvae.video_io import VideoWriter, to_tensor  # noqa: E402


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _check_args(args) -> None:
    if args.num_clips < 1:
        raise _UsageError(f"--num-clips must be >= 1, got {args.num_clips}")
    if args.frames < 1:
        raise _UsageError(f"--frames must be >= 1, got {args.frames}")
    if args.size < 16:
        raise _UsageError(f"--size must be >= 16, got {args.size}")
    if not args.fps > 0:
        raise _UsageError(f"--fps must be > 0, got {args.fps}")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise _UsageError(f"{args.out_dir} exists and is not a folder")


def main(argv=None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--num-clips", type=int, default=3000)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        args = p.parse_args(argv)
        _check_args(args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)      # tiny tensors: threads only add overhead (and contend on a shared machine)
    os.makedirs(os.path.join(args.out_dir, "videos"), exist_ok=True)
    rng = np.random.default_rng(args.seed)
    triples = train_triples()
    entries = []
    for i in tqdm(range(args.num_clips), desc="clips", disable=args.quiet):
        spec = random_spec(rng, triples)
        caps = captions(spec, rng, k=3)
        name = f"videos/{i:06d}"
        with VideoWriter(os.path.join(args.out_dir, name + ".mp4"), fps=args.fps, crf=12, pix_fmt="yuv444p",
                         options={"threads": "1"}) as writer:
            writer.write(to_tensor(render_clip(spec, args.frames, args.size)))
        with open(os.path.join(args.out_dir, name + ".txt"), "w") as fh:
            fh.write(caps[0] + "\n")
        entries.append({"path": name + ".mp4", "cap": caps,
                        "resolution": {"height": args.size, "width": args.size},
                        "num_frames": args.frames, "fps": args.fps, "colour": spec.colour, "shape": spec.shape,
                        "motion": spec.motion, "background": spec.background})
    write_json_atomic(entries, os.path.join(args.out_dir, "train.json"), indent=1)
    prompts = eval_prompts()
    with open(os.path.join(args.out_dir, "eval_prompts.txt"), "w") as fh:
        fh.writelines(prompt + "\n" for prompt, _, _ in prompts)
    write_json_atomic([{"prompt": prompt, "colour": colour, "motion": motion} for prompt, colour, motion in prompts],
                      os.path.join(args.out_dir, "eval_prompts.json"), indent=1)
    if not args.quiet:
        print(f"wrote {args.num_clips} clips to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
