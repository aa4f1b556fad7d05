"""``opensora-sample``: text-to-video with Open-Sora Plan v1.3 (the release's ``sample_t2v_v1_3.sh`` defaults).

    opensora-sample --prompt "a cat playing the piano" --model DIR --vae DIR --text-encoder DIR --output out.mp4
    opensora-sample --prompt-file prompts.txt --model DIR ... --output samples/ --num-samples 2
    opensora-sample --prompt "..." ... --save-latents z.safetensors      # latents kept before decoding
    opensora-sample --from-latents z.safetensors --output samples/         # decode only (VAE, no denoiser)
    opensora-sample --prompt "..." --model I2V_DIR ... --image first.png [--image last.png] | --video clip.mp4
    opensora-sample --prompt "..." ... --controller DIR --control canny --control-video ref.mp4

Image conditions (``--image``, ``--video``, ``--mask-type``, ``--cond-frames``, ``--noise-strength``; an
``OpenSoraInpaint_v1_3`` model) and structure control (``--controller`` ...) are set up by
:mod:`opensora.pipelines.conditions`.

``--model`` is the denoiser folder (config.json + weights), or a folder with ``transformer/``, ``vae/`` and
``text_encoder/`` subfolders (or a ``model_index.json`` saying where those parts are), which then also supplies
``--vae`` and ``--text-encoder``. Without ``--model`` the shipped model (assets/models/opensora-t2v) is used.
Sampling flags left out take the model folder's ``model_index.json`` settings (the sizes, steps and frame rate it
was trained for), else the release's (93 frames at 352x640, 100 EulerAncestral steps, CFG 7.5, 18 fps).
``--preset quality|balanced|fast`` (default: the folder's ``preset``, else its settings as they are) picks the
solver, steps and guided steps (:mod:`opensora.pipelines.presets`); ``--steps`` and ``--scheduler`` override it.

``--output`` is a file (.mp4/.mkv/.mov, or .png/.jpg for 1 frame; several prompts or samples get ``-NNN``/``-sK``
suffixes; an existing file is replaced only with ``--overwrite``) or a folder (one ``NNN-prompt-words[-sK].mp4`` per
prompt and sample, .png for 1 frame; a name already taken gets ``-1``, ``-2``, ..., so runs never replace earlier
files). Prompt i is sampled with seed ``--seed + i``. Every prompt is wrapped in the release's quality template
(``--raw-prompt`` turns that off) and guided away from the release's negative prompt.

Errors are one ``error:`` line with exit code 2; files are written under temporary names and renamed when complete,
so a failed or interrupted run leaves no partial file and no folder it created.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from wfvae.cli_support import (ErrorParser, UsageError, check_finite_number, check_finite_tensor,
                               cpu_allocation_settings, first_line, parse_device, parse_dtype, run_cli)

import opensora.pipelines.schedulers as sched
from opensora.pipelines.presets import PRESET_NAMES
from opensora.cli.condition_args import add_condition_arguments
from opensora.cli.long_video import LONG_VIDEO_KEYS, add_long_video_arguments, long_settings
from opensora.cli.sample_io import (LATENTS_FORMAT, check_outputs, check_video_memory, config_json, decode_and_write,
                                    latents_metadata, load_latents, loading, outcome, output_paths, read_vae_config,
                                    run_metadata, save_latents)

__all__ = ["main", "build_parser", "output_paths", "load_latents", "save_latents", "UsageError", "LATENTS_FORMAT"]

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "assets" / "models" / "opensora-t2v"
DTYPE_NAMES = ("float32", "bfloat16", "float16")
OOM_HINT = "try --cpu-offload, --vae-latent-chunk 1 or --vae-tile 256"
# (low, high) of the integer flags; a value outside is a one-line error naming the flag and the range.
INT_RANGES = {"steps": (1, 1000), "num_samples": (1, 1000), "max_length": (1, 4096),
              "refine_max_new_tokens": (1, 4096), "seed": (0, 2 ** 63 - 1), "vae_latent_chunk": (1, 100000),
              "vae_tile": (8, 65536), "frames": (1, 1000000)}


def _default(release) -> str:
    return f"default: the model folder's setting, else {release}"


def build_parser() -> argparse.ArgumentParser:
    p = ErrorParser(prog="opensora-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    g.add_argument("--prompt-file", default=None, help="text file with one prompt per line (blank lines skipped)")
    g.add_argument("--negative-prompt", default=None,
                   help=f"what to guide away from ('' for none; {_default('the release negative prompt')})")
    g.add_argument("--raw-prompt", action="store_true", default=None,
                   help=f"do not wrap prompts in the release's quality template ({_default('wrap')})")
    g.add_argument("--refine-prompt", default=None, metavar="MODEL_DIR",
                   help="rewrite every prompt first with this local causal LM (the release's caption refiner)")
    g.add_argument("--refine-max-new-tokens", type=int, default=512, help="refiner output length limit, 1..4096 "
                   "(default 512)")
    g.add_argument("--max-length", type=int, default=None, help=f"text tokens per prompt, 1..4096 ({_default(512)})")

    g = p.add_argument_group("models")
    g.add_argument("--model", default=None, help=f"denoiser folder (default: {SHIPPED_MODEL} if present)")
    g.add_argument("--vae", default=None, help="WF-VAE folder (default: MODEL/vae)")
    g.add_argument("--text-encoder", default=None, help="text encoder folder (default: MODEL/text_encoder)")

    g = p.add_argument_group("sampling")
    g.add_argument("--frames", type=int, default=None,
                   help=f"4n + 1 frames (1 = an image; {_default(sched.DEFAULT_NUM_FRAMES)})")
    g.add_argument("--height", type=int, default=None, help=f"pixels ({_default(sched.DEFAULT_HEIGHT)})")
    g.add_argument("--width", type=int, default=None, help=f"pixels ({_default(sched.DEFAULT_WIDTH)})")
    g.add_argument("--steps", type=int, default=None, help=f"sampling steps, 1..1000 ({_default(sched.DEFAULT_STEPS)})")
    g.add_argument("--guidance", type=float, default=None,
                   help=f"CFG scale, 0..100 (<= 1: off; {_default(sched.DEFAULT_GUIDANCE)})")
    g.add_argument("--guidance-rescale", type=float, default=0.0, help="0..1 (default 0, as the release)")
    g.add_argument("--scheduler", choices=list(sched.SCHEDULER_NAMES), default=None,
                   help=_default(sched.DEFAULT_SCHEDULER))
    g.add_argument("--preset", choices=list(PRESET_NAMES), default=None,
                   help="speed/quality preset: quality (the model folder's settings), balanced, fast; --steps and "
                        "--scheduler override its values (default: the model folder's preset, else quality)")
    g.add_argument("--seed", type=int, default=sched.DEFAULT_SEED,
                   help=f"prompt i uses seed + i (default {sched.DEFAULT_SEED})")
    g.add_argument("--num-samples", type=int, default=1, help="videos per prompt, 1..1000 (default 1)")

    g = p.add_argument_group("output")
    g.add_argument("--output", default="outputs", help="file or folder (default: outputs/)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output files given by name (generated names in a folder never replace)")
    g.add_argument("--fps", type=float, default=None,
                   help=f"frame rate of the files, (0, 1000] ({_default(sched.DEFAULT_FPS)}; with --from-latents: "
                        f"the rate recorded in the file)")
    g.add_argument("--save-latents", default=None, metavar="PATH",
                   help="write the final latents (.safetensors) before decoding")
    g.add_argument("--from-latents", default=None, metavar="PATH",
                   help="decode a --save-latents file instead of sampling (no denoiser, no text encoder)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("devices and memory")
    g.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
    g.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="denoiser and text encoder dtype (default: bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--vae-dtype", choices=DTYPE_NAMES, default=None, help="VAE dtype (default: --dtype)")
    g.add_argument("--cpu-offload", action="store_true", help="keep weights on the CPU; move each model to the "
                   "device only while it runs")
    g.add_argument("--vae-latent-chunk", type=int, default=None, help="decode this many latent frames at a time")
    g.add_argument("--vae-tile", type=int, default=None, help="decode in spatial tiles of this many pixels "
                   "(a multiple of 8)")
    add_condition_arguments(p)
    add_long_video_arguments(p)
    return p


# ---------------------------------------------------------------------------------------------- checks
def _devices(args):
    """(device, dtype, VAE dtype) from --device, --dtype, --vae-dtype."""
    device = parse_device(args.device)
    return device, parse_dtype(args.dtype, device), parse_dtype(args.vae_dtype or args.dtype, device)


def _check_numbers(args) -> None:
    """Every numeric flag: finite and within its range (one ``error:`` line naming the flag otherwise)."""
    for name, (low, high) in INT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise UsageError(f"--{name.replace('_', '-')} must be from {low} to {high}, got {value}")
    if args.frames < 1 or (args.frames - 1) % 4:
        raise UsageError(f"--frames must be 4n + 1 (1, 5, 9, ..., 93), got {args.frames}")
    if args.height < 8 or args.width < 8 or args.height % 8 or args.width % 8:
        raise UsageError(f"--height and --width must be positive multiples of 8, got {args.height}x{args.width}")
    if args.vae_tile is not None and args.vae_tile % 8:
        raise UsageError(f"--vae-tile must be a multiple of 8 (pixels), got {args.vae_tile}")
    check_finite_number(args.guidance, "--guidance", 0, 100)
    check_finite_number(args.guidance_rescale, "--guidance-rescale", 0, 1)
    check_finite_number(args.fps, "--fps", 0, 1000, low_open=True)
    check_finite_number(args.noise_strength, "--noise-strength", 0, 10)
    check_finite_number(args.control_strength, "--control-strength", -10, 10)
    check_finite_number(args.canny_low, "--canny-low", 0)
    check_finite_number(args.canny_high, "--canny-high", 0)
    if args.device is not None and not args.device.strip():
        raise UsageError("--device is empty: give cpu, cuda or cuda:i (or leave it out)")


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
            raise UsageError(f"cannot read prompt file {args.prompt_file}: {first_line(exc)}") from None
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


def _release_defaults() -> dict:
    from opensora.pipelines.defaults import settings

    return settings()


_ARG_NAMES = {"num_frames": "frames"}


def _model_folder(args) -> Optional[str]:
    if args.model is not None:
        return args.model
    return str(SHIPPED_MODEL) if SHIPPED_MODEL.is_dir() else None


def apply_defaults(args, use_model: bool = True) -> None:
    """Fill every sampling flag left unset: from the model's ``model_index.json`` ``sampling`` entry
    (:mod:`opensora.pipelines.defaults`), else the release's defaults (``fps`` stays unset without the model: a latents
    file says its own)."""
    from opensora.pipelines.defaults import sampling_defaults

    model = _model_folder(args) if use_model else None
    defaults = _release_defaults()
    if not use_model:
        defaults.pop("fps")
    if model is not None and os.path.isdir(model):
        try:
            defaults.update(sampling_defaults(model))
        except (ValueError, OSError) as exc:
            raise UsageError(first_line(exc)) from None
    if use_model:  # --preset (else the folder's) fills --steps and --scheduler when they are unset
        from opensora.pipelines.presets import resolve_preset

        args.preset = args.preset or defaults.get("preset")
        chosen = resolve_preset(args.preset, args.steps, args.scheduler)
        args.steps, args.scheduler = chosen["num_inference_steps"], chosen["scheduler"]
        args.guidance_interval, args.scheduler_options = chosen["guidance_interval"], chosen["scheduler_options"]
    for key, value in defaults.items():
        if key in LONG_VIDEO_KEYS:  # read by opensora.cli.long_video, relative to the model folder
            continue
        name = _ARG_NAMES.get(key, key)
        if getattr(args, name) is None:
            setattr(args, name, value)


def resolve_model_paths(args) -> Tuple[str, str, str]:
    """(denoiser, VAE, text encoder) folders from the flags, a pipeline-layout ``--model`` (subfolders or a
    ``model_index.json``, see :mod:`opensora.pipelines.defaults`) or the shipped model."""
    from opensora.pipelines.defaults import part_folder, read_index

    model = _model_folder(args)
    if model is None:
        raise UsageError(f"--model is required (no shipped model at {SHIPPED_MODEL})")
    _folder(model, "model", "--model")
    try:
        index = read_index(model)
        parts = {name: part_folder(model, name, index) for name in ("transformer", "vae", "text_encoder")}
    except (ValueError, OSError) as exc:
        raise UsageError(first_line(exc)) from None
    transformer = parts["transformer"] or model
    vae = args.vae or parts["vae"]
    text = args.text_encoder or parts["text_encoder"]
    if vae is None:
        raise UsageError(f"--vae is required ({model} has no vae/ folder)")
    if text is None:
        raise UsageError(f"--text-encoder is required ({model} has no text_encoder/ folder)")
    return (_folder(transformer, "model", "--model"), _folder(vae, "VAE", "--vae"),
            _folder(text, "text encoder", "--text-encoder"))


def check_compatible(args, transformer_dir: str, vae_dir: str, text_dir: str):
    """Reads the three configs (no weights) and checks they fit together and fit the requested sizes."""
    from opensora.models.inpaint import read_denoiser_config
    from opensora.text.encoders import config_hidden_size, read_config

    if not os.path.isfile(os.path.join(transformer_dir, "config.json")):
        raise UsageError(f"no config.json in model folder {transformer_dir} (--model)")
    model_cfg = loading(f"bad model config in {transformer_dir}", lambda: read_denoiser_config(transformer_dir))
    vae_cfg = read_vae_config(vae_dir)
    text_width = loading(f"bad text encoder config in {text_dir}", lambda: config_hidden_size(read_config(text_dir)))
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


# ---------------------------------------------------------------------------------------------- commands
def _load_vae(path: str, dtype, device="cpu"):
    from wfvae import WFVAE

    return loading(f"cannot load VAE {path}", lambda: WFVAE.from_pretrained(path, torch_dtype=dtype).to(device))


def _refine(args, prompts: List[str], device, dtype) -> List[str]:
    from opensora.text.refiner import PromptRefiner

    refiner = loading(f"cannot load prompt refiner {args.refine_prompt}", lambda: PromptRefiner.from_pretrained(
        args.refine_prompt, dtype=dtype, device=device, max_new_tokens=args.refine_max_new_tokens))
    refined = refiner.refine(prompts)
    for old, new in zip(prompts, refined):
        print(f"refined: {old!r} -> {new!r}", file=sys.stderr)
    del refiner
    return refined


def cmd_sample(args) -> None:
    import torch

    from opensora.cli.conditions import check_condition_args, condition_arguments
    from opensora.cli.long_video import run_long
    from opensora.pipelines.conditions import OpenSoraControlPipeline, OpenSoraImageToVideoPipeline
    from opensora.models import StructureController, load_denoiser, sequence_parallel
    from opensora.models.inpaint import OpenSoraInpaintConfig
    from opensora.pipelines.text_to_video import OpenSoraPipeline, load_text_encoder

    # everything that needs no weights is checked first: flags, files, configs, outputs
    apply_defaults(args)
    _check_numbers(args)
    long = long_settings(args, _model_folder(args))  # None unless --frames is beyond the model's window
    prompts = read_prompts(args)
    if args.refine_prompt is not None:
        _folder(args.refine_prompt, "prompt refiner", "--refine-prompt")
    transformer_dir, vae_dir, text_dir = resolve_model_paths(args)
    model_cfg, vae_cfg = check_compatible(args, transformer_dir, vae_dir, text_dir)
    check_video_memory(long["window"] if long else args.frames, args.height, args.width)
    outputs, paths = check_outputs(args, prompts, args.num_samples, args.frames, resumable_latents=long is not None)
    if long is None:
        check_condition_args(args, model_cfg)
    elif args.image and not os.path.isfile(args.image[0]):
        raise UsageError(f"condition file not found: {args.image[0]}")
    device, dtype, vae_dtype = _devices(args)
    device = sequence_parallel.launch_device(device)  # under torchrun: this process' GPU

    prompts_used = _refine(args, prompts, device, dtype) if args.refine_prompt else list(prompts)
    transformer = loading(f"cannot load model {transformer_dir}", lambda: load_denoiser(transformer_dir, dtype=dtype))
    vae = _load_vae(vae_dir, vae_dtype)
    tokenizer, encoder = loading(f"cannot load text encoder {text_dir}", lambda: load_text_encoder(text_dir, dtype))
    # the flags (already filled from the model folder's settings, then the release's) are the pipeline's settings
    sampling = {"num_frames": long["window"] if long else args.frames, "height": args.height, "width": args.width, "steps": args.steps,
                "guidance": float(args.guidance), "fps": float(args.fps), "max_length": args.max_length,
                "negative_prompt": args.negative_prompt, "raw_prompt": bool(args.raw_prompt),
                "scheduler": args.scheduler}
    parts = dict(tokenizer=tokenizer, text_encoder=encoder, transformer=transformer, vae=vae,
                 scheduler=sched.make_scheduler(args.scheduler, **args.scheduler_options), sampling=sampling)
    inpaint = isinstance(model_cfg, OpenSoraInpaintConfig)
    if args.controller is not None:
        controller = loading(f"cannot load controller {args.controller}",
                              lambda: StructureController.from_pretrained(args.controller, dtype=dtype))
        pipe = OpenSoraControlPipeline(controller=controller, **parts)
    else:
        pipe = (OpenSoraImageToVideoPipeline if inpaint else OpenSoraPipeline)(**parts)
    conditions = condition_arguments(args, inpaint, args.seed) if long is None else {}
    offload = args.cpu_offload and device.type != "cpu"
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    parallel = sequence_parallel.from_launcher(pipe.transformer, device)  # None unless torchrun started several
    lead = parallel is None or parallel.rank == 0  # the process that writes (all of them sample)
    if parallel is not None and lead:
        print(f"sequence parallel: the video tokens split over {parallel.world} processes", file=sys.stderr)
    pipe.set_progress_bar_config(disable=args.quiet or not lead, leave=False, desc="denoise")

    texts = pipe.prompt_texts(prompts_used)
    if long is not None:
        if not os.path.splitext(args.output)[1]:
            outputs.make_folder(args.output)
        run_long(args, pipe, prompts, prompts_used, texts, paths, long, dtype, lead)
        _note_domain(args, prompts, lead)
        return
    seeds = [args.seed + i for i in range(len(prompts))]
    meta = run_metadata(args, prompts, texts, seeds, vae_dir, vae_cfg, (transformer_dir, text_dir))
    done, written = [], []
    for i, prompt in enumerate(prompts_used):
        latents = pipe(prompt, num_videos_per_prompt=args.num_samples, guidance_rescale=args.guidance_rescale,
                       generator=torch.Generator().manual_seed(seeds[i]), output_type="latent",
                       guidance_interval=args.guidance_interval, **conditions).frames
        if lead and i == 0 and getattr(pipe, "image_condition", None) is not None:
            cond = pipe.image_condition
            print(f"image condition: {cond.mask_type.value}, kept frames {cond.indices}", file=sys.stderr)
        check_finite_tensor(latents, f"the latents sampled for prompt {i + 1} ({prompts[i][:40]!r})",
                            outcome(written, "check the model's weights (--model)"))
        done.append(latents.cpu())
        if not lead:
            continue
        if args.save_latents:  # everything sampled so far, before any decoding can fail
            save_latents(args.save_latents, torch.cat(done), {**meta, "num_prompts": len(done)})
        if not os.path.splitext(args.output)[1]:
            outputs.make_folder(args.output)  # removed again if the run fails while it is empty
        if offload:
            pipe.vae.to(device)
        try:
            written += decode_and_write(pipe.vae, latents, paths[i], args.fps, args, prompts[i], written)
        finally:
            if offload:
                pipe.vae.to("cpu")
    if args.save_latents and lead:
        print(f"{args.save_latents}: latents {tuple(torch.cat(done).shape)}")
    _note_domain(args, prompts, lead)


def _note_domain(args, prompts, lead: bool) -> None:
    """After a successful run: one ``note:`` line when a prompt is outside the model folder's training domain."""
    from opensora.pipelines.defaults import domain_note

    note = domain_note(_model_folder(args), prompts) if lead else None
    if note:
        print(note, file=sys.stderr)


def cmd_decode(args) -> None:
    given = [flag for flag, value in (("--prompt", args.prompt), ("--prompt-file", args.prompt_file),
                                      ("--save-latents", args.save_latents), ("--refine-prompt", args.refine_prompt))
             if value]
    if given:
        raise UsageError(f"--from-latents decodes saved latents: do not pass {given[0]}")
    apply_defaults(args, use_model=False)
    _check_numbers(args)
    latents, meta = load_latents(args.from_latents)
    model_vae = os.path.join(args.model, "vae") if args.model else None
    vae_dir = args.vae or (model_vae if model_vae and os.path.isdir(model_vae) else meta.get("vae"))
    if not vae_dir:
        raise UsageError("--vae is required (the latents file names no VAE)")
    _folder(vae_dir, "VAE", "--vae, or the VAE recorded in the latents file")
    vae_cfg = read_vae_config(vae_dir)
    info = latents_metadata(args.from_latents, latents, meta, vae_cfg.latent_dim, vae_cfg.temporal_compression)
    saved_cfg, vae_json = info["vae_config"], config_json(vae_cfg)
    if vae_json != saved_cfg:
        diff = sorted(k for k in set(saved_cfg) | set(vae_json) if saved_cfg.get(k) != vae_json.get(k))
        raise UsageError(f"{args.from_latents} was sampled with a different VAE than {vae_dir} (config differs "
                         f"in {', '.join(diff)})")
    s = vae_cfg.spatial_compression
    check_video_memory(info["num_frames"], latents.shape[3] * s, latents.shape[4] * s)
    prompts, num_samples = info["prompts"], info["num_samples"]
    outputs, paths = check_outputs(args, prompts, num_samples, info["num_frames"])
    fps = args.fps or info["fps"] or float(sched.DEFAULT_FPS)
    device, _, vae_dtype = _devices(args)
    vae = _load_vae(vae_dir, vae_dtype, device)
    if not os.path.splitext(args.output)[1]:
        outputs.make_folder(args.output)
    written: List[str] = []
    for i, prompt in enumerate(prompts):
        rows = latents[i * num_samples:(i + 1) * num_samples].to(device)
        written += decode_and_write(vae, rows, paths[i], fps, args, prompt, written)


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    if args.from_latents:
        cmd_decode(args)
        return
    if not args.quiet:
        cmd_sample(args)
        return
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" bars
    try:
        cmd_sample(args)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def main(argv=None) -> int:
    cpu_allocation_settings()  # large CPU tensors on huge pages (wfvae.cli_support): far fewer page faults
    return run_cli(lambda: _main(argv), oom_hint=OOM_HINT)


if __name__ == "__main__":
    sys.exit(main())
