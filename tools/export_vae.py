"""Export a WF-VAE training checkpoint in the release layout: ``python tools/export_vae.py CKPT OUT_DIR``.

Writes ``OUT_DIR/config.json`` + ``OUT_DIR/diffusion_pytorch_model.safetensors`` (``WFVAE.save_pretrained``) from
the EMA weights of a Lightning checkpoint of ``wfvae.training.WFVAETraining`` (``--raw``: the trained weights
instead). ``WFVAE.from_pretrained(OUT_DIR)`` and the ``wfvae`` command read the result. Bad input: one ``error:``
line, exit code 2.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Export WF-VAE (EMA) weights of a training checkpoint.")
    p.add_argument("ckpt", help="Lightning checkpoint (.ckpt) written by tools/train.py")
    p.add_argument("out_dir", help="folder to write config.json + diffusion_pytorch_model.safetensors into")
    p.add_argument("--raw", action="store_true", help="export the trained weights, not the EMA copy")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = p.parse_args(argv)
    import torch

    from wfvae.training import export_checkpoint

    try:
        export_checkpoint(args.ckpt, args.out_dir, prefer_ema=not args.raw, dtype=getattr(torch, args.dtype))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
