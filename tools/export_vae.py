"""Export a WF-VAE training checkpoint in the release layout: ``python tools/export_vae.py CKPT OUT_DIR``.

Writes ``OUT_DIR/config.json`` + ``OUT_DIR/diffusion_pytorch_model.safetensors`` (``WFVAE.save_pretrained``) from
the EMA weights of a Lightning checkpoint of ``wfvae.training.WFVAETraining`` (``--raw``: the trained weights
instead). ``WFVAE.from_pretrained(OUT_DIR)`` and the ``wfvae`` command read the result (the export is loaded back
as its last step). A non-empty OUT_DIR needs ``--overwrite``. Bad input: one ``error:`` line, exit code 2.
"""
import os
import sys



def main(argv=None) -> int:
    from wfvae.cli_support import run_cli

    return run_cli(lambda: _main(argv))


def _main(argv) -> None:
    from wfvae.cli_support import ErrorParser, Outputs, UsageError, default_file_mode

    p = ErrorParser(description="Export WF-VAE (EMA) weights of a training checkpoint.")
    p.add_argument("ckpt", help="Lightning checkpoint (.ckpt) written by tools/train.py")
    p.add_argument("out_dir", help="folder to write config.json + diffusion_pytorch_model.safetensors into")
    p.add_argument("--raw", action="store_true", help="export the trained weights, not the EMA copy")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty folder")
    args = p.parse_args(argv)
    if not os.path.isfile(args.ckpt):
        raise UsageError(f"checkpoint not found: {args.ckpt}")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"{args.out_dir} exists and is not a folder: give a folder to export into")
    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not args.overwrite:
        raise UsageError(f"{args.out_dir} is not empty: pass --overwrite to export into it, or choose a new folder")
    import torch
    from tqdm import tqdm

    from wfvae.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
    from wfvae.training.module import export_checkpoint
    from wfvae.models.autoencoder import WFVAE

    outputs = Outputs(overwrite=True, inputs=[args.ckpt])
    files = [os.path.join(args.out_dir, name) for name in (WEIGHTS_NAME, CONFIG_NAME)]
    for path in files:
        outputs.check(path, "export file")
    with tqdm(total=2, desc="export", unit="step", file=sys.stderr, dynamic_ncols=True, disable=None) as bar:
        bar.set_postfix_str("read checkpoint, write weights")
        outputs.make_folder(args.out_dir)
        try:
            export_checkpoint(args.ckpt, args.out_dir, prefer_ema=not args.raw, dtype=getattr(torch, args.dtype))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        for path in files:  # safetensors writes its files 0600
            os.chmod(path, default_file_mode())
        bar.update()
        bar.set_postfix_str("load back")
        WFVAE.from_pretrained(args.out_dir)
        bar.update()
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    sys.exit(main())
