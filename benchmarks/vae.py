"""WF-VAE encode/decode time and peak memory by shape, dtype and chunking.

    python benchmarks/vae.py                                # GPU: the issue's table (WF-VAE-L, bf16)
    python benchmarks/vae.py --device cpu --model tiny --shapes 9x64x64 17x128x128

Each case runs in a fresh process (clean peak-memory counters): random weights, batch 1, ``--warmup`` untimed
runs then the median of ``--repeats``. Peak memory is the CUDA allocator's peak above the weights, or on the
CPU the growth of the process's peak RSS above the loaded model. Prints a Markdown table with the device, date
and command line.
"""
from __future__ import annotations

import argparse
import dataclasses

from common import add_timing_args, fast_math, header, measure, run_child_case, run_in_subprocess, vae_config

GPU_CASES = [  # (op, shape, dtype, latent_chunk)
    ("encode", "33x256x256", "bfloat16", None), ("decode", "33x256x256", "bfloat16", None),
    ("encode", "33x512x512", "bfloat16", None), ("decode", "33x512x512", "bfloat16", None),
    ("decode", "129x512x512", "bfloat16", 4),
    ("encode", "33x512x512", "float32", None), ("decode", "33x512x512", "float32", None),
]
PUBLISHED_H100 = {  # published implementation, one H100 (issue reference), seconds / GiB
    ("encode", "33x256x256", "bfloat16"): "0.029 s", ("decode", "33x256x256", "bfloat16"): "0.074 s",
    ("encode", "33x512x512", "bfloat16"): "0.094 s, 2.2 GiB", ("decode", "33x512x512", "bfloat16"): "0.331 s, 5.7 GiB",
    ("decode", "129x512x512", "bfloat16"): "1.73 s, 2.4 GiB (chunked)",
    ("encode", "33x512x512", "float32"): "0.151 s", ("decode", "33x512x512", "float32"): "0.609 s",
}


def run_case(spec: dict) -> dict:
    """Time one (op, shape, dtype, chunk) case in this process."""
    import torch

    from wfvae import WFVAE

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    fast_math(device)
    torch.manual_seed(0)
    vae = WFVAE(**dataclasses.asdict(vae_config(spec["model"]))).eval().to(device, dtype)
    t, h, w = (int(v) for v in spec["shape"].split("x"))
    f = vae.temporal_compression
    if spec["op"] == "encode":
        x = torch.rand(1, 3, t, h, w, device=device, dtype=dtype) * 2 - 1
        fn = lambda: vae.encode(x, latent_chunk=spec["chunk"]).latent_dist.mean  # noqa: E731
    else:
        x = torch.randn(1, vae.config.latent_dim, 1 + (t - 1) // f, h // 8, w // 8, device=device, dtype=dtype)
        fn = lambda: vae.decode(x, latent_chunk=spec["chunk"]).sample  # noqa: E731
    return measure(fn, device, spec["warmup"], spec["repeats"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--model", choices=["l16", "s8", "tiny"], default="l16")
    p.add_argument("--shapes", nargs="*", default=None, help="TxHxW cases (default: the GPU table)")
    p.add_argument("--dtypes", nargs="*", default=["bfloat16"])
    p.add_argument("--chunks", nargs="*", default=["none"], help="latent chunk sizes, 'none' = whole video")
    p.add_argument("--ops", nargs="*", default=["encode", "decode"])
    add_timing_args(p)
    args = p.parse_args()
    if run_child_case(args, run_case):
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.shapes is None and device == "cuda":
        cases = GPU_CASES
    else:
        shapes = args.shapes or ["9x64x64"]
        cases = [(op, s, d, None if c == "none" else int(c))
                 for s in shapes for d in args.dtypes for c in args.chunks for op in args.ops]
    header(f"WF-VAE benchmark, model {args.model}, batch 1, random weights", device, args.warmup, args.repeats)
    print("| op | shape (TxHxW) | dtype | latent chunk | median s | peak GiB | published H100 |")
    print("|---|---|---|---|---|---|---|")
    for op, shape, dtype, chunk in cases:
        spec = dict(op=op, shape=shape, dtype=dtype, chunk=chunk, device=device, model=args.model,
                    warmup=args.warmup, repeats=args.repeats)
        res = run_in_subprocess(__file__, spec)
        if "error" in res:
            print(f"| {op} | {shape} | {dtype} | {chunk or '-'} | error: {res['error']} | | |")
            continue
        ref = PUBLISHED_H100.get((op, shape, dtype), "") if args.model == "l16" else ""
        print(f"| {op} | {shape} | {dtype} | {chunk or '-'} | {res['median_s']:.3f} | {res['peak_gib']:.2f} | {ref} |",
              flush=True)


if __name__ == "__main__":
    main()
