"""``wfvae decode`` of ONE latents file under ``torchrun``: the video split in time across the processes.

Each process decodes its consecutive share of the latent frames after a warm-up halo of the decoder's temporal
receptive field (:mod:`wfvae.inference.time_split`); process 0 writes the file, receiving the others' frames in order
(:mod:`wfvae.inference.frame_relay`). Called by :mod:`wfvae.cli`; the file equals the one a single process writes.
"""
from __future__ import annotations

import os
import sys

from wfvae.cli import VIDEO_SUFFIXES, _load_model, _plan, _progress, _start, _Trim, read_latents
from wfvae.cli_support import UsageError


def cmd_decode_split(args, rank: int, world: int) -> None:
    """``torchrun --nproc_per_node N -m wfvae.cli decode LATENTS OUT``: process ``rank`` decodes its share of the
    video's time (:mod:`wfvae.inference.time_split`: its latent frames after a discarded warm-up halo) while the
    others decode theirs; process 0 writes its frames, then receives the others' in order
    (:mod:`wfvae.inference.frame_relay`). The file is the one a single process writes."""
    if not os.path.isfile(args.input):
        raise UsageError(f"latents file not found: {args.input}")
    import torch.distributed as dist

    from wfvae.inference.frame_relay import FrameSpool, all_ok, receive_frames, send_frames
    from wfvae.inference.time_split import iter_time_slice, plan_time_split
    from wfvae.io.frames import to_uint8
    from wfvae.io.video import VideoWriter

    outputs, model, device, dtype = _start(args, VIDEO_SUFFIXES)
    vae = _load_model(model, device, dtype)
    latents, meta = read_latents(args.input, vae)
    num_frames, h, w, fps = int(meta["num_frames"]), int(meta["height"]), int(meta["width"]), float(meta["fps"])
    try:
        parts = plan_time_split(vae.config, latents.shape[2], world=world)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    k, tile, overlap, _ = _plan(args, vae, latents.shape[3] * 8, latents.shape[4] * 8, latents.shape[2], "decode")
    own = [max(0, min(p.frames[1], num_frames) - p.frames[0]) for p in parts]  # frames after trimming
    trim = _Trim(own[rank], h, w)
    mine = (trim(x) for x in iter_time_slice(vae, latents, parts[rank], k, tile, overlap))
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    try:
        if rank == 0:
            print(f"time split: {world} processes, warm-up halo {parts[-1].latents[0] - parts[-1].decoded[0]} latent "
                  f"frames", file=sys.stderr)
            outputs.make_parent(args.output)
            with VideoWriter(args.output, fps=fps, crf=args.crf, lossless=args.lossless) as writer, \
                    _progress(num_frames, args.quiet, "decode") as bar:

                def write_mine():
                    for frames in mine:
                        writer.write(frames)
                        bar.update(frames.shape[1])

                _all_or_none(write_mine, all_ok)
                for p in parts[1:]:
                    for frames in receive_frames(p.rank, own[p.rank], (h, w)):
                        writer.write_uint8(frames)
                        bar.update(frames.shape[0])
            print(f"{args.output}: {num_frames} frames {h}x{w} @ {fps:g} fps")
        else:
            with FrameSpool() as spool:

                def spool_mine():
                    for frames in mine:
                        spool.write(to_uint8(frames))

                _all_or_none(spool_mine, all_ok)
                send_frames(spool, dst=0)
    finally:
        if created:
            dist.destroy_process_group()


def _all_or_none(work, all_ok) -> None:
    """Runs ``work``, then learns from every process whether all of theirs succeeded (raises if not)."""
    try:
        work()
    except Exception:
        all_ok(False)
        raise
    if not all_ok(True):
        raise UsageError("another process failed (its error is above); nothing was written")
