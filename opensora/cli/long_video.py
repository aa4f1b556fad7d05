"""``opensora-sample --frames N`` beyond the model's window: chained continuation, written as it is made.

    opensora-sample --prompt "a red ball moving slowly to the right" --frames 129 --output long.mp4
    opensora-sample --prompt "..." --frames 129 --save-latents run.safetensors     # resumable
    opensora-sample --prompt "..." --frames 257 --continuation-model DIR --overlap 2 --window-noise 0.0

When ``--frames`` is longer than the model's window (its folder's ``num_frames``, else 93) and a continuation model
is named (``--continuation-model``, or the folder's ``continuation_model``; without one the frames are sampled as
one window, as before) the first window comes from the model (or, with ``--image``, from the continuation model keeping that image as frame 0), and every next
window from an image-condition model (``--continuation-model``, default: the folder's ``continuation_model``)
that keeps the previous window's last ``1 + 4 (overlap - 1)`` decoded frames, the span of its last ``--overlap``
latent frames (:mod:`opensora.pipelines.long_video`).
The VAE decodes the whole chain as one causal stream, and frames go to the file as they are decoded, so memory
does not grow with ``--frames``.

``--save-latents PATH`` rewrites PATH after every window with all windows made so far (one safetensors file; the
run's settings in its metadata). Run the same command again after an interruption and the saved windows are
reused, not sampled again: the video comes out the same. A file from a different run is an error unless
``--overwrite`` is given (then the run starts over).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Dict, List, Optional

from wfvae.cli_support import UsageError, check_finite_number, check_finite_tensor, commit, first_line, temp_path

if TYPE_CHECKING:
    import torch

WINDOWS_FORMAT = "opensora-sample-windows/1"
LONG_VIDEO_KEYS = ("continuation_model", "overlap", "window_noise", "domain")  # sampling keys that are not flags
# Flags of opensora-sample that a chained run does not take, with why.
UNSUPPORTED = {"controller": "structure control", "video": "a condition video", "mask_type": "--mask-type",
               "cond_frames": "--cond-frames", "from_latents": "--from-latents", "refine_prompt": "--refine-prompt"}


def add_long_video_arguments(parser) -> None:
    g = parser.add_argument_group("long videos (--frames beyond the model's window)")
    g.add_argument("--continuation-model", default=None, metavar="DIR",
                   help="image-condition model folder that continues each window (default: the model folder's "
                        "continuation_model)")
    g.add_argument("--overlap", type=int, default=None,
                   help="latent frames of the previous window kept by the next, as their 1 + 4 (k - 1) decoded "
                        "frames (default: the folder's, else 2)")
    g.add_argument("--window-noise", type=float, default=None,
                   help="std of the noise on the kept frames, 0..10 (default: the folder's, else 0)")


def _sampling(model: Optional[str]) -> Dict[str, object]:
    """The model folder's ``sampling`` entry ({} without a folder), bad ones as one-line errors."""
    from opensora.pipelines.defaults import sampling_defaults

    if model is None or not os.path.isdir(model):
        return {}
    try:
        return sampling_defaults(model)
    except (ValueError, OSError) as exc:
        raise UsageError(first_line(exc)) from None


def model_window(model: Optional[str], sampling: Optional[Dict[str, object]] = None) -> int:
    """Frames per window of the model folder (its ``sampling.num_frames``, else the release's 93)."""
    from opensora.pipelines.defaults import RELEASE_SETTINGS

    sampling = _sampling(model) if sampling is None else sampling
    return int(sampling.get("num_frames", RELEASE_SETTINGS["num_frames"]))


def long_settings(args, model: Optional[str]) -> Optional[Dict[str, object]]:
    """None when ``--frames`` fits the model's window, or when no continuation model is named (by the flag or the
    folder's ``continuation_model``: then the frames are sampled as one window, as the denoiser allows); else the
    chain's settings (:func:`resolve_long_settings`). The long-video flags without a chain are an error."""
    sampling = _sampling(model)
    window = model_window(model, sampling)
    named = args.continuation_model is not None or "continuation_model" in sampling
    if args.frames <= window or not named:
        given = [flag for flag, value in (("--continuation-model", args.continuation_model),
                                          ("--overlap", args.overlap), ("--window-noise", args.window_noise))
                 if value is not None]
        if given:
            why = (f"--frames beyond the model's {window}-frame window (--frames is {args.frames})"
                   if args.frames <= window else "a chained long video: give --continuation-model DIR")
            raise UsageError(f"{given[0]} is for {why}")
        return None
    return resolve_long_settings(args, model, sampling, window)


def resolve_long_settings(args, model: str, sampling: Dict[str, object], window: int) -> Dict[str, object]:
    """The continuation folder, overlap and window noise from the flags, else ``model``'s ``sampling`` entry."""
    from opensora.pipelines.defaults import continuation_folder

    for name, what in UNSUPPORTED.items():
        value = getattr(args, name, None)
        if value:
            raise UsageError(f"--frames {args.frames} is longer than the model's window: {what} is not supported "
                             f"for chained long videos")
    if args.num_samples != 1:
        raise UsageError("--num-samples must be 1 for a chained long video (use --seed for other samples)")
    if len(args.image) > 1:
        raise UsageError("a chained long video takes one --image (its first frame)")
    folder = args.continuation_model or continuation_folder(model, sampling)
    if not os.path.isdir(folder):
        raise UsageError(f"continuation model folder not found: {folder}")
    overlap = args.overlap if args.overlap is not None else int(sampling.get("overlap", 2))
    noise = args.window_noise if args.window_noise is not None else float(sampling.get("window_noise", 0.0))
    check_finite_number(noise, "--window-noise", 0, 10)
    return {"folder": folder, "overlap": overlap, "noise": noise, "model": model, "window": window}


# ---------------------------------------------------------------------------------------------- windows file
def read_windows(path: str, run: dict, overwrite: bool) -> Dict[int, List["torch.Tensor"]]:
    """Windows per prompt index saved by an earlier run of the same settings ({} when there is no file, or with
    ``overwrite``); UsageError for a file of another run or not a windows file."""
    from safetensors import safe_open

    if not os.path.exists(path) or overwrite:
        return {}
    try:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UsageError(f"cannot read {path}: {first_line(exc)} (pass --overwrite to start over)") from None
    if meta.get("format") != WINDOWS_FORMAT:
        raise UsageError(f"{path} is not a long-video windows file: pass --overwrite to replace it, or choose "
                         f"another --save-latents path")
    saved = json.loads(meta.get("run", "{}"))
    diff = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
    if diff:
        raise UsageError(f"{path} holds the windows of a different run (differs in {', '.join(diff)}): pass "
                         f"--overwrite to start over, or choose another --save-latents path")
    out: Dict[int, List["torch.Tensor"]] = {}
    for name in sorted(tensors):
        p, w = (int(part[1:]) for part in name.split("_"))
        out.setdefault(p, []).append(tensors[name])
        if len(out[p]) != w + 1:
            raise UsageError(f"{path}: window {w} of prompt {p} has no predecessor (pass --overwrite)")
    return out


def write_windows(path: str, windows: Dict[int, List["torch.Tensor"]], run: dict) -> None:
    """All windows so far into ``path`` (atomically: a temporary file renamed over it)."""
    from safetensors.torch import save_file

    tensors = {f"p{p:03d}_w{w:03d}": t.float().cpu().contiguous()
               for p, ws in windows.items() for w, t in enumerate(ws)}
    tmp = temp_path(path)
    save_file(tensors, tmp, metadata={"format": WINDOWS_FORMAT, "run": json.dumps(run, sort_keys=True)})
    commit(tmp, path)


# ---------------------------------------------------------------------------------------------- the run
def run_long(args, pipe, prompts: List[str], used: List[str], texts: List[str], paths: List[List[str]],
             long: dict, dtype, lead: bool = True) -> None:
    """Sample every prompt as a chain of windows and write each video as it is decoded.

    ``pipe``: the loaded pipeline of ``--model`` (its VAE and text encoder are shared with the continuation
    model); ``prompts``: as given (for messages), ``used``: as sampled (refined), ``texts``: as the text encoder
    sees them (templated; they identify the run in the windows file); ``paths[i][0]``: the output of prompt ``i``.
    """
    import torch
    from tqdm.auto import tqdm

    from opensora.pipelines.long_video import ContinuationChain, continuation_pipeline
    from wfvae.io.video import VideoWriter

    from opensora.cli.sample_io import loading

    cont = loading("cannot load the continuation model", lambda: continuation_pipeline(pipe, long["folder"], dtype))
    first = pipe if not args.image else None
    first_call = {}
    if args.image:  # window 0 from the continuation model, keeping the image as frame 0 (i2v)
        from wfvae.io.video import read_video

        first_call = dict(image=[read_video(args.image[0], num_frames=1, size=(args.height, args.width),
                                            resize_mode="crop")])
    try:
        chain = ContinuationChain(cont, first, overlap=long["overlap"], noise_strength=long["noise"],
                                  window_frames=long["window"], first_call=first_call)
    except ValueError as exc:
        raise UsageError(first_line(exc)) from None
    run = {"prompts": texts, "seed": args.seed, "frames": args.frames, "height": args.height, "width": args.width,
           "steps": args.steps, "guidance": float(args.guidance), "scheduler": args.scheduler,
           "overlap": long["overlap"], "window_noise": long["noise"], "window_frames": chain.window_frames,
           "model": os.path.abspath(long["model"]), "continuation_model": os.path.abspath(long["folder"]),
           "image": os.path.abspath(args.image[0]) if args.image else None}
    saved = read_windows(args.save_latents, run, args.overwrite) if args.save_latents else {}
    windows: Dict[int, List[torch.Tensor]] = {p: list(ws) for p, ws in saved.items()}
    call = dict(height=args.height, width=args.width, num_inference_steps=args.steps,
                guidance_scale=float(args.guidance), guidance_interval=args.guidance_interval)
    total = chain.num_windows(args.frames)
    for i, text in enumerate(used):
        done = windows.get(i, [])
        if done and lead:
            print(f"resuming prompt {i + 1} from {len(done)} of {total} saved windows ({args.save_latents})",
                  file=sys.stderr)
        bar = tqdm(total=total, initial=min(len(done), total), desc="windows", unit="window",
                   disable=args.quiet or not lead)

        def on_window(w: int, latents: torch.Tensor, i=i) -> None:
            check_finite_tensor(latents, f"the latents of window {w + 1} of prompt {i + 1}",
                                "check the model's weights (--model, --continuation-model)")
            windows.setdefault(i, []).append(latents.cpu())
            if args.save_latents and lead:
                write_windows(args.save_latents, windows, run)
            bar.update(1)

        path = paths[i][0]
        frames = 0
        with (VideoWriter(path, fps=args.fps) if lead else contextlib.nullcontext()) as writer:
            for chunk in chain.frames(text, args.frames, seed=args.seed + i, done=done, on_window=on_window,
                                      **call):
                check_finite_tensor(chunk, f"the decoded frames of {path}", "check the VAE's weights")
                if lead:
                    writer.write(chunk[0])
                frames += chunk.shape[2]
        bar.close()
        if lead:
            print(f"{path}: {frames} frames {args.height}x{args.width} @ {args.fps:g} fps, {total} windows  "
                  f"[{prompts[i]}]")
