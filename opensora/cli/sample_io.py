"""Files of ``opensora-sample``: output names (never clobbering), the latents file, decoding with a progress bar
and writing videos and images, all through :mod:`wfvae.cli_support` (temporary names renamed when complete).

Output names: an ``--output`` ending in .mp4/.mkv/.mov (or .png/.jpg for 1 frame) is a file (several prompts or
samples get ``-NNN``/``-sK`` suffixes), which must not exist unless ``--overwrite``; anything else is a folder that
gets one ``NNN-prompt-words[-sK].mp4`` per prompt and sample (.png for 1 frame), where a name already taken gets
``-1``, ``-2``, ... appended (``000-a-cat-1.mp4``), so a second run never replaces the first one's files.

Torch is imported inside the functions that need it (``opensora-sample --help`` stays fast).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from wfvae.cli_support import Outputs, UsageError, check_finite_tensor, commit, first_line, temp_path

if TYPE_CHECKING:
    import torch

LATENTS_FORMAT = "opensora-sample-latents-v1"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------------- output names
def _slug(text: str, limit: int = 48) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > limit:
            break
        slug = f"{slug}-{word}" if slug else word
    return slug or "prompt"


def free_name(path: str, taken: Set[str]) -> str:
    """``path``, or ``stem-1.ext``, ``stem-2.ext``, ... : the first name that neither exists nor is in ``taken``."""
    stem, ext = os.path.splitext(path)
    candidate, k = path, 0
    while os.path.lexists(candidate) or os.path.abspath(candidate) in taken:
        k += 1
        candidate = f"{stem}-{k}{ext}"
    return candidate


def output_paths(output: str, prompts: List[str], num_samples: int, num_frames: int,
                 outputs: Optional[Outputs] = None) -> List[List[str]]:
    """``paths[i][j]``: the file for prompt i, sample j (see the module docstring).

    With ``outputs``, explicit file names are checked with :meth:`Outputs.check` (exists without --overwrite, an
    input, an unwritable folder: :class:`UsageError`) and the folder's writability too."""
    ext = os.path.splitext(output)[1].lower()
    many = len(prompts) > 1
    if ext in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        if ext in IMAGE_EXTENSIONS and num_frames != 1:
            raise UsageError(f"output {output} is an image but --frames is {num_frames}; use .mp4 or --frames 1")
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise UsageError(f"output folder does not exist: {folder} (create it, or give a folder as --output)")
        stem = output[: len(output) - len(ext)]
        paths = [[f"{stem}{f'-{i:03d}' if many else ''}{f'-s{j}' if num_samples > 1 else ''}{ext}"
                  for j in range(num_samples)] for i in range(len(prompts))]
        if outputs is not None:
            for path in (p for row in paths for p in row):
                outputs.check(path, "output")
        return paths
    if ext:
        raise UsageError(f"output {output} must end with {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)} or be "
                         f"a folder")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"output {output} exists and is not a folder")
    if outputs is not None:
        outputs.check_folder(output, "output")
    ext = ".png" if num_frames == 1 else ".mp4"
    taken: Set[str] = set()
    paths = []
    for i, prompt in enumerate(prompts):
        row = []
        for j in range(num_samples):
            path = free_name(os.path.join(output, f"{i:03d}-{_slug(prompt)}{f'-s{j}' if num_samples > 1 else ''}"
                                                  f"{ext}"), taken)
            taken.add(os.path.abspath(path))
            row.append(path)
        paths.append(row)
    return paths


def check_outputs(args, prompts: List[str], num_samples: int, num_frames: int,
                  resumable_latents: bool = False) -> Tuple[Outputs, List[List[str]]]:
    """Checks every output before any heavy work: names, no clobbering without --overwrite, not an input, no two
    outputs on one file, writable folders. ``resumable_latents``: an existing ``--save-latents`` file is the
    windows of an interrupted long video, read back (:mod:`opensora.cli.long_video`), not clobbered."""
    inputs = list(args.image) + [args.video, args.control_video, args.prompt_file, args.from_latents]
    outputs = Outputs(overwrite=args.overwrite, inputs=inputs)
    paths = output_paths(args.output, prompts, num_samples, num_frames, outputs)
    extra = []
    if args.save_latents is not None:
        resume = resumable_latents and os.path.isfile(args.save_latents)
        (Outputs(overwrite=True, inputs=inputs) if resume else outputs).check(args.save_latents, "--save-latents",
                                                                              (".safetensors",))
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.save_latents))):
            raise UsageError(f"--save-latents folder does not exist: {os.path.dirname(args.save_latents)}")
        extra.append(args.save_latents)
    if args.save_control is not None:
        outputs.check(args.save_control, "--save-control", VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.save_control))):
            raise UsageError(f"--save-control folder does not exist: {os.path.dirname(args.save_control)}")
        extra.append(args.save_control)
    seen = set()
    for path in [p for row in paths for p in row] + extra:
        key = os.path.abspath(path)
        if key in seen:
            raise UsageError(f"{path} is given as two outputs: choose different names")
        seen.add(key)
    return outputs, paths


# ---------------------------------------------------------------------------------------------- memory
def physical_memory() -> Optional[int]:
    """Bytes of RAM of this machine (None when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_video_memory(frames: int, height: int, width: int, limit: Optional[int] = None) -> None:
    """Refuse sizes whose decoded video (3, T, H, W) float32, one sample, needs more than half of ``limit`` bytes
    (default: this machine's RAM): such a run could only end in an out-of-memory crash after all the sampling."""
    limit = physical_memory() if limit is None else limit
    need = 3 * 4 * frames * height * width
    if limit and need > limit // 2:
        raise UsageError(f"--frames {frames} at --height {height} --width {width} needs {need / 2 ** 30:.1f} GiB for "
                         f"one decoded video (float32), over the limit of half this machine's "
                         f"{limit / 2 ** 30:.1f} GiB memory: lower --frames, --height or --width")


# ---------------------------------------------------------------------------------------------- writing
def write_output(path: str, video: "torch.Tensor", fps: float) -> None:
    """Write one decoded sample (3, T, H, W) in [-1, 1] as a video, or as an image when the path says so. Both
    writers of :mod:`wfvae.io.video` write a temporary file renamed onto ``path`` when complete. The folder must
    exist."""
    from wfvae.io.video import VideoWriter, write_image

    if path.lower().endswith(IMAGE_EXTENSIONS):
        write_image(path, video[:, :1])
        return
    with VideoWriter(path, fps=fps) as writer:
        writer.write(video)


def decode_sample(vae, latents: "torch.Tensor", latent_chunk: Optional[int], tile: Optional[int], bar,
                  what: str, outcome: str) -> "torch.Tensor":
    """Diffusion-space latents (1, C, t, h, w) -> frames (3, 1 + 4(t - 1), 8h, 8w) float32 in [-1, 1] on the CPU,
    decoded ``latent_chunk`` latent frames at a time (all at once when None), advancing the tqdm ``bar`` by the
    frames of each chunk. NaN or infinite frames (checked before clamping) raise :class:`UsageError` naming
    ``what``. Gives the frames of :func:`opensora.pipelines.text_to_video.decode_latents`."""
    import torch

    with torch.no_grad():
        z = vae.unscale_latents(latents.float()).to(vae.dtype)
        k = z.shape[2] if latent_chunk is None else latent_chunk
        parts = []
        for part in vae.decode_stream([z[:, :, i:i + k] for i in range(0, z.shape[2], k)], tile=tile):
            parts.append(part.float().cpu())
            bar.update(part.shape[2])
        video = torch.cat(parts, dim=2)[0]
    check_finite_tensor(video, what, outcome)
    return video.clamp_(-1.0, 1.0)


def outcome(written: List[str], hint: str = "") -> str:
    """What a failure leaves behind, for its error message."""
    done = f"only {len(written)} earlier file{'s' if len(written) > 1 else ''} written" if written else \
        "nothing was written"
    return f"{done}{'; ' + hint if hint else ''}"


def decode_and_write(vae, latents, paths: List[str], fps: float, args, prompt: str, written: List[str]) -> List[str]:
    """Decode latents (N, C, t, h, w), one sample per path, checking the frames, and write them (the paths
    written are returned; ``written``: the files written before, for the error message)."""
    from tqdm.auto import tqdm

    new = []
    frames = 1 + vae.temporal_compression * (latents.shape[2] - 1)
    with tqdm(total=frames * len(paths), desc="decode", unit="frame", disable=args.quiet, leave=False) as bar:
        for j, path in enumerate(paths):
            video = decode_sample(vae, latents[j:j + 1], args.vae_latent_chunk, args.vae_tile, bar,
                                  f"the decoded frames for {path}", outcome(written + new, "check the VAE's weights"))
            write_output(path, video, fps)
            new.append(path)
            t, h, w = video.shape[1:]
            print(f"{path}: {t} frames {h}x{w} @ {fps:g} fps  [{prompt}]")
    return new


# ---------------------------------------------------------------------------------------------- latents files
def save_latents(path: str, latents: "torch.Tensor", meta: dict) -> None:
    """Write ``latents`` (N, C, t, h, w) and string metadata to a .safetensors file, atomically."""
    from safetensors.torch import save_file

    tmp = temp_path(path)
    save_file({"latents": latents.float().cpu().contiguous()}, tmp, metadata={k: str(v) for k, v in meta.items()})
    commit(tmp, path)


def load_latents(path: str) -> Tuple["torch.Tensor", dict]:
    """(latents (N, C, t, h, w), metadata) of a ``--save-latents`` file; UsageError when it is not one."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise UsageError(f"latents file not found: {path} (--from-latents)")
    try:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata() or {}
            if "latents" not in fh.keys():
                raise ValueError("no 'latents' tensor")
            latents = fh.get_tensor("latents")
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UsageError(f"cannot read latents {path}: {first_line(exc)} (--from-latents needs a file written by "
                         f"--save-latents)") from None
    if meta.get("format") != LATENTS_FORMAT or latents.dim() != 5 or not latents.is_floating_point():
        raise UsageError(f"{path} is not an opensora-sample latents file (--from-latents needs a file written by "
                         f"--save-latents)")
    return latents, meta


def _meta_value(meta: dict, key: str, parse, check, path: str, want: str) -> Any:
    try:
        value = parse(meta[key])
    except KeyError:
        raise UsageError(f"{path}: metadata lacks {key!r} (--from-latents needs a file written by --save-latents)"
                         ) from None
    except (ValueError, TypeError):
        value = None
    if value is None or not check(value):
        raise UsageError(f"{path}: metadata {key} must be {want}, got {str(meta[key])[:60]!r}")
    return value


def latents_metadata(path: str, latents: "torch.Tensor", meta: dict, latent_dim: int,
                     temporal_compression: int) -> Dict[str, Any]:
    """The checked metadata of a latents file (prompts, num_samples, num_frames, fps, vae_config) for a VAE with
    ``latent_dim`` channels; :class:`UsageError` naming what is wrong. Also refuses NaN or infinite latents."""
    prompts = _meta_value(meta, "prompts", json.loads, lambda v: isinstance(v, list) and v and all(
        isinstance(p, str) for p in v), path, "a JSON list of prompts")
    num_samples = _meta_value(meta, "num_samples", int, lambda v: v >= 1, path, "an integer >= 1")
    num_frames = _meta_value(meta, "num_frames", int, lambda v: v >= 1, path, "an integer >= 1")
    num_prompts = len(prompts)
    if "num_prompts" in meta:
        num_prompts = _meta_value(meta, "num_prompts", int, lambda v: 1 <= v <= len(prompts), path,
                                  f"an integer from 1 to {len(prompts)}")
    vae_config = _meta_value(meta, "vae_config", json.loads, lambda v: isinstance(v, dict), path, "a JSON object")
    fps = None
    if "fps" in meta:
        fps = _meta_value(meta, "fps", float, lambda v: math.isfinite(v) and 0 < v <= 1000, path,
                          "a frame rate in (0, 1000]")
    n, c, t = latents.shape[:3]
    if c != latent_dim:
        raise UsageError(f"{path} holds {c}-channel latents but the VAE has latent_dim {latent_dim}")
    if n != num_prompts * num_samples:
        raise UsageError(f"{path}: {n} latents for {num_prompts} prompts x {num_samples} samples")
    if 1 + (num_frames - 1) // temporal_compression != t or (num_frames - 1) % temporal_compression:
        raise UsageError(f"{path}: {t} latent frames do not give the {num_frames} frames its metadata says")
    check_finite_tensor(latents, f"latents file {path}")
    return {"prompts": prompts[:num_prompts], "num_samples": num_samples, "num_frames": num_frames, "fps": fps,
            "vae_config": vae_config}

# ---------------------------------------------------------------------------------------------- loading
def loading(what: str, load):
    """``load()``, with any failure but running out of memory as one :class:`UsageError` naming ``what``."""
    try:
        return load()
    except (UsageError, MemoryError):
        raise
    except Exception as exc:  # loaders raise many types for damaged files; OOM keeps its own message
        if type(exc).__name__ == "OutOfMemoryError":
            raise
        raise UsageError(f"{what}: {first_line(exc)}") from None


def read_vae_config(path: str):
    from wfvae import WFVAEConfig

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"no config.json in VAE folder {path} (--vae)")

    def read():
        with open(config_path, encoding="utf-8") as fh:
            values = json.load(fh)
        if not isinstance(values, dict):
            raise ValueError(f"it holds a JSON {type(values).__name__}, not an object")
        return WFVAEConfig.from_dict(values)

    return loading(f"bad VAE config {config_path}", read)


def config_json(config) -> dict:
    """A VAE config as plain JSON values (for comparing with a recorded one)."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True))


def run_metadata(args, prompts, texts, seeds, vae_dir, vae_cfg, model_dirs) -> dict:
    return {
        "format": LATENTS_FORMAT, "prompts": json.dumps(prompts), "text_prompts": json.dumps(texts),
        "negative_prompt": args.negative_prompt, "seeds": json.dumps(seeds), "num_samples": args.num_samples,
        "num_frames": args.frames, "height": args.height, "width": args.width, "fps": repr(float(args.fps)),
        "steps": args.steps, "guidance": repr(args.guidance), "guidance_rescale": repr(args.guidance_rescale),
        "scheduler": args.scheduler, "preset": str(args.preset), "model": model_dirs[0],
        "text_encoder": model_dirs[1], "vae": vae_dir,
        "vae_config": json.dumps(config_json(vae_cfg), sort_keys=True),
    }
