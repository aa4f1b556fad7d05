"""``wfvae``: encode, decode and reconstruct videos of any length and size, chunk by chunk.

    wfvae reconstruct in.mp4 out.mp4 [--model DIR]
    wfvae encode in.mp4 latents.safetensors --model DIR
    wfvae decode latents.safetensors out.mp4 --model DIR
    wfvae reconstruct a.mp4 b.mp4 c.mp4 out_dir/      # several inputs: OUTPUT is a folder (names from inputs)
    torchrun --nproc_per_node 4 -m wfvae.cli encode videos/*.mp4 latents/   # files split across processes
    torchrun --nproc_per_node 4 -m wfvae.cli decode long.safetensors long.mp4  # one video split in time

Frames stream from the reader through the encoder and decoder to the writer; memory stays bounded whatever
the video length. Any frame count and size works: the video is padded to 1 + 4n frames (repeating the last)
and to multiples of 8 (replicating edges), and the output is trimmed back to the input's frames, size and fps.
A still image (jpg, png, webp, bmp) is a one-frame video (written at --fps, default 25).

Several inputs are done one after the other with the model loaded once, each into ``OUTPUT/<input name><suffix>``.
Started by ``torchrun`` (``WORLD_SIZE`` > 1), process ``RANK`` takes inputs ``RANK, RANK + WORLD_SIZE, ...`` (on
``cuda:LOCAL_RANK`` when the device is CUDA); no communication is needed, and each file's output is exactly what
one process would write. ``decode`` of ONE latents file under ``torchrun`` splits the video in time instead: each
process decodes its consecutive share of the latent frames after a warm-up halo of the decoder's temporal receptive
field (32 latent frames for the released models, decoded and discarded; process 0, which needs none, gets 32 more
frames); process 0 writes the file, receiving the others' frames in order (gloo), and the file equals the
one-process file (:mod:`wfvae.inference.time_split`). Space is not split exactly (the per-frame attention sees
whole frames: tiles approximate); GroupNorm models are refused.

An existing output is kept unless --overwrite is given; outputs appear only when complete. Bad input gives one
``error:`` line and exit code 2 (set WFVAE_TRACEBACK=1 for the traceback).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

from wfvae.cli_support import (ErrorParser, Outputs, UsageError, check_finite_number, check_finite_tensor, commit,
                               cpu_allocation_settings, parse_device, parse_dtype, run_cli, temp_path)
from wfvae.inference import DEFAULT_LATENT_CHUNK
from wfvae.io.latents_file import LATENTS_FORMAT, MAX_SIDE, latents_metadata, read_latents  # noqa: F401 (re-exported)

__all__ = ["main", "build_parser", "read_latents", "ErrorParser", "UsageError", "LATENTS_FORMAT", "DEFAULT_MODEL"]

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "wfvae-tiny"
IMAGE_FPS = 25.0  # frame rate of the one-frame video made from a still image when --fps is not given
MAX_FPS = 1000.0
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
OOM_HINT = "pass --max-memory GB (or smaller --latent-chunk / --tile), or --device cpu"


def build_parser() -> argparse.ArgumentParser:
    p = ErrorParser(prog="wfvae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ErrorParser)

    def common(sp, reads_video: bool):
        sp.add_argument("--model", default=None, help=f"WF-VAE folder or weights file (default: {DEFAULT_MODEL})")
        sp.add_argument("--latent-chunk", type=int, default=None,
                        help=f"latent frames per chunk (4 video frames each); exact, default {DEFAULT_LATENT_CHUNK}")
        sp.add_argument("--tile", type=int, default=None, help="spatial tile size in pixels (multiple of 8)")
        sp.add_argument("--tile-overlap", type=int, default=None,
                        help="tile overlap in pixels (default tile/4); needs --tile")
        sp.add_argument("--max-memory", type=float, default=None, metavar="GB",
                        help="pick chunk and tile sizes whose estimated peak fits this many GB")
        sp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on CUDA, float32 on CPU")
        sp.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
        if reads_video:
            sp.add_argument("--start", type=int, default=0, help="first frame to read")
            sp.add_argument("--frames", type=int, default=None, help="number of frames to read (default: all)")
            sp.add_argument("--size", default=None, metavar="HxW",
                            help=f"resize short side and centre-crop to HxW (at most {MAX_SIDE} per side)")
            sp.add_argument("--fps", type=float, default=None,
                            help=f"resample to this frame rate (a still image: its rate, default {IMAGE_FPS:g})")
        sp.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    def writes_video(sp):
        sp.add_argument("--crf", type=int, default=18, help="H.264 constant rate factor of the output (default 18)")
        sp.add_argument("--lossless", action="store_true",
                        help="lossless H.264 (4:4:4, qp 0): the file holds the decoded frames up to RGB/YUV rounding")

    r = sub.add_parser("reconstruct", help="encode and decode a video; prints PSNR against the input")
    r.add_argument("input", nargs="+", help="video(s) or image(s); with several, OUTPUT is a folder")
    r.add_argument("output")
    common(r, True)
    writes_video(r)
    e = sub.add_parser("encode", help="encode a video to latents (.safetensors with metadata)")
    e.add_argument("input", nargs="+", help="video(s) or image(s); with several, OUTPUT is a folder")
    e.add_argument("output")
    common(e, True)
    d = sub.add_parser("decode", help="decode latents written by 'wfvae encode' to a video")
    d.add_argument("input", nargs="+", help="latents file(s); with several, OUTPUT is a folder")
    d.add_argument("output")
    common(d, False)
    writes_video(d)
    return p


# ---------------------------------------------------------------------------------------------- checks
def _parse_size(text: Optional[str]):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 256x256, got {text!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"--size must be positive, got {text!r}")
    if max(h, w) > MAX_SIDE:
        raise UsageError(f"--size {text} is too large: at most {MAX_SIDE} pixels per side")
    return h, w


def _check_flags(args) -> None:
    """Every flag checked before anything is opened, loaded or written."""
    if getattr(args, "crf", 18) not in range(52):
        raise UsageError(f"--crf must be an integer from 0 to 51 (H.264), got {args.crf}")
    if args.latent_chunk is not None and args.latent_chunk < 1:
        raise UsageError(f"--latent-chunk must be >= 1, got {args.latent_chunk}")
    if args.tile_overlap is not None and args.tile is None:
        raise UsageError("--tile-overlap needs --tile (the tile size in pixels)")
    if args.tile is not None and (args.tile < 16 or args.tile % 8):
        raise UsageError(f"--tile must be a multiple of 8 pixels, at least 16, got {args.tile}")
    if args.tile_overlap is not None and (args.tile_overlap % 8 or not 0 <= args.tile_overlap < args.tile):
        raise UsageError(f"--tile-overlap must be a multiple of 8 from 0 to below --tile, got {args.tile_overlap}")
    check_finite_number(args.max_memory, "--max-memory", 0, low_open=True)
    if args.command != "decode":
        if args.start < 0:
            raise UsageError(f"--start must be >= 0, got {args.start}")
        if args.frames is not None and args.frames < 1:
            raise UsageError(f"--frames must be >= 1, got {args.frames}")
        check_finite_number(args.fps, "--fps", 0, MAX_FPS, low_open=True)
        args.size_hw = _parse_size(args.size)
    if args.device is not None and not args.device.strip():
        raise UsageError("--device is empty: give cpu, cuda or cuda:i (or leave it out)")


def _model_path(args) -> str:
    path = args.model or str(DEFAULT_MODEL)
    if not os.path.exists(path):
        hint = "" if args.model else " (the shipped model is missing: pass --model with a WF-VAE folder)"
        raise UsageError(f"model not found: {path}{hint}")
    return path


def _model_files(path: str):
    from wfvae.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return [path, os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, CONFIG_NAME)]


def _load_model(path, device, dtype, cache: Optional[dict] = None):
    """The model, loaded once per ``(path, device, dtype)`` when a ``cache`` dict is given (several inputs)."""
    from wfvae.models.autoencoder import WFVAE

    key = (os.path.abspath(path), str(device), str(dtype))
    if cache is not None and key in cache:
        return cache[key]
    try:
        vae = WFVAE.from_pretrained(path, dtype=dtype, device=device)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot load model {path}: {text[:300]}") from None
    if cache is not None:
        cache[key] = vae
    return vae


def _plan(args, vae, height, width, num_latent, mode):
    """Chunk and tile sizes from the flags or the memory budget."""
    from wfvae.inference.memory import plan

    if args.max_memory is None:
        return args.latent_chunk or DEFAULT_LATENT_CHUNK, args.tile, args.tile_overlap, None
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    try:
        chosen = plan(vae.config.base_channels, vae.temporal_compression, height, width, vae.dtype, args.max_memory,
                      weights, mode, num_latent, config=vae.config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return (args.latent_chunk or chosen.latent_chunk, args.tile or chosen.tile,
            args.tile_overlap if args.tile else chosen.tile_overlap, chosen)


def _open_reader(args):
    from wfvae.io.video import VideoReadError, VideoReader

    if not os.path.isfile(args.input):
        raise UsageError(f"input not found: {args.input}")
    try:
        reader = VideoReader(args.input, start=args.start, num_frames=args.frames, fps=args.fps, size=args.size_hw)
    except (VideoReadError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if reader.num_frames < 1:
        raise UsageError(f"no frames to read from {args.input} (start {args.start} is past the end?)")
    if max(reader.size) > MAX_SIDE:
        raise UsageError(f"{args.input} is {reader.size[0]}x{reader.size[1]}: more than {MAX_SIDE} pixels per side; "
                         f"pass --size HxW")
    if reader.fps is None:  # a still image: a one-frame video
        reader.fps = args.fps or IMAGE_FPS
    return reader


def _aligned_video_chunks(reader, vae, latent_chunk, device, dtype) -> Iterator:
    """Reader frames, padded to 1 + 4n frames and multiples of 8, as encoder-aligned (1, 3, t, H', W') chunks."""
    import torch

    from wfvae.inference.padding import pad_video, padded_shape

    total = padded_shape(reader.num_frames, 1, 1, vae.temporal_compression)[0]
    bounds = vae.video_chunk_bounds(total, latent_chunk)
    sizes = [b - a for a, b in bounds]
    buf, have, last = [], 0, None
    for frames in reader.iter_chunks(max(sizes)):
        frames = pad_video(frames.unsqueeze(0), 1, vae.spatial_compression)[0]
        buf.append(frames)
        have += frames.shape[2]
        last = frames[:, :, -1:]
        while sizes and have >= sizes[0]:
            chunk = torch.cat(buf, dim=2)
            n = sizes.pop(0)
            yield chunk[:, :, :n].to(device, dtype)
            buf, have = [chunk[:, :, n:]], chunk.shape[2] - n
    if last is None:
        raise UsageError(f"could not read any frame from {reader.path}")
    while sizes:  # repeat the last frame to reach 1 + 4n frames
        n = sizes.pop(0)
        chunk = torch.cat(buf + [last.expand(-1, -1, n - have, -1, -1)], dim=2)
        yield chunk.to(device, dtype)
        buf, have = [], 0


class _Trim:
    """Cuts decoded frames back to the original frame count and size; optionally accumulates PSNR."""

    def __init__(self, num_frames, height, width):
        self.left, self.h, self.w = num_frames, height, width
        self.sse, self.count, self.pending = 0.0, 0, []
        self.ssim_sum, self.ssim_frames = 0.0, 0

    def __call__(self, frames):
        """Decoded (1, 3, t, H', W') -> float32 CPU (3, t', h, w); non-finite values are an error (nothing written)."""
        check_finite_tensor(frames, "the model's decoded video")
        frames = frames[0, :, : self.left, : self.h, : self.w].float().clamp(-1, 1).cpu()
        self.left -= frames.shape[1]
        return frames

    def compare(self, output) -> None:
        """PSNR bookkeeping: ``pending`` holds input frames (3, t, H, W) not yet matched by output frames."""
        import torch

        from wfvae.evaluation.metrics import SSIM_WINDOW, frame_ssim

        ref = torch.cat(self.pending, dim=1) if self.pending else output[:, :0]
        n = output.shape[1]
        diff = (ref[:, :n].float() - output) / 2  # [-1, 1] -> [0, 1] scale
        self.sse += float(diff.pow(2).sum())
        self.count += diff.numel()
        if min(self.h, self.w) >= SSIM_WINDOW:
            self.ssim_sum += float(frame_ssim(ref[None, :, :n], output[None], quantize=False).sum())
            self.ssim_frames += n
        self.pending = [ref[:, n:]]

    def ssim(self) -> str:
        return f"{self.ssim_sum / self.ssim_frames:.4f}" if self.ssim_frames else "n/a (frames under 11 px)"

    def psnr(self) -> float:
        mse = self.sse / max(self.count, 1)
        return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _progress(total, quiet, desc):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=desc, disable=quiet, file=sys.stderr, dynamic_ncols=True)


def _start(args, suffixes):
    """Checks the output path (before any heavy work) and the device; returns (outputs, model path, device, dtype)."""
    model = _model_path(args)
    outputs = Outputs(overwrite=args.overwrite, inputs=[args.input] + _model_files(model))
    outputs.check(args.output, suffixes=suffixes)
    device = parse_device(args.device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda" and device.index is None and _launch()[1] > 1:
        device = parse_device(f"cuda:{local_rank}")
    return outputs, model, device, parse_dtype(args.dtype, device)


def _video_job(args, suffixes, mode):
    """Checks the output, opens the reader and the model, and plans chunk/tile sizes for a video input."""
    outputs, model, device, dtype = _start(args, suffixes)
    reader = _open_reader(args)
    vae = _load_model(model, device, dtype, getattr(args, "model_cache", None))
    h, w = reader.size
    n_lat = 1 + -(-(reader.num_frames - 1) // vae.temporal_compression)
    k, tile, overlap, chosen = _plan(args, vae, -(-h // 8) * 8, -(-w // 8) * 8, n_lat, mode)
    if chosen is not None:
        print(f"memory plan: {chosen.describe()}", file=sys.stderr)
    return outputs, device, dtype, reader, vae, (k, tile, overlap)


# ---------------------------------------------------------------------------------------------- commands
def cmd_reconstruct(args) -> None:
    from wfvae.io.video import VideoWriter

    outputs, device, dtype, reader, vae, (k, tile, overlap) = _video_job(args, VIDEO_SUFFIXES, "decode")
    h, w = reader.size
    trim = _Trim(reader.num_frames, h, w)
    inputs = _aligned_video_chunks(reader, vae, k, device, dtype)

    def recorded():  # keep the input frames until the matching output frames arrive, for PSNR
        for chunk in inputs:
            trim.pending.append(chunk[0, :, :, :h, :w].float().cpu())
            yield chunk

    latents = (p[:, : vae.config.latent_dim] for p in vae.encode_stream(recorded(), tile, overlap))
    outputs.make_parent(args.output)
    writer = VideoWriter(args.output, fps=reader.fps, crf=args.crf, lossless=args.lossless)
    with writer, _progress(reader.num_frames, args.quiet, "reconstruct") as bar:
        for frames in vae.decode_stream(latents, tile, overlap):
            frames = trim(frames)
            if frames.shape[1]:
                trim.compare(frames)
                writer.write(frames)
                bar.update(frames.shape[1])
    print(f"{args.output}: {reader.num_frames} frames {h}x{w} @ {reader.fps:g} fps, PSNR {trim.psnr():.2f} dB, "
          f"SSIM {trim.ssim()}")


def cmd_encode(args) -> None:
    import torch
    from safetensors.torch import save_file

    outputs, device, dtype, reader, vae, (k, tile, overlap) = _video_job(args, (".safetensors",), "encode")
    h, w = reader.size
    parts = []
    with _progress(reader.num_frames, args.quiet, "encode") as bar:
        stream = vae.encode_stream(_aligned_video_chunks(reader, vae, k, device, dtype), tile, overlap)
        for params in stream:
            part = params[:, : vae.config.latent_dim].float().cpu()
            check_finite_tensor(part, "the model's encoder output")
            parts.append(part)
            bar.update(min(params.shape[2] * vae.temporal_compression, bar.total - bar.n))
    latents = torch.cat(parts, dim=2).contiguous()
    meta = latents_metadata(vae, reader.num_frames, h, w, reader.fps)
    outputs.make_parent(args.output)
    tmp = temp_path(args.output)
    save_file({"latents": latents}, tmp, metadata=meta)
    commit(tmp, args.output)
    print(f"{args.output}: latents {tuple(latents.shape)} for {reader.num_frames} frames {h}x{w}")


def cmd_decode(args) -> None:
    if not os.path.isfile(args.input):  # before anything imports torch: the error comes at once
        raise UsageError(f"latents file not found: {args.input}")
    from wfvae.io.video import VideoWriter

    outputs, model, device, dtype = _start(args, VIDEO_SUFFIXES)
    vae = _load_model(model, device, dtype, getattr(args, "model_cache", None))
    latents, meta = read_latents(args.input, vae)
    num_frames, h, w, fps = int(meta["num_frames"]), int(meta["height"]), int(meta["width"]), float(meta["fps"])
    k, tile, overlap, chosen = _plan(args, vae, latents.shape[3] * 8, latents.shape[4] * 8, latents.shape[2], "decode")
    if chosen is not None:
        print(f"memory plan: {chosen.describe()}", file=sys.stderr)
    trim = _Trim(num_frames, h, w)
    chunks = (latents[:, :, i:i + k].to(device, dtype) for i in range(0, latents.shape[2], k))
    outputs.make_parent(args.output)
    writer = VideoWriter(args.output, fps=fps, crf=args.crf, lossless=args.lossless)
    with writer, _progress(num_frames, args.quiet, "decode") as bar:
        for frames in vae.decode_stream(chunks, tile, overlap):
            frames = trim(frames)
            if frames.shape[1]:
                writer.write(frames)
                bar.update(frames.shape[1])
    print(f"{args.output}: {num_frames} frames {h}x{w} @ {fps:g} fps")


# ---------------------------------------------------------------------------------------------- several inputs
SUFFIX = {"reconstruct": ".mp4", "encode": ".safetensors", "decode": ".mp4"}


def _launch():
    """``(rank, world size)`` of a ``torchrun`` launch, ``(0, 1)`` otherwise."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UsageError("RANK and WORLD_SIZE must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world


def _jobs(args) -> list:
    """``(input, output)`` pairs: one input to OUTPUT, or several into the folder OUTPUT."""
    inputs = args.input
    if len(inputs) == 1:
        return [(inputs[0], args.output)]
    if os.path.splitext(args.output)[1] or (os.path.exists(args.output) and not os.path.isdir(args.output)):
        raise UsageError(f"with {len(inputs)} inputs OUTPUT must be a folder, got {args.output}")
    names = {}
    for path in inputs:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in names:
            raise UsageError(f"{names[stem]} and {path} would both write {stem}{SUFFIX[args.command]}: "
                             f"rename one or run them separately")
        names[stem] = path
    return [(path, os.path.join(args.output, stem + SUFFIX[args.command])) for stem, path in names.items()]


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    _check_flags(args)
    command = {"reconstruct": cmd_reconstruct, "encode": cmd_encode, "decode": cmd_decode}[args.command]
    jobs = _jobs(args)
    rank, world = _launch()
    if args.command == "decode" and len(jobs) == 1 and world > 1:
        inp, out = jobs[0]  # one video: split in time
        from wfvae.cli_time_split import cmd_decode_split

        return cmd_decode_split(argparse.Namespace(**{**vars(args), "input": inp, "output": out}), rank, world)
    mine = jobs[rank::world]
    if len(jobs) > 1:  # every output is checked before any work (an existing one needs --overwrite)
        model = _model_path(args)
        suffixes = (".safetensors",) if args.command == "encode" else VIDEO_SUFFIXES
        for inp, out in mine:
            Outputs(overwrite=args.overwrite, inputs=[inp] + _model_files(model)).check(out, suffixes=suffixes)
    if world > 1 and not mine:
        print(f"process {rank}: no input left for this process ({len(jobs)} input(s), {world} processes)",
              file=sys.stderr)
    cache: dict = {}
    for inp, out in mine:
        command(argparse.Namespace(**{**vars(args), "input": inp, "output": out, "model_cache": cache}))


def main(argv=None) -> int:
    """The ``wfvae`` command; returns the exit code (0, or 2 with one ``error:`` line on stderr)."""
    cpu_allocation_settings()
    return run_cli(lambda: _main(argv), oom_hint=OOM_HINT)


if __name__ == "__main__":
    sys.exit(main())
