"""Reconstruction metrics of a WF-VAE on videos: ``python tools/eval_vae.py MODEL VIDEO|FOLDER|LIST.txt ...``.

    python tools/eval_vae.py assets/models/wfvae-tiny bikes.mp4 carphone_pristine.mp4 --frames 33 --size 256 \
        --json results.json

MODEL is a release folder (``config.json`` + safetensors), a weights file, or a training checkpoint (.ckpt of
``tools/train.py``; EMA weights). Prints the protocol, a table of PSNR / SSIM (and LPIPS with ``--lpips``, which
needs the VGG16 + LPIPS weights, see ``wfvae/training/lpips.py``) per video with the mean, and writes the same as JSON
with
``--json`` (each row with its per-frame PSNR, ``frame_psnr``: a scene cut or a bad first frame shows there).
``--i3d PATH`` (a TorchScript I3D, see ``wfvae.evaluation.evaluate.load_i3d``) adds FVD over the whole set; ``--fvd``
without
``--i3d`` is an error. An existing ``--json`` file is kept unless ``--overwrite``. Bad input: one ``error:`` line,
exit code 2 (``wfvae.cli_support.run_cli``); on a terminal, a progress bar counts the videos.
"""
import os
import sys



def main(argv=None) -> int:
    from wfvae.cli_support import run_cli

    return run_cli(lambda: _main(argv), oom_hint="use a smaller --size or --frames, or --device cpu")


def _main(argv) -> int:
    from wfvae.cli_support import ErrorParser, Outputs, UsageError, parse_device, parse_dtype
    from wfvae.inference import DEFAULT_LATENT_CHUNK

    p = ErrorParser(description="Evaluate WF-VAE reconstructions (PSNR, SSIM, LPIPS, FVD).")
    p.add_argument("model", help="WF-VAE folder, weights file or training .ckpt")
    p.add_argument("inputs", nargs="+", help="videos, folders or .txt lists")
    p.add_argument("--frames", type=int, default=33, help="frames per video (1 + 4n; default 33)")
    p.add_argument("--size", type=int, default=256, help="short-side resize + centre crop (default 256)")
    p.add_argument("--sample-rate", type=int, default=1, help="take every k-th source frame (default 1)")
    p.add_argument("--start", type=int, default=0, help="first source frame (default 0)")
    p.add_argument("--latent-chunk", type=int, default=DEFAULT_LATENT_CHUNK,
                   help=f"latent frames per block (default {DEFAULT_LATENT_CHUNK})")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (needs vgg16-397923af.pth and vgg.pth)")
    p.add_argument("--lpips-weights", default=None, help="path of vgg.pth (default: torch hub cache)")
    p.add_argument("--lpips-backbone", default=None, help="path of vgg16-397923af.pth (default: torch hub cache)")
    p.add_argument("--fvd", action="store_true", help="also FVD over the whole set (needs --i3d)")
    p.add_argument("--i3d", default=None, help="TorchScript I3D feature extractor for FVD")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    from tqdm import tqdm

    from wfvae.models.checkpoint import write_json_atomic
    from wfvae.training.data import collect_files
    from wfvae.evaluation.evaluate import Protocol, evaluate, format_table, load_i3d
    from wfvae.training.module import load_vae_weights

    try:
        protocol = Protocol(args.frames, args.size, args.sample_rate, args.start, args.latent_chunk)
        protocol.check()
        if args.fvd and not args.i3d:
            raise ValueError("FVD needs I3D weights: pass --i3d PATH (a TorchScript I3D feature extractor)")
        if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
            raise ValueError(f"--json {args.json}: its folder does not exist; create it or pick another path")
        if args.json:
            Outputs(args.overwrite, inputs=[args.model, *args.inputs]).check(args.json, "--json", (".json",))
        paths = [f[0] for f in collect_files(args.inputs)]
        if not paths:
            raise ValueError(f"no videos found in {' '.join(args.inputs)}")
        device = parse_device(args.device)
        vae = load_vae_weights(args.model).to(device=device, dtype=parse_dtype(args.dtype, device)).eval()
        lpips = None
        if args.lpips:
            from wfvae.training.lpips import LPIPS

            lpips = LPIPS(heads_path=args.lpips_weights, backbone_path=args.lpips_backbone).to(device)
        i3d = load_i3d(args.i3d) if args.i3d else None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    print(protocol.describe(), flush=True)
    with tqdm(paths, desc="evaluate", unit="video", file=sys.stderr, dynamic_ncols=True, disable=None) as bar:
        result = evaluate(vae, bar, protocol, lpips=lpips, i3d=i3d)
    if not result["videos"]:
        raise UsageError(f"no video could be evaluated ({'; '.join(s['reason'] for s in result['skipped'])})")
    print(format_table(result))
    if args.json:
        result["protocol_text"] = protocol.describe()
        write_json_atomic(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
