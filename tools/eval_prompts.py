"""Prompt-following accuracy of a text-to-video model on held-out synthetic prompts (colour + motion; shape too).

    python tools/eval_prompts.py assets/models/opensora-t2v [--num 36] [--json report.json] [--save-videos DIR]
    python tools/eval_prompts.py assets/models/opensora-t2v --words     # held-out WORDS (never in a caption)
    python tools/eval_prompts.py assets/models/opensora-t2v --sensitivity      # does it read each caption word?
"""
import argparse
import os
import sys
import time

from wfvae.cli_support import ErrorParser, Outputs, UsageError, check_finite_number, parse_device, run_cli


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv), oom_hint="lower --batch-size or use --device cpu")


def _main(argv) -> int:
    p = ErrorParser(prog="eval_prompts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder (pipeline layout or model_index.json)")
    p.add_argument("--num", type=int, default=36,
                   help="held-out prompts (opensora.synthetic.shapes.eval_prompts); "
                   "0 with --sensitivity or --ceiling only")
    p.add_argument("--tuning", action="store_true",
                   help="prompts of TRAINING triples instead (opensora.synthetic.shapes.tuning_prompts), for choosing "
                        "--steps/--guidance without touching the held-out prompts")
    p.add_argument("--words", action="store_true",
                   help="prompts written with held-out words only (opensora.synthetic.vocabulary."
                        "heldout_word_prompts) about training triples, instead of held-out compositions")
    p.add_argument("--synonyms", action="store_true",
                   help="held-out compositions written with the TRAINING synonyms (emerald, azure, orb, ...) in "
                        "the evaluation sentence structures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--json", default=None, help="write the report (rows + accuracies) here")
    p.add_argument("--save-videos", default=None, metavar="DIR", help="write every sample as NNN-ok|no.mp4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --save-videos files")
    p.add_argument("--ceiling", action="store_true",
                   help="also score VAE reconstructions of rendered held-out clips (the best reachable)")
    p.add_argument("--sensitivity", action="store_true",
                   help="also print how much the denoiser's prediction changes when only the colour, shape or "
                        "motion of a caption changes (opensora.synthetic.prompt_check.caption_sensitivity)")
    args = p.parse_args(argv)
    if args.num < 0 or args.batch_size < 1:
        raise UsageError("--num must be >= 0 and --batch-size >= 1")
    if args.words + args.tuning + args.synonyms > 1:
        raise UsageError("give one of --words, --synonyms and --tuning")
    if args.num == 0 and not (args.sensitivity or args.ceiling):
        raise UsageError("--num 0 samples nothing: give --sensitivity or --ceiling, or --num >= 1")
    if not os.path.isdir(args.model):
        raise UsageError(f"model folder not found: {args.model}")
    check_finite_number(args.guidance, "--guidance")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    outputs = Outputs(overwrite=args.overwrite, inputs=[args.model])
    if args.json:
        outputs.check(args.json, "--json report", suffixes=(".json",))
    if args.save_videos:
        if os.path.isfile(args.save_videos):
            raise UsageError(f"--save-videos {args.save_videos} is a file: give a folder")
        if os.path.isdir(args.save_videos) and os.listdir(args.save_videos) and not args.overwrite:
            raise UsageError(f"--save-videos folder {args.save_videos} is not empty: pass --overwrite to "
                             f"replace its files, or choose another folder")
        outputs.check_folder(args.save_videos, "--save-videos")
    device = str(parse_device(args.device))
    from wfvae.models.checkpoint import write_json_atomic
    from opensora.pipelines.text_to_video import OpenSoraPipeline
    from opensora.synthetic.prompt_check import caption_sensitivity, evaluate, format_report, vae_ceiling
    from opensora.synthetic.shapes import eval_prompts, heldout_triples, spread_train_triples, tuning_prompts
    from opensora.synthetic.vocabulary import heldout_word_prompts

    start = time.time()
    try:
        pipe = OpenSoraPipeline.from_pretrained(args.model).to(device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UsageError(f"cannot load {args.model}: {str(exc).splitlines()[0]}") from None
    extra = {}
    if args.steps is not None:
        extra["num_inference_steps"] = args.steps
    if args.guidance is not None:
        extra["guidance_scale"] = args.guidance
    report: dict = {"rows": []}
    if args.num:
        if args.words:
            prompts = heldout_word_prompts(spread_train_triples(args.num), args.num, seed=0)
        elif args.synonyms:
            prompts = heldout_word_prompts(heldout_triples(), args.num, seed=0, split="train")
        elif args.tuning:
            prompts = tuning_prompts(args.num, with_shape=True)
        else:
            prompts = eval_prompts(args.num, with_shape=True)
        report = evaluate(pipe, prompts, seed=args.seed, batch_size=args.batch_size,
                          keep_videos=args.save_videos is not None, **extra)
        print(format_report(report))
    if args.ceiling:
        d = pipe.defaults
        report["vae_ceiling"] = vae_ceiling(pipe.vae, d.get("num_frames", 17), d.get("height", 96))
        c = report["vae_ceiling"]
        print(f"VAE ceiling (reconstructed renders): colour {c['colour_accuracy']:.1%}  motion "
              f"{c['motion_accuracy']:.1%}  both {c['accuracy']:.1%}  shape {c['shape_accuracy']:.1%}  "
              f"({c['num_clips']} clips); artefacts: ghost share {c['mean_ghost']:.4f}, grid excess "
              f"{c['mean_grid']:.3f}")
    if args.sensitivity:
        report["caption_sensitivity"] = caption_sensitivity(pipe)
        print("caption sensitivity (RMS change of the prediction when one attribute of the caption changes)")
        for t, row in report["caption_sensitivity"].items():
            print(f"  t={t:<4} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    print(f"{args.model}: {time.time() - start:.0f} s on {args.device}")
    if args.save_videos:
        from opensora.pipelines.defaults import sampling_defaults
        from wfvae.io.video import VideoWriter
        from wfvae.io.frames import to_tensor

        fps = sampling_defaults(args.model).get("fps", 8.0)

        outputs.make_folder(args.save_videos)
        for i, row in enumerate(report["rows"]):
            name = os.path.join(args.save_videos, f"{i:03d}-{'ok' if row['ok'] else 'no'}.mp4")
            with VideoWriter(name, fps=fps) as writer:
                writer.write(to_tensor(row.pop("video")))
    if args.json:
        for row in report["rows"]:
            row.pop("video", None)
        outputs.make_parent(args.json)
        write_json_atomic(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
