"""WF-VAE encode/decode time and peak memory by shape, dtype and chunking, ours and (optionally) the published code's
on the same weights.

    python benchmarks/vae.py                                # GPU: the issue's table (WF-VAE-L, bf16)
    python benchmarks/vae.py --device cpu --model tiny --shapes 9x64x64 17x128x128
    python benchmarks/vae.py --shapes 33x512x512 --dtypes bfloat16 float32 --published /path/to/WF-VAE

Random weights (seed 0), saved once to ``--weights`` so that ``--published PATH`` (a checkout of
PKU-YuanGroup/WF-VAE) loads the same ones; batch 1, ``--warmup`` untimed runs then the median of ``--repeats``.
``float32`` on CUDA means TF32 matmuls and convolutions (what the published figures call fp32); cuDNN autotuning is
on unless ``--no-cudnn-benchmark``. Chunked rows (``--chunks N``) use our ``latent_chunk=N`` and the published
``enable_tiling()`` (its own chunk). Peak memory is the CUDA allocator's peak above the weights, or on the CPU the
growth of the process's peak RSS above the loaded model; on the CPU each case runs in a fresh process, on CUDA one
process per implementation and dtype (the allocator's counter is reset per case). Prints a Markdown table with the
device, date and command line.
"""
from __future__ import annotations

import argparse
import contextlib
import io

from common import (add_timing_args, fast_math, header, measure, published_wfvae, random_wfvae_folder,
                    run_child_case, run_in_subprocess, vae_inputs)

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
    """Time one (implementation, op, shape, dtype, chunk) case in this process."""
    import torch

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    fast_math(device, spec.get("cudnn_benchmark", True))
    torch.set_grad_enabled(False)
    if spec.get("published"):
        vae = published_wfvae(spec["published"], spec["weights"], dtype, device)
        if spec["chunk"] is not None:
            vae.enable_tiling()
        quiet = lambda: contextlib.redirect_stdout(io.StringIO())  # noqa: E731 -- it prints shapes per call
        encode = lambda x: vae.encode(x).latent_dist.mean  # noqa: E731
        decode = lambda z: vae.decode(z).sample  # noqa: E731
    else:
        from wfvae import WFVAE

        vae = WFVAE.from_pretrained(spec["weights"], torch_dtype=dtype, device=device).eval()
        quiet = contextlib.nullcontext
        encode = lambda x: vae.encode(x, latent_chunk=spec["chunk"]).latent_dist.mean  # noqa: E731
        decode = lambda z: vae.decode(z, latent_chunk=spec["chunk"]).sample  # noqa: E731
    x = vae_inputs(spec["op"], spec["shape"], vae.config.latent_dim, dtype, device)
    call = encode if spec["op"] == "encode" else decode

    def fn():
        with quiet():
            return call(x)

    return measure(fn, device, spec["warmup"], spec["repeats"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--model", choices=["l16", "s8", "tiny"], default="l16")
    p.add_argument("--shapes", nargs="*", default=None, help="TxHxW cases (default: the GPU table)")
    p.add_argument("--dtypes", nargs="*", default=["bfloat16"])
    p.add_argument("--chunks", nargs="*", default=["none"], help="latent chunk sizes, 'none' = whole video")
    p.add_argument("--ops", nargs="*", default=["encode", "decode"])
    p.add_argument("--published", default=None, help="checkout of PKU-YuanGroup/WF-VAE: measure it too, same weights")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="cuDNN autotuning off (its trial workspaces are a suspect for float32 peaks)")
    p.add_argument("--weights", default=None, help="folder for the random weights (created once)")
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
    weights = random_wfvae_folder(args.model, args.weights or f"/tmp/wfvae_bench_{args.model}")
    impls = [None] + ([args.published] if args.published else [])
    specs = [dict(op=op, shape=shape, dtype=dtype, chunk=chunk, device=device, weights=weights, published=impl,
                  cudnn_benchmark=args.cudnn_benchmark, warmup=args.warmup, repeats=args.repeats)
             for op, shape, dtype, chunk in cases for impl in impls]
    if device == "cuda":  # one child per (implementation, dtype); the allocator's peak is reset per case
        groups = {}
        for i, spec in enumerate(specs):
            groups.setdefault((spec["published"], spec["dtype"]), []).append(i)
        results = [None] * len(specs)
        for members in groups.values():
            for i, res in zip(members, run_in_subprocess(__file__, [specs[i] for i in members])):
                results[i] = res
    else:
        results = [run_in_subprocess(__file__, spec) for spec in specs]
    header(f"WF-VAE benchmark, model {args.model}, batch 1, random weights"
           + ("" if args.cudnn_benchmark else ", cuDNN autotuning off"), device, args.warmup, args.repeats)
    print("| op | shape (TxHxW) | dtype | latent chunk | implementation | median s | peak GiB | ours / published "
          "time, memory | published H100 (issue) |")
    print("|---|---|---|---|---|---|---|---|---|")
    ours = {}
    for spec, res in zip(specs, results):
        key = (spec["op"], spec["shape"], spec["dtype"], spec["chunk"])
        name = "published" if spec["published"] else "ours"
        chunk = spec["chunk"] or "-"
        if spec["published"] and spec["chunk"]:
            chunk = "its own"
        head = f"| {spec['op']} | {spec['shape']} | {spec['dtype']} | {chunk} | {name} |"
        if "error" in res:
            print(f"{head} error: {res['error']} | | | |")
            continue
        ratio = ""
        if spec["published"] and key in ours:
            mine = ours[key]
            ratio = (f"{mine['median_s'] / res['median_s']:.2f}x, "
                     f"{mine['peak_gib'] / res['peak_gib']:.2f}x" if res["peak_gib"] > 0 else "")
        elif not spec["published"]:
            ours[key] = res
        ref = PUBLISHED_H100.get(key[:3], "") if args.model == "l16" else ""
        print(f"{head} {res['median_s']:.3f} | {res['peak_gib']:.2f} | {ratio} | {ref} |", flush=True)


if __name__ == "__main__":
    main()
