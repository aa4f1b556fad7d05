"""Memory and time of chained long-video sampling (:mod:`opensora.pipelines.long_video`) against the length.

    python benchmarks/long_video.py                          # N = 65, 129, 257 with the shipped model, CPU
    python benchmarks/long_video.py --frames 65 129 --steps 2

Each length runs in a fresh process: the shipped text-to-video pipeline makes window 0 and the shipped
continuation model (``assets/models/opensora-continuation``) continues; frames are written to an H.264 file as they
are decoded. Reported: windows, wall time, and the growth of the process's peak RSS above what it held once the
models were loaded (flat in N when nothing accumulates). The figures are about memory and time; quality is
measured by ``tools/eval_long_video.py``.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from common import header, run_child_case, run_in_subprocess

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "models", "opensora-t2v")
CONTINUATION = os.path.join(os.path.dirname(SHIPPED), "opensora-continuation")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(spec: dict) -> dict:
    import torch

    from opensora.pipelines import OpenSoraPipeline
    from opensora.pipelines.long_video import ContinuationChain, continuation_pipeline
    from wfvae.io.video import VideoWriter

    torch.set_num_threads(spec["threads"])
    first = OpenSoraPipeline.from_pretrained(SHIPPED)
    first.set_progress_bar_config(disable=True)
    cont = continuation_pipeline(first, CONTINUATION)
    cont.set_progress_bar_config(disable=True)
    chain = ContinuationChain(cont, first, overlap=spec["overlap"])
    base = _rss_mib()
    start = time.perf_counter()
    frames = 0
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(os.path.join(tmp, "long.mp4"), fps=8) as writer:
        for chunk in chain.frames("a red ball moving slowly to the right", spec["frames"], seed=0,
                                  num_inference_steps=spec["steps"]):
            writer.write(chunk[0])
            frames += chunk.shape[2]
    return {"frames": frames, "windows": chain.num_windows(spec["frames"]), "seconds": time.perf_counter() - start,
            "loaded_mib": base, "growth_mib": _rss_mib() - base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[65, 129, 257])
    p.add_argument("--steps", type=int, default=4, help="sampling steps per window (memory does not depend on it)")
    p.add_argument("--overlap", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if run_child_case(args, run_case):
        return
    header("Chained long-video sampling: peak RSS growth vs length (shipped model, 17-frame windows)", "cpu", 0, 1)
    print("| frames | windows | steps/window | wall s | RSS after loading MiB | peak growth MiB |")
    print("|---|---|---|---|---|---|")
    for n in args.frames:
        r = run_in_subprocess(__file__, dict(frames=n, steps=args.steps, overlap=args.overlap, threads=args.threads))
        if "error" in r:
            print(f"| {n} | error: {r['error']} |||||")
            continue
        assert r["frames"] == n, r
        print(f"| {n} | {r['windows']} | {args.steps} | {r['seconds']:.1f} | {r['loaded_mib']:.0f} | "
              f"{r['growth_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
