"""``wfvae``: encode, decode and reconstruct videos of any length and size, chunk by chunk.

    wfvae reconstruct in.mp4 out.mp4 [--model DIR]
    wfvae encode in.mp4 latents.safetensors --model DIR
    wfvae decode latents.safetensors out.mp4 --model DIR

Frames stream from the reader through the encoder and decoder to the writer; memory stays bounded whatever
the video length. Any frame count and size works: the video is padded to 1 + 4n frames (repeating the last)
and to multiples of 8 (replicating edges), and the output is trimmed back to the input's frames, size and fps.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import torch

from .metrics import SSIM_WINDOW, frame_ssim

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "wfvae-tiny"
LATENTS_FORMAT = "wfvae-latents-v1"


class UsageError(Exception):
    """Bad input: reported as one ``error:`` line with exit code 2."""


class ErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` (one ``error:`` line, exit 2)."""

    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = ErrorParser(prog="wfvae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ErrorParser)

    def common(sp, reads_video: bool):
        sp.add_argument("--model", default=None, help=f"WF-VAE folder or weights file (default: {DEFAULT_MODEL})")
        sp.add_argument("--latent-chunk", type=int, default=None,
                        help="latent frames per chunk (4 video frames each); exact, default 4")
        sp.add_argument("--tile", type=int, default=None, help="spatial tile size in pixels (multiple of 8)")
        sp.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in pixels (default tile/4)")
        sp.add_argument("--max-memory", type=float, default=None, metavar="GB",
                        help="pick chunk and tile sizes whose estimated peak fits this many GB")
        sp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on CUDA, float32 on CPU")
        sp.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
        if reads_video:
            sp.add_argument("--start", type=int, default=0, help="first frame to read")
            sp.add_argument("--frames", type=int, default=None, help="number of frames to read (default: all)")
            sp.add_argument("--size", default=None, metavar="HxW", help="resize short side and centre-crop to HxW")
            sp.add_argument("--fps", type=float, default=None, help="resample to this frame rate")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    def writes_video(sp):
        sp.add_argument("--crf", type=int, default=18, help="H.264 constant rate factor of the output (default 18)")
        sp.add_argument("--lossless", action="store_true",
                        help="lossless H.264 (4:4:4, qp 0): the file holds the decoded frames up to RGB/YUV rounding")

    r = sub.add_parser("reconstruct", help="encode and decode a video; prints PSNR against the input")
    r.add_argument("input")
    r.add_argument("output")
    common(r, True)
    writes_video(r)
    e = sub.add_parser("encode", help="encode a video to latents (.safetensors with metadata)")
    e.add_argument("input")
    e.add_argument("output")
    common(e, True)
    d = sub.add_parser("decode", help="decode latents written by 'wfvae encode' to a video")
    d.add_argument("input")
    d.add_argument("output")
    common(d, False)
    writes_video(d)
    return p


# ---------------------------------------------------------------------------------------------- helpers
def _parse_size(text: Optional[str]):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 256x256, got {text!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"--size must be positive, got {text!r}")
    return h, w


def _device_dtype(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device must be cpu or cuda[:i], got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda[:i], got {args.device!r}")
    name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, name)


def _load_model(args, device, dtype):
    from .vae import WFVAE

    path = args.model or str(DEFAULT_MODEL)
    if not os.path.exists(path):
        hint = "" if args.model else " (the shipped model is missing: pass --model with a WF-VAE folder)"
        raise UsageError(f"model not found: {path}{hint}")
    try:
        return WFVAE.from_pretrained(path, dtype=dtype, device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UsageError(f"cannot load model {path}: {exc}") from None


def _plan(args, vae, height, width, num_latent, mode):
    """Chunk and tile sizes from the flags or the memory budget."""
    from .memory import plan

    if args.latent_chunk is not None and args.latent_chunk < 1:
        raise UsageError("--latent-chunk must be >= 1")
    if args.max_memory is None:
        return args.latent_chunk or 4, args.tile, args.tile_overlap, None
    if args.max_memory <= 0:
        raise UsageError("--max-memory must be > 0")
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    try:
        chosen = plan(vae.config.base_channels, vae.temporal_compression, height, width, vae.dtype, args.max_memory,
                      weights, mode, num_latent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return (args.latent_chunk or chosen.latent_chunk, args.tile or chosen.tile,
            args.tile_overlap if args.tile else chosen.tile_overlap, chosen)


def _check_output(path: str, suffixes) -> None:
    if not path.lower().endswith(suffixes):
        raise UsageError(f"output {path} must end with {' or '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {folder}: {exc.strerror}") from None


def _open_reader(args):
    from .video_io import VideoReadError, VideoReader

    if not os.path.isfile(args.input):
        raise UsageError(f"input not found: {args.input}")
    if args.start < 0 or (args.frames is not None and args.frames < 1):
        raise UsageError("--start must be >= 0 and --frames >= 1")
    if args.fps is not None and args.fps <= 0:
        raise UsageError("--fps must be > 0")
    try:
        reader = VideoReader(args.input, start=args.start, num_frames=args.frames, fps=args.fps,
                             size=_parse_size(args.size))
    except (VideoReadError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if reader.num_frames < 1:
        raise UsageError(f"no frames to read from {args.input} (start {args.start} is past the end?)")
    return reader


def _aligned_video_chunks(reader, vae, latent_chunk, device, dtype) -> Iterator[torch.Tensor]:
    """Reader frames, padded to 1 + 4n frames and multiples of 8, as encoder-aligned (1, 3, t, H', W') chunks."""
    from .padding import pad_video, padded_shape

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

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames[0, :, : self.left, : self.h, : self.w].float().clamp(-1, 1).cpu()
        self.left -= frames.shape[1]
        return frames

    def compare(self, output: torch.Tensor) -> None:
        """PSNR bookkeeping: ``pending`` holds input frames (3, t, H, W) not yet matched by output frames."""
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


def _video_job(args, suffixes, mode):
    """Checks the output path, opens the reader and the model, and plans chunk/tile sizes for a video input."""
    _check_output(args.output, suffixes)
    device, dtype = _device_dtype(args)
    reader = _open_reader(args)
    vae = _load_model(args, device, dtype)
    h, w = reader.size
    n_lat = 1 + -(-(reader.num_frames - 1) // vae.temporal_compression)
    k, tile, overlap, chosen = _plan(args, vae, -(-h // 8) * 8, -(-w // 8) * 8, n_lat, mode)
    if chosen is not None:
        print(f"memory plan: {chosen.describe()}", file=sys.stderr)
    return device, dtype, reader, vae, (k, tile, overlap)


# ---------------------------------------------------------------------------------------------- commands
def cmd_reconstruct(args) -> None:
    from .video_io import VideoWriter

    device, dtype, reader, vae, (k, tile, overlap) = _video_job(args, (".mp4", ".mkv", ".mov"), "decode")
    h, w = reader.size
    trim = _Trim(reader.num_frames, h, w)
    inputs = _aligned_video_chunks(reader, vae, k, device, dtype)

    def recorded():  # keep the input frames until the matching output frames arrive, for PSNR
        for chunk in inputs:
            trim.pending.append(chunk[0, :, :, :h, :w].float().cpu())
            yield chunk

    latents = (p[:, : vae.config.latent_dim] for p in vae.encode_stream(recorded(), tile, overlap))

    writer = VideoWriter(args.output, fps=reader.fps, crf=args.crf, lossless=args.lossless)
    with writer, _progress(reader.num_frames, args.quiet, "reconstruct") as bar:
        for frames in vae.decode_stream(latents, tile, overlap):
            frames = trim(frames)
            if frames.shape[1]:
                trim.compare(frames)
                writer.write(frames)
                bar.update(frames.shape[1])
    print(f"{args.output}: {reader.num_frames} frames {h}x{w} @ {reader.fps:g} fps, PSNR {trim.psnr():.2f} dB, SSIM {trim.ssim()}")


def cmd_encode(args) -> None:
    from safetensors.torch import save_file

    device, dtype, reader, vae, (k, tile, overlap) = _video_job(args, (".safetensors",), "encode")
    h, w = reader.size
    parts = []
    with _progress(reader.num_frames, args.quiet, "encode") as bar:
        stream = vae.encode_stream(_aligned_video_chunks(reader, vae, k, device, dtype), tile, overlap)
        for params in stream:
            parts.append(params[:, : vae.config.latent_dim].float().cpu())
            bar.update(min(params.shape[2] * vae.temporal_compression, bar.total - bar.n))
    latents = torch.cat(parts, dim=2).contiguous()
    meta = {"format": LATENTS_FORMAT, "fps": repr(float(reader.fps)), "num_frames": str(reader.num_frames),
            "height": str(h), "width": str(w), "model_config": json.dumps(vae.config.to_dict(), sort_keys=True)}
    tmp = args.output + ".tmp"
    try:
        save_file({"latents": latents}, tmp, metadata=meta)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"{args.output}: latents {tuple(latents.shape)} for {reader.num_frames} frames {h}x{w}")


def read_latents(path: str, vae=None):
    """(latents (1, C, t, h, w), metadata) from a ``wfvae encode`` file; checks it matches ``vae``."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise UsageError(f"latents file not found: {path}")
    try:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata() or {}
            latents = fh.get_tensor("latents")
    except Exception as exc:
        raise UsageError(f"cannot read latents {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if meta.get("format") != LATENTS_FORMAT or latents.dim() != 5:
        raise UsageError(f"{path} is not a 'wfvae encode' latents file")
    if vae is not None:
        theirs = json.loads(meta.get("model_config", "{}"))
        if theirs != json.loads(json.dumps(vae.config.to_dict(), sort_keys=True)):
            diff = sorted(k for k in set(theirs) | set(vae.config.to_dict())
                          if theirs.get(k) != vae.config.to_dict().get(k))
            raise UsageError(f"{path} was encoded by a different WF-VAE (config differs in {', '.join(diff)})")
    return latents, meta


def cmd_decode(args) -> None:
    from .video_io import VideoWriter

    _check_output(args.output, (".mp4", ".mkv", ".mov"))
    device, dtype = _device_dtype(args)
    vae = _load_model(args, device, dtype)
    latents, meta = read_latents(args.input, vae)
    num_frames, h, w, fps = int(meta["num_frames"]), int(meta["height"]), int(meta["width"]), float(meta["fps"])
    k, tile, overlap, chosen = _plan(args, vae, latents.shape[3] * 8, latents.shape[4] * 8, latents.shape[2], "decode")
    if chosen is not None:
        print(f"memory plan: {chosen.describe()}", file=sys.stderr)
    trim = _Trim(num_frames, h, w)
    chunks = (latents[:, :, i:i + k] for i in range(0, latents.shape[2], k))
    writer = VideoWriter(args.output, fps=fps, crf=args.crf, lossless=args.lossless)
    with writer, _progress(num_frames, args.quiet, "decode") as bar:
        for frames in vae.decode_stream(chunks, tile, overlap):
            frames = trim(frames)
            if frames.shape[1]:
                writer.write(frames)
                bar.update(frames.shape[1])
    print(f"{args.output}: {num_frames} frames {h}x{w} @ {fps:g} fps")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "crf", 18) not in range(52):
            raise UsageError(f"--crf must be an integer from 0 to 51 (H.264), got {args.crf}")
        {"reconstruct": cmd_reconstruct, "encode": cmd_encode, "decode": cmd_decode}[args.command](args)
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # includes VideoReadError raised while streaming
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        print("error: out of memory: pass --max-memory GB (or smaller --latent-chunk / --tile)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
