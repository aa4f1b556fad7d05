"""``opensora-sample``: text-to-video with Open-Sora Plan v1.3 (the release's ``sample_t2v_v1_3.sh`` defaults).

    opensora-sample --prompt "a cat playing the piano" --model DIR --vae DIR --text-encoder DIR --output out.mp4
    opensora-sample --prompt-file prompts.txt --model DIR ... --output samples/ --num-samples 2
    opensora-sample --prompt "..." ... --save-latents z.safetensors      # latents kept before decoding
    opensora-sample --from-latents z.safetensors --output samples/         # decode only (VAE, no denoiser)
    opensora-sample --prompt "..." --model I2V_DIR ... --image first.png [--image last.png] | --video clip.mp4
    opensora-sample --prompt "..." ... --controller DIR --control canny --control-video ref.mp4

Image conditions (``--image``, ``--video``, ``--mask-type``, ``--cond-frames``, ``--noise-strength``; an
``OpenSoraInpaint_v1_3`` model) and structure control (``--controller`` ...) are set up by
:mod:`opensora.condition_pipeline`.

``--model`` is the denoiser folder (config.json + weights), or a folder with ``transformer/``, ``vae/`` and
``text_encoder/`` subfolders (or a ``model_index.json`` saying where those parts are), which then also supplies
``--vae`` and ``--text-encoder``. Without ``--model`` the shipped model (assets/models/opensora-t2v) is used.
Sampling flags left out take the model's ``model_index.json`` defaults (the sizes and steps it was trained for),
else the release's (93 frames at 352x640, 100 EulerAncestral steps, CFG 7.5).

``--output`` is a file (.mp4/.mkv/.mov, or .png/.jpg for 1 frame; several prompts or samples get ``-NNN``/``-sK``
suffixes) or a folder (one ``NNN-prompt-words[-sK].mp4`` per prompt and sample; .png for 1 frame).
Prompt i is sampled with seed ``--seed + i``. Every prompt is wrapped in the release's quality template
(``--raw-prompt`` turns that off) and guided away from the release's negative prompt.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from wfvae.cli import ErrorParser, UsageError

from . import schedulers as sched
from .condition_pipeline import add_condition_arguments, check_condition_args, condition_model

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "opensora-t2v"
LATENTS_FORMAT = "opensora-sample-latents-v1"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = ErrorParser(prog="opensora-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    g.add_argument("--prompt-file", default=None, help="text file with one prompt per line (blank lines skipped)")
    g.add_argument("--negative-prompt", default=None,
                   help="what to guide away from (default: the release's negative prompt; '' for none)")
    g.add_argument("--raw-prompt", action="store_true", default=None,
                   help="do not wrap prompts in the release's quality template")
    g.add_argument("--refine-prompt", default=None, metavar="MODEL_DIR",
                   help="rewrite every prompt first with this local causal LM (the release's caption refiner)")
    g.add_argument("--refine-max-new-tokens", type=int, default=512, help="refiner output length limit")
    g.add_argument("--max-length", type=int, default=None, help="text tokens per prompt (release: 512)")

    g = p.add_argument_group("models")
    g.add_argument("--model", default=None, help=f"denoiser folder (default: {SHIPPED_MODEL} if present)")
    g.add_argument("--vae", default=None, help="WF-VAE folder (default: MODEL/vae)")
    g.add_argument("--text-encoder", default=None, help="text encoder folder (default: MODEL/text_encoder)")

    g = p.add_argument_group("sampling")
    g.add_argument("--frames", type=int, default=None,
                   help=f"4n + 1 frames (1 = an image; release: {sched.DEFAULT_NUM_FRAMES})")
    g.add_argument("--height", type=int, default=None, help=f"release: {sched.DEFAULT_HEIGHT}")
    g.add_argument("--width", type=int, default=None, help=f"release: {sched.DEFAULT_WIDTH}")
    g.add_argument("--steps", type=int, default=None, help=f"release: {sched.DEFAULT_STEPS}")
    g.add_argument("--guidance", type=float, default=None,
                   help=f"CFG scale (<= 1: off; release: {sched.DEFAULT_GUIDANCE})")
    g.add_argument("--guidance-rescale", type=float, default=0.0, help="0..1 (release: 0)")
    g.add_argument("--scheduler", choices=list(sched.SCHEDULERS), default=None,
                   help=f"release: {sched.DEFAULT_SCHEDULER}")
    g.add_argument("--seed", type=int, default=sched.DEFAULT_SEED, help="prompt i uses seed + i")
    g.add_argument("--num-samples", type=int, default=1, help="videos per prompt")

    g = p.add_argument_group("output")
    g.add_argument("--output", default="outputs", help="file or folder (default: outputs/)")
    g.add_argument("--fps", type=float, default=None, help=f"frame rate of the files (default {sched.DEFAULT_FPS})")
    g.add_argument("--save-latents", default=None, metavar="PATH",
                   help="write the final latents (.safetensors) before decoding")
    g.add_argument("--from-latents", default=None, metavar="PATH",
                   help="decode a --save-latents file instead of sampling (no denoiser, no text encoder)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("devices and memory")
    g.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
    g.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="denoiser and text encoder dtype (default: bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--vae-dtype", choices=list(DTYPES), default=None, help="VAE dtype (default: --dtype)")
    g.add_argument("--cpu-offload", action="store_true", help="keep weights on the CPU; move each model to the "
                   "device only while it runs")
    g.add_argument("--vae-latent-chunk", type=int, default=None, help="decode this many latent frames at a time")
    g.add_argument("--vae-tile", type=int, default=None, help="decode in spatial tiles of this many pixels")
    add_condition_arguments(p)
    return p


# ---------------------------------------------------------------------------------------------- checks
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _device_dtypes(args) -> Tuple[torch.device, torch.dtype, torch.dtype]:
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UsageError(f"--device must be cpu or cuda[:i], got {args.device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda[:i], got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available; use --device cpu")
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    return device, dtype, DTYPES[args.vae_dtype] if args.vae_dtype else dtype


def _check_numbers(args) -> None:
    for name in ("steps", "num_samples", "max_length", "refine_max_new_tokens"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.frames < 1 or (args.frames - 1) % 4:
        raise UsageError(f"--frames must be 4n + 1 (1, 5, 9, ..., 93), got {args.frames}")
    if args.height < 1 or args.width < 1 or args.height % 8 or args.width % 8:
        raise UsageError(f"--height and --width must be positive multiples of 8, got {args.height}x{args.width}")
    if args.fps is not None and not args.fps > 0:
        raise UsageError("--fps must be > 0")
    if not 0 <= args.guidance_rescale <= 1:
        raise UsageError("--guidance-rescale must be in [0, 1]")
    if args.vae_latent_chunk is not None and args.vae_latent_chunk < 1:
        raise UsageError("--vae-latent-chunk must be >= 1")
    if args.vae_tile is not None and (args.vae_tile < 8 or args.vae_tile % 8):
        raise UsageError("--vae-tile must be a positive multiple of 8 (pixels)")


def read_prompts(args) -> List[str]:
    """The prompts of ``--prompt`` (in order) then ``--prompt-file`` (one a line, blank lines skipped)."""
    prompts = []
    for text in args.prompt:
        if not text.strip():
            raise UsageError("--prompt is empty")
        prompts.append(text.strip())
    if args.prompt_file is not None:
        if not os.path.isfile(args.prompt_file):
            raise UsageError(f"prompt file not found: {args.prompt_file}")
        try:
            with open(args.prompt_file, encoding="utf-8") as fh:
                lines = [line.strip() for line in fh]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prompt file {args.prompt_file}: {_first_line(exc)}") from None
        lines = [line for line in lines if line]
        if not lines:
            raise UsageError(f"prompt file {args.prompt_file} has no prompts")
        prompts += lines
    if not prompts:
        raise UsageError("give --prompt TEXT or --prompt-file FILE (or --from-latents FILE)")
    return prompts


def _folder(path: str, what: str, flag: str) -> str:
    if not os.path.isdir(path):
        raise UsageError(f"{what} folder not found: {path} ({flag})")
    return path


RELEASE_DEFAULTS = {"num_frames": sched.DEFAULT_NUM_FRAMES, "height": sched.DEFAULT_HEIGHT,
                    "width": sched.DEFAULT_WIDTH, "steps": sched.DEFAULT_STEPS, "guidance": sched.DEFAULT_GUIDANCE,
                    "max_length": 512, "negative_prompt": sched.NEGATIVE_PROMPT, "raw_prompt": False,
                    "scheduler": sched.DEFAULT_SCHEDULER}
_ARG_NAMES = {"num_frames": "frames"}


def _model_folder(args) -> Optional[str]:
    if args.model is not None:
        return args.model
    return str(SHIPPED_MODEL) if SHIPPED_MODEL.is_dir() else None


def apply_defaults(args, use_model: bool = True) -> None:
    """Fill every sampling flag left unset: from the model's ``model_index.json`` ``sampling`` entry
    (:mod:`opensora.model_index`), else the release's defaults."""
    from .model_index import sampling_defaults

    model = _model_folder(args) if use_model else None
    defaults = dict(RELEASE_DEFAULTS)
    if model is not None and os.path.isdir(model):
        try:
            defaults.update(sampling_defaults(model))
        except ValueError as exc:
            raise UsageError(_first_line(exc)) from None
    for key, value in defaults.items():
        name = _ARG_NAMES.get(key, key)
        if getattr(args, name) is None:
            setattr(args, name, value)


def resolve_model_paths(args) -> Tuple[str, str, str]:
    """(denoiser, VAE, text encoder) folders from the flags, a pipeline-layout ``--model`` (subfolders or a
    ``model_index.json``, see :mod:`opensora.model_index`) or the shipped model."""
    from .model_index import part_folder, read_index

    model = _model_folder(args)
    if model is None:
        raise UsageError(f"--model is required (no shipped model at {SHIPPED_MODEL})")
    _folder(model, "model", "--model")
    try:
        index = read_index(model)
        parts = {name: part_folder(model, name, index) for name in ("transformer", "vae", "text_encoder")}
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(_first_line(exc)) from None
    transformer = parts["transformer"] or model
    vae = args.vae or parts["vae"]
    text = args.text_encoder or parts["text_encoder"]
    if vae is None:
        raise UsageError(f"--vae is required ({model} has no vae/ folder)")
    if text is None:
        raise UsageError(f"--text-encoder is required ({model} has no text_encoder/ folder)")
    return (_folder(transformer, "model", "--model"), _folder(vae, "VAE", "--vae"),
            _folder(text, "text encoder", "--text-encoder"))


def _read_vae_config(path: str):
    from wfvae import WFVAEConfig

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"no config.json in VAE folder {path}")
    try:
        with open(config_path) as fh:
            return WFVAEConfig.from_dict(json.load(fh))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad VAE config {config_path}: {_first_line(exc)}") from None


def check_compatible(args, transformer_dir: str, vae_dir: str, text_dir: str):
    """Reads the three configs (no weights) and checks they fit together and fit the requested sizes."""
    from .models.inpaint import read_denoiser_config
    from .text import config_hidden_size, read_config

    try:
        model_cfg = read_denoiser_config(transformer_dir)
    except FileNotFoundError:
        raise UsageError(f"no config.json in model folder {transformer_dir}") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad model config in {transformer_dir}: {_first_line(exc)}") from None
    vae_cfg = _read_vae_config(vae_dir)
    try:
        text_width = config_hidden_size(read_config(text_dir))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(_first_line(exc)) from None
    if model_cfg.in_channels != vae_cfg.latent_dim:
        raise UsageError(f"the denoiser takes {model_cfg.in_channels} latent channels but the VAE {vae_dir} has "
                         f"latent_dim {vae_cfg.latent_dim}")
    if model_cfg.caption_channels != text_width:
        raise UsageError(f"the denoiser expects {model_cfg.caption_channels}-wide text embeddings but the text "
                         f"encoder {text_dir} gives {text_width}")
    f, s = vae_cfg.temporal_compression, vae_cfg.spatial_compression
    if (args.frames - 1) % f:
        raise UsageError(f"--frames must be {f}n + 1 for this VAE, got {args.frames}")
    unit = s * model_cfg.patch_size
    if args.height % unit or args.width % unit:
        raise UsageError(f"--height and --width must be multiples of {unit} (VAE {s}x times patch size "
                         f"{model_cfg.patch_size}), got {args.height}x{args.width}")
    if (1 + (args.frames - 1) // f) % model_cfg.patch_size_t:
        raise UsageError(f"--frames {args.frames} gives a latent length not divisible by the temporal patch size "
                         f"{model_cfg.patch_size_t}")
    return model_cfg, vae_cfg


# ---------------------------------------------------------------------------------------------- outputs
def _slug(text: str, limit: int = 48) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > limit:
            break
        slug = f"{slug}-{word}" if slug else word
    return slug or "prompt"


def output_paths(output: str, prompts: List[str], num_samples: int, num_frames: int) -> List[List[str]]:
    """``paths[i][j]``: the file for prompt i, sample j (see the module docstring). Checks the destination."""
    ext = os.path.splitext(output)[1].lower()
    many = len(prompts) > 1
    if ext in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        if ext in IMAGE_EXTENSIONS and num_frames != 1:
            raise UsageError(f"output {output} is an image but --frames is {num_frames}; use .mp4 or --frames 1")
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise UsageError(f"output folder does not exist: {folder}")
        stem = output[: len(output) - len(ext)]
        return [[f"{stem}{f'-{i:03d}' if many else ''}{f'-s{j}' if num_samples > 1 else ''}{ext}"
                 for j in range(num_samples)] for i in range(len(prompts))]
    if ext:
        raise UsageError(f"output {output} must end with {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)} or be "
                         f"a folder")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"output {output} exists and is not a folder")
    ext = ".png" if num_frames == 1 else ".mp4"
    return [[os.path.join(output, f"{i:03d}-{_slug(p)}{f'-s{j}' if num_samples > 1 else ''}{ext}")
             for j in range(num_samples)] for i, p in enumerate(prompts)]


def _check_latents_path(path: Optional[str]) -> None:
    if path is None:
        return
    if not path.endswith(".safetensors"):
        raise UsageError(f"--save-latents {path} must end with .safetensors")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--save-latents folder does not exist: {folder}")


def write_output(path: str, video: torch.Tensor, fps: float) -> None:
    """Write one decoded sample (3, T, H, W) in [-1, 1] as a video, or as an image when the path says so."""
    from wfvae.video_io import VideoWriter, write_image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        write_image(path, video[:, :1])
        return
    with VideoWriter(path, fps=fps) as writer:
        writer.write(video)


# ---------------------------------------------------------------------------------------------- latents files
def save_latents(path: str, latents: torch.Tensor, meta: dict) -> None:
    """Write ``latents`` (N, C, t, h, w) and string metadata to a .safetensors file, atomically."""
    from safetensors.torch import save_file

    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file({"latents": latents.float().cpu().contiguous()}, tmp, metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_latents(path: str) -> Tuple[torch.Tensor, dict]:
    """(latents (N, C, t, h, w), metadata) of a ``--save-latents`` file; UsageError when it is not one."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise UsageError(f"latents file not found: {path}")
    try:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata() or {}
            latents = fh.get_tensor("latents")
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UsageError(f"cannot read latents {path}: {_first_line(exc)}") from None
    if meta.get("format") != LATENTS_FORMAT or latents.dim() != 5:
        raise UsageError(f"{path} is not an opensora-sample latents file")
    return latents, meta


# ---------------------------------------------------------------------------------------------- commands
def _load_vae(path: str, device, dtype, offload: bool):
    from wfvae import WFVAE

    try:
        return WFVAE.from_pretrained(path, dtype=dtype, device="cpu" if offload else device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UsageError(f"cannot load VAE {path}: {_first_line(exc)}") from None


def _refine(args, prompts: List[str], device, dtype) -> List[str]:
    from .refiner import PromptRefiner

    try:
        refiner = PromptRefiner.from_pretrained(args.refine_prompt, dtype=dtype, device=device,
                                                max_new_tokens=args.refine_max_new_tokens)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UsageError(f"cannot load prompt refiner {args.refine_prompt}: {_first_line(exc)}") from None
    refined = refiner.refine(prompts)
    for old, new in zip(prompts, refined):
        print(f"refined: {old!r} -> {new!r}", file=sys.stderr)
    del refiner
    return refined


def _config_json(config) -> dict:
    """A VAE config as plain JSON values (for comparing with a recorded one)."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True))


def _metadata(args, prompts, texts, seeds, vae_dir, vae_cfg, model_dirs) -> dict:
    return {
        "format": LATENTS_FORMAT,
        "prompts": json.dumps(prompts),
        "text_prompts": json.dumps(texts),
        "negative_prompt": args.negative_prompt,
        "seeds": json.dumps(seeds),
        "num_samples": args.num_samples,
        "num_frames": args.frames,
        "height": args.height,
        "width": args.width,
        "fps": repr(float(args.fps or sched.DEFAULT_FPS)),
        "steps": args.steps,
        "guidance": repr(args.guidance),
        "guidance_rescale": repr(args.guidance_rescale),
        "scheduler": args.scheduler,
        "model": model_dirs[0],
        "text_encoder": model_dirs[1],
        "vae": vae_dir,
        "vae_config": json.dumps(_config_json(vae_cfg), sort_keys=True),
    }


def cmd_sample(args) -> None:
    from .models import load_denoiser
    from .pipeline import OpenSoraPipeline
    from .text import TextEncoder

    apply_defaults(args)
    _check_numbers(args)
    prompts = read_prompts(args)
    transformer_dir, vae_dir, text_dir = resolve_model_paths(args)
    model_cfg, vae_cfg = check_compatible(args, transformer_dir, vae_dir, text_dir)
    check_condition_args(args, model_cfg)
    paths = output_paths(args.output, prompts, args.num_samples, args.frames)
    _check_latents_path(args.save_latents)
    device, dtype, vae_dtype = _device_dtypes(args)
    fps = args.fps or sched.DEFAULT_FPS

    texts = _refine(args, prompts, device, dtype) if args.refine_prompt else list(prompts)
    if not args.raw_prompt:
        texts = [sched.POSITIVE_PROMPT_TEMPLATE.format(t) for t in texts]

    offload = args.cpu_offload
    try:
        text_encoder = TextEncoder.from_pretrained(text_dir, max_length=args.max_length, dtype=dtype,
                                                   device=device, cpu_offload=offload)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UsageError(f"cannot load text encoder {text_dir}: {_first_line(exc)}") from None
    try:
        transformer = load_denoiser(transformer_dir, dtype=dtype, device="cpu" if offload else device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UsageError(f"cannot load model {transformer_dir}: {_first_line(exc)}") from None
    vae = _load_vae(vae_dir, device, vae_dtype, offload)
    transformer = condition_model(args, transformer, vae, args.seed)
    pipe = OpenSoraPipeline(transformer, vae, text_encoder, sched.make_scheduler(args.scheduler))
    if offload:
        pipe.enable_cpu_offload(device)
    else:
        pipe.to(device)

    seeds = [args.seed + i for i in range(len(prompts))]
    meta = _metadata(args, prompts, texts, seeds, vae_dir, vae_cfg, (transformer_dir, text_dir))
    done = []
    for i, text in enumerate(texts):
        latents = pipe(text, negative_prompt=args.negative_prompt, num_frames=args.frames, height=args.height,
                       width=args.width, num_inference_steps=args.steps, guidance_scale=args.guidance,
                       guidance_rescale=args.guidance_rescale, num_samples=args.num_samples,
                       generator=torch.Generator().manual_seed(seeds[i]), output_type="latents",
                       progress=not args.quiet)
        done.append(latents.cpu())
        if args.save_latents:  # everything sampled so far, before any decoding can fail
            save_latents(args.save_latents, torch.cat(done), {**meta, "num_prompts": len(done)})
        _decode_and_write(pipe.decode, latents, paths[i], fps, args, prompts[i])
    if args.save_latents:
        print(f"{args.save_latents}: latents {tuple(torch.cat(done).shape)}")


def _decode_and_write(decode, latents: torch.Tensor, paths: List[str], fps: float, args, prompt: str) -> None:
    for j, path in enumerate(paths):
        video = decode(latents[j:j + 1], latent_chunk=args.vae_latent_chunk, tile=args.vae_tile)[0]
        write_output(path, video, fps)
        t, h, w = video.shape[1:]
        print(f"{path}: {t} frames {h}x{w} @ {fps:g} fps  [{prompt}]")


def cmd_decode(args) -> None:
    from .pipeline import decode_latents

    if args.prompt or args.prompt_file:
        raise UsageError("--from-latents decodes saved latents: do not pass --prompt or --prompt-file")
    apply_defaults(args, use_model=False)
    _check_numbers(args)
    latents, meta = load_latents(args.from_latents)
    try:
        prompts = json.loads(meta["prompts"])
        num_samples, num_frames = int(meta["num_samples"]), int(meta["num_frames"])
        num_prompts = int(meta.get("num_prompts", len(prompts)))
        saved_cfg = json.loads(meta["vae_config"])
    except (KeyError, ValueError) as exc:
        raise UsageError(f"{args.from_latents}: incomplete metadata ({_first_line(exc)})") from None
    prompts = prompts[:num_prompts]
    if latents.shape[0] != num_prompts * num_samples:
        raise UsageError(f"{args.from_latents}: {latents.shape[0]} latents for {num_prompts} prompts x "
                         f"{num_samples} samples")
    model_vae = os.path.join(args.model, "vae") if args.model else None
    vae_dir = args.vae or (model_vae if model_vae and os.path.isdir(model_vae) else meta.get("vae"))
    if not vae_dir:
        raise UsageError("--vae is required")
    _folder(vae_dir, "VAE", "--vae, or the VAE recorded in the latents file")
    vae_cfg = _config_json(_read_vae_config(vae_dir))
    if vae_cfg != saved_cfg:
        diff = sorted(k for k in set(saved_cfg) | set(vae_cfg) if saved_cfg.get(k) != vae_cfg.get(k))
        raise UsageError(f"{args.from_latents} was sampled with a different VAE than {vae_dir} (config differs "
                         f"in {', '.join(diff)})")
    paths = output_paths(args.output, prompts, num_samples, num_frames)
    fps = args.fps or float(meta.get("fps", sched.DEFAULT_FPS))
    device, _, vae_dtype = _device_dtypes(args)
    vae = _load_vae(vae_dir, device, vae_dtype, False)

    def decode(z, latent_chunk=None, tile=None):
        return decode_latents(vae, z.to(device), latent_chunk, tile)

    for i, prompt in enumerate(prompts):
        rows = latents[i * num_samples:(i + 1) * num_samples]
        _decode_and_write(decode, rows, paths[i], fps, args, prompt)


def main(argv=None) -> int:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    try:
        args = build_parser().parse_args(argv)
        if args.quiet:
            hf_logging.disable_progress_bar()  # "Loading weights" bars
        if args.from_latents:
            cmd_decode(args)
        else:
            cmd_sample(args)
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        print("error: out of memory: try --cpu-offload, --vae-latent-chunk 1 or --vae-tile 256", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if bars:
            hf_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
