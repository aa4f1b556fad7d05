"""Peak memory of one WF-VAE encode or decode, ours and (optionally) the published code's, on the same weights.

    python benchmarks/memory.py --model l16 --op decode --shape 33x256x256
    python benchmarks/memory.py --model l16 --op decode --shape 129x256x256 --latent-chunk 2 \\
        --published /tmp/published_wfvae

The peak is the largest sum of live tensor storages created during the call (:mod:`wfvae.inference.memory_probe`,
any device; weights and the input are not counted), and on CUDA also the allocator's peak above the state before
the call. Random weights (seed 0) are saved once to ``--weights`` (default ``/tmp/wfvae_memory_<model>``) and both
implementations load that folder. ``--published PATH`` (a checkout of PKU-YuanGroup/WF-VAE) adds its figures for
the same input: the whole clip with tiling off, or, when ``--latent-chunk`` is given, its own chunked mode
(``enable_tiling()``, which picks its own chunk size); the column is skipped when the path is absent. Also printed:
the ``--max-memory`` planner's estimate (:mod:`wfvae.inference.memory`) for the same case, and the largest
difference between the two outputs.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import sys
import time

import torch

from wfvae.inference.memory import estimate_bytes, simulated_peak_bytes
from wfvae.inference.memory_probe import peak_memory

from common import published_wfvae, random_wfvae_folder, vae_inputs

MIB = 1024 ** 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["l16", "s8", "tiny"], default="l16")
    p.add_argument("--op", choices=["encode", "decode"], default="decode")
    p.add_argument("--shape", default="33x256x256", help="video frames x height x width (TxHxW)")
    p.add_argument("--latent-chunk", type=int, default=None, help="latent frames per chunk (default: whole clip)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or meta: shapes only, no arithmetic (seconds for any "
                   "size; the live-tensor peak is the same as on the CPU, since the same operators run)")
    p.add_argument("--weights", default=None, help="folder for the random weights (created once)")
    p.add_argument("--published", default=None, help="checkout of PKU-YuanGroup/WF-VAE to measure too")
    args = p.parse_args()

    from wfvae import WFVAE

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    folder = random_wfvae_folder(args.model, args.weights or f"/tmp/wfvae_memory_{args.model}")
    torch.set_grad_enabled(False)
    vae = WFVAE.from_pretrained(folder, torch_dtype=dtype, device=device)
    x = vae_inputs(args.op, args.shape, vae.config.latent_dim, dtype, device)
    k, base, config = args.latent_chunk, vae.config.base_channels, dict(vae.config)
    results = {}

    def ours():
        if args.op == "encode":
            results["ours"] = vae.encode(x, latent_chunk=k).latent_dist.mean
        else:
            results["ours"] = vae.decode(x, latent_chunk=k).sample

    start = time.perf_counter()
    mine = peak_memory(ours, device)
    ours_s = time.perf_counter() - start
    del vae

    theirs, theirs_s, chunk_note = None, None, ""
    if args.published and os.path.isdir(args.published):
        model = published_wfvae(args.published, folder, dtype, device)
        if k is not None:
            model.enable_tiling()

        def published():
            with contextlib.redirect_stdout(io.StringIO()):  # it prints chunk sizes and shapes
                if args.op == "encode":
                    results["published"] = model.encode(x).latent_dist.mean
                else:
                    results["published"] = model.decode(x).sample

        start = time.perf_counter()
        theirs = peak_memory(published, device)
        theirs_s = time.perf_counter() - start
        if k is not None:
            chunk_note = f" (its own chunk: {model.t_chunk_enc if args.op == 'encode' else model.t_chunk_dec})"

    t, h, w = (int(v) for v in args.shape.lower().split("x"))
    frames = t if k is None else min(t, 4 * k)
    est = estimate_bytes(base, frames, h, w, dtype, args.op)

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "meta (shapes only, no arithmetic)" if device.type == "meta"
            else f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    print(f"# WF-VAE peak memory: model {args.model}, {args.op} {args.shape}, {args.dtype}, "
          f"latent chunk {k or 'whole clip'}")
    print(f"device: {name}; torch {torch.__version__}; date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"ours: live-tensor peak {mine.live_tensors / MIB:.1f} MiB"
          + (f", CUDA allocator peak {mine.cuda_allocator / MIB:.1f} MiB" if mine.cuda_allocator is not None else "")
          + f" ({ours_s:.1f} s)")
    if theirs is not None:
        print(f"published{chunk_note}: live-tensor peak {theirs.live_tensors / MIB:.1f} MiB"
              + (f", CUDA allocator peak {theirs.cuda_allocator / MIB:.1f} MiB"
                 if theirs.cuda_allocator is not None else "") + f" ({theirs_s:.1f} s)")
        print(f"ratio ours / published: {mine.live_tensors / theirs.live_tensors:.3f}")
        if device.type != "meta":  # shape-only run: no values to compare
            diff = (results["ours"].float() - results["published"].float()).abs().max().item()
            print(f"max |ours - published|: {diff:.2e}")
    elif args.published:
        print(f"published: skipped ({args.published} not found)")
    lat = 1 + (t - 1) // 4
    sim = simulated_peak_bytes(config, args.op, h, w, dtype, k or lat, lat)
    print(f"--max-memory planner (meta simulation of the streamed run): {sim / MIB:.1f} MiB, "
          f"{sim / mine.live_tensors:.3f}x the measured peak")
    print(f"linear rule of thumb ({frames} frames in flight): {est / MIB:.1f} MiB, "
          f"{est / mine.live_tensors:.3f}x the measured peak")


if __name__ == "__main__":
    main()
