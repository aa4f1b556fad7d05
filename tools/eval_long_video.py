"""Long videos of the synthetic domain, chained window by window: does every window keep the object's colour and
direction, and are the jumps at window boundaries no larger than the motion inside a window?

    python tools/eval_long_video.py assets/models/opensora-t2v --frames 129 --num 6
    python tools/eval_long_video.py assets/models/opensora-t2v --tuning --overlap 1 --window-noise 0.05
    python tools/eval_long_video.py assets/models/opensora-t2v --continuation-probe --num 12

Prompts ask for slow motion (a long video has to keep its object in the frame) about held-out triples
(``--tuning``: training triples, for choosing ``--overlap`` and ``--window-noise``). Each video is sampled by
:class:`opensora.pipelines.long_video.ContinuationChain` (window 0 from MODEL, the rest from the continuation
model, default: MODEL's ``continuation_model``) and judged by :func:`opensora.synthetic.long_check.analyse_long`.
``--continuation-probe`` measures the continuation model alone, without chaining
(:func:`opensora.synthetic.long_check.continuation_travel`): given the first frames of a rendered slow clip from the
middle of its path, how far does it move the object, as a share of the clip's own travel?
"""
import argparse
import os
import sys
import time

from wfvae.cli_support import ErrorParser, Outputs, UsageError, check_finite_number, run_cli


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv) -> int:
    p = ErrorParser(prog="eval_long_video", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="text-to-video model folder")
    p.add_argument("--continuation-model", default=None, help="default: the model folder's continuation_model")
    p.add_argument("--frames", type=int, default=129)
    p.add_argument("--num", type=int, default=6, help="prompts (videos)")
    p.add_argument("--tuning", action="store_true", help="prompts of training triples")
    p.add_argument("--overlap", type=int, default=None, help="default: the model folder's, else 2")
    p.add_argument("--window-noise", type=float, default=None, help="default: the model folder's, else 0")
    p.add_argument("--steps", type=int, default=None, help="sampling steps per window (default: the model's)")
    p.add_argument("--preset", default=None, help="quality, balanced or fast (default: the model's settings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--continuation-probe", action="store_true",
                   help="the continuation model alone on rendered slow clips (translations): travel ratio per window")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--save-videos", default=None, metavar="DIR", help="write every video as NNN-ok|no.mp4")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.num < 1 or args.frames < 1 or (args.frames - 1) % 4:
        raise UsageError("--num must be >= 1 and --frames 4n + 1")
    check_finite_number(args.window_noise, "--window-noise", 0, 10)
    if args.continuation_probe and args.save_videos:
        raise UsageError("--save-videos writes chained videos; --continuation-probe makes none (drop one of them)")
    if not os.path.isdir(args.model):
        raise UsageError(f"model folder not found: {args.model}")
    outputs = Outputs(overwrite=args.overwrite, inputs=[args.model])
    if args.json:
        outputs.check(args.json, "--json report", suffixes=(".json",))
    if args.save_videos:
        outputs.check_folder(args.save_videos, "--save-videos")

    import torch

    from opensora.pipelines import OpenSoraPipeline
    from opensora.pipelines.defaults import continuation_folder, sampling_defaults
    from opensora.pipelines.long_video import ContinuationChain, continuation_pipeline
    from opensora.synthetic.long_check import analyse_long, summarise
    from opensora.synthetic.shapes import heldout_triples, spread_train_triples
    from opensora.synthetic.vocabulary import slow_prompts
    from wfvae.io.frames import to_uint8
    from wfvae.models.checkpoint import write_json_atomic

    sampling = sampling_defaults(args.model)
    folder = args.continuation_model or continuation_folder(args.model, sampling)
    if folder is None or not os.path.isdir(folder):
        raise UsageError(f"continuation model folder not found: {folder} (give --continuation-model)")
    overlap = args.overlap if args.overlap is not None else int(sampling.get("overlap", 2))
    noise = args.window_noise if args.window_noise is not None else float(sampling.get("window_noise", 0.0))
    first = OpenSoraPipeline.from_pretrained(args.model)
    cont = continuation_pipeline(first, folder)
    for pipe in (first, cont):
        pipe.set_progress_bar_config(disable=True)
    chain = ContinuationChain(cont, first, overlap=overlap, noise_strength=noise)
    call = {"preset": args.preset} if args.preset else {}
    if args.steps is not None:
        call["num_inference_steps"] = args.steps
    triples = spread_train_triples(90) if args.tuning else heldout_triples()
    if args.continuation_probe:
        return _probe(cont, chain, [t for t in triples if t[2] not in ("grow", "shrink")], args, call, outputs)
    prompts = slow_prompts(triples[:args.num] if args.tuning else triples, args.num, seed=args.seed)
    start = time.time()
    reports = []
    print(f"{'ok':3} {'seam':4} {'windows':>8} {'boundary':>8} {'inside':>8}  prompt")
    for i, (prompt, colour, motion, _shape) in enumerate(prompts):
        video = torch.cat(list(chain.frames(prompt, args.frames, seed=args.seed + i, **call)), dim=2)[0]
        frames = to_uint8(video)                                                  # (T, H, W, 3)
        r = analyse_long(frames, chain.window_frames, overlap, colour, motion)
        r.update(prompt=prompt, colour=colour, motion=motion)
        reports.append(r)
        print(f"{'yes' if r['ok'] else 'no':3} {'yes' if r['seamless'] else 'no':4} {r['windows_ok']:>8.0%} "
              f"{r['max_boundary_step']:>8.3f} {r['max_inside_step']:>8.3f}  {prompt}  "
              f"[{' '.join(w['colour'][:3] + '/' + w['motion'] for w in r['windows'])}]", flush=True)
        if args.save_videos:
            from wfvae.io.video import VideoWriter

            outputs.make_folder(args.save_videos)
            with VideoWriter(os.path.join(args.save_videos, f"{i:03d}-{'ok' if r['ok'] else 'no'}.mp4"),
                             fps=sampling.get("fps", 8.0)) as writer:
                writer.write(video)
    s = summarise(reports)
    print(f"windows right {s['windows_ok']:.1%} ({s['windows']})  seamless {s['seamless']:.1%}  videos right "
          f"{s['videos_ok']:.1%} ({s['videos']})  mean centroid step: boundary {s['mean_boundary_step']:.4f}, "
          f"inside {s['mean_inside_step']:.4f}")
    print(f"{args.frames} frames, overlap {overlap}, window noise {noise:g}, {time.time() - start:.0f} s, "
          f"{time.strftime('%Y-%m-%d')}, cpu")
    if args.json:
        outputs.make_parent(args.json)
        write_json_atomic({"summary": s, "videos": reports, "overlap": overlap, "window_noise": noise,
                           "frames": args.frames}, args.json, indent=1)
    return 0


def _probe(cont, chain, triples, args, call, outputs) -> int:
    from opensora.synthetic.long_check import continuation_travel
    from opensora.synthetic.vocabulary import slow_prompts
    from wfvae.models.checkpoint import write_json_atomic

    start, kept = time.time(), chain.condition_frames()
    report = continuation_travel(cont, slow_prompts(triples, args.num, seed=args.seed), kept=kept, seed=args.seed,
                                 **call)
    for r in report["rows"]:
        print(f"{r['ratio']:>6.2f}  {r['motion']:5}  {r['prompt']}")
    print(f"travel ratio mean {report['mean_ratio']:.2f}, static (< 0.25) {report['static']:.0%}, wrong way "
          f"{report['wrong_way']:.0%} ({len(report['rows'])} windows, {kept} kept frame(s)); {time.time() - start:.0f} "
          f"s, {time.strftime('%Y-%m-%d')}, cpu")
    if args.json:
        outputs.make_parent(args.json)
        write_json_atomic({**report, "kept": kept}, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
