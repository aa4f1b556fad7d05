"""Measure a WF-VAE's per-channel latent mean/std on videos and (with ``--write``) store them as the diffusion-space
``shift`` / ``scale`` of its config.json (see :mod:`wfvae.evaluation.latent_stats`).

    python tools/latent_stats.py assets/models/opensora-t2v/vae /work/t2v_data/videos --max-files 200 --frames 17 \
        --size 96 --write
"""
import argparse
import os
import sys



def main(argv=None) -> int:
    from wfvae.cli_support import run_cli

    return run_cli(lambda: _main(argv), oom_hint="use a smaller --size or --frames")


def _main(argv) -> int:
    from wfvae.cli import ErrorParser, UsageError

    p = ErrorParser(prog="latent_stats", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vae", help="WF-VAE folder (config.json + safetensors)")
    p.add_argument("inputs", nargs="+", help="videos, folders or .txt lists")
    p.add_argument("--frames", type=int, default=17, help="frames per clip (1 + 4n)")
    p.add_argument("--size", type=int, default=None, help="short-side resize + centre crop (multiple of 8)")
    p.add_argument("--max-files", type=int, default=None, help="use the first N files (stable order)")
    p.add_argument("--write", action="store_true", help="write shift = mean, scale = 1/std into VAE/config.json")
    args = p.parse_args(argv)
    import torch
    from tqdm import tqdm

    from wfvae import WFVAE
    from wfvae.training.data import collect_files
    from wfvae.evaluation.latent_stats import latent_statistics, write_latent_stats
    from wfvae.io.video import VideoReadError, read_video

    if args.frames < 1 or (args.frames - 1) % 4:
        raise UsageError(f"--frames must be 1 + 4n, got {args.frames}")
    if args.size is not None and (args.size < 8 or args.size % 8):
        raise UsageError(f"--size must be a positive multiple of 8, got {args.size}")
    if not os.path.isfile(os.path.join(args.vae, "config.json")):
        raise UsageError(f"no config.json in VAE folder {args.vae}")
    paths = [f[0] for f in collect_files(args.inputs)][:args.max_files]
    if not paths:
        raise UsageError(f"no videos found in {' '.join(args.inputs)}")
    vae = WFVAE.from_pretrained(args.vae).eval()
    size = (args.size, args.size) if args.size else None

    def clips():
        for path in tqdm(paths, desc="encoding", unit="clip"):
            try:
                clip = read_video(path, num_frames=args.frames, size=size)
            except VideoReadError as exc:
                print(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            if clip.shape[1] == args.frames and clip.shape[2] % 8 == 0 and clip.shape[3] % 8 == 0:
                yield clip

    with torch.inference_mode():
        mean, std = latent_statistics(vae, clips())
    print("channel  mean      std")
    for c, (m, s) in enumerate(zip(mean.tolist(), std.tolist())):
        print(f"{c:7d}  {m:+.4f}  {s:.4f}")
    if args.write:
        write_latent_stats(args.vae, mean, std)
        print(f"{args.vae}/config.json: shift and scale written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
