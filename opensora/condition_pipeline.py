"""Sampling with condition controllers: image conditions (i2v, transition, continuation, random frames) for
:class:`~opensora.models.OpenSoraInpaint`, and structure control (canny, sketch, depth) through a
:class:`~opensora.models.StructureController`.

Both are wrappers with the denoiser's call signature, so the text-to-video sampler
(:class:`opensora.pipeline.OpenSoraPipeline`) runs them unchanged::

    cond = build_image_condition([first_frame], from_video=False, num_frames=93)      # i2v
    masked, mask = encode_image_condition(vae, cond)         # (1, C, t, h, w), (1, 4, t, h, w)
    model = InpaintConditioned(OpenSoraInpaint.from_pretrained(DIR), masked, mask)
    model = InpaintConditioned(attach_controller(inpaint, controller, control), masked, mask)  # both
    video = OpenSoraPipeline(model, vae, text_encoder, make_scheduler())(prompt)

Image conditions follow the release (``OpenSoraInpaintPipeline``): kept frames (mask 0) are the condition frames,
generated frames (mask 1) are black before encoding (the release masks 0..255 pixels before normalising, so they
are -1 here); the masked video is encoded with the VAE (posterior mode; the release draws a sample), scaled to the
diffusion space and given to the model with the mask compressed to the latent grid (4 channels). Which frames are
kept:

=================  ==========================================================================================
default for        kept output frames
=================  ==========================================================================================
1 image            ``i2v``: frame 0
2 images           ``transition``: frames 0 and T-1
more images        ``random_temporal``: the ``cond_frames`` given (one per image, in order)
a video            ``continuation``: its first ``1 + 4 * ((T - 1) // 8)`` frames (half the latent frames)
=================  ==========================================================================================

``mask_type`` overrides the default (``clear``: all frames from the video, ``t2iv``: none, ``random_temporal``
with a video and no ``cond_frames``: half the frames at random) and ``cond_frames`` overrides both. Image k goes to
the k-th kept frame; with a video, output frame i is the video's frame i.

The second half of the module is the glue for ``opensora-sample`` (:func:`add_condition_arguments`,
:func:`check_condition_args`, :func:`condition_model`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .condition_args import add_condition_arguments  # noqa: F401 (the flags; kept importable here)
from .control import load_estimator, make_control, save_control
from .masks import MaskType, compress_mask, condition_noise, frame_mask
from .models import ControlledDenoiser, OpenSoraInpaintConfig, StructureController, latent_frame_mask
from .models.controlnet import CONTROLLER_CLASS_NAME, StructureControllerConfig


class ConditionError(ValueError):
    """Impossible condition settings (reported by the CLI as one ``error:`` line)."""


# ---------------------------------------------------------------------------------------------- image conditions
@dataclass
class ImageCondition:
    """``video`` (3, T, H, W) in [-1, 1] with the condition frames in place (-1 elsewhere), ``frame_mask`` (T,)
    with 1 = generate / 0 = keep, the ``mask_type`` and the kept frame ``indices``."""

    video: torch.Tensor
    frame_mask: torch.Tensor
    mask_type: MaskType
    indices: List[int]


def default_mask_type(num_images: int, from_video: bool) -> MaskType:
    if from_video:
        return MaskType.continuation
    return {0: MaskType.t2iv, 1: MaskType.i2v, 2: MaskType.transition}.get(num_images, MaskType.random_temporal)


def kept_frames(mask_type: MaskType, num_frames: int, num_images: int, from_video: bool,
                generator: Optional[torch.Generator] = None) -> List[int]:
    """Output frames kept by ``mask_type`` when no explicit indices are given (see the module docstring)."""
    t = num_frames
    if mask_type is MaskType.t2iv:
        return []
    if mask_type is MaskType.i2v:
        return [0]
    if mask_type is MaskType.transition:
        return [0, t - 1] if t > 1 else [0]
    if mask_type is MaskType.clear:
        return list(range(t))
    if mask_type is MaskType.continuation:
        return list(range(1 + 4 * ((t - 1) // 8) if from_video else num_images))
    if not from_video:
        raise ConditionError(f"--mask-type random_temporal with {num_images} images needs --cond-frames "
                             f"(one output frame index per image)")
    mask = frame_mask(MaskType.random_temporal, t, min_clear_ratio=0.5, max_clear_ratio=0.5, generator=generator)
    return [i for i in range(t) if mask[i] == 0]


def build_image_condition(clips: Sequence[torch.Tensor], from_video: bool, num_frames: int,
                          mask_type: Optional[str] = None, cond_frames: Optional[Sequence[int]] = None,
                          generator: Optional[torch.Generator] = None,
                          size: Optional[Tuple[int, int]] = None) -> ImageCondition:
    """Place condition frames in a ``num_frames`` video.

    Args:
        clips: images as (3, 1, H, W) clips, or one video (3, t, H, W) (``from_video``), all at the output size;
            none (with ``size`` = (H, W)) for text-to-video with the image-condition model (``t2iv``).
        mask_type: a :class:`~opensora.masks.MaskType` name; default from the inputs (module docstring).
        cond_frames: output frame indices to keep (negative: from the end); image k -> the k-th index, video frame
            i -> output frame i.
    """
    t = num_frames
    images = 0 if from_video else len(clips)
    try:
        kind = default_mask_type(images, from_video) if mask_type is None else MaskType(mask_type)
    except ValueError:
        raise ConditionError(f"unknown mask type {mask_type!r}; choose one of "
                             f"{', '.join(m.value for m in MaskType)}") from None
    if cond_frames is not None:
        bad = [i for i in cond_frames if not -t <= i < t]
        if bad:
            raise ConditionError(f"--cond-frames {bad} outside the {t}-frame output (indices -{t}..{t - 1})")
        indices = [i % t for i in cond_frames]
    else:
        indices = kept_frames(kind, t, images, from_video, generator)
    if len(set(indices)) != len(indices):
        raise ConditionError(f"condition frame indices repeat: {list(cond_frames or indices)}")
    if from_video and len(clips) != 1:
        raise ConditionError(f"one condition video expected, got {len(clips)}")
    if not clips and size is None:
        raise ConditionError("no condition clips: give the output size")
    h, w = clips[0].shape[-2:] if clips else size
    video = -torch.ones(3, t, h, w)
    if from_video:
        source = clips[0]
        beyond = [i for i in indices if i >= source.shape[1]]
        if beyond:
            raise ConditionError(f"the condition video has {source.shape[1]} frames but output frames {beyond} "
                                 f"are to be kept from it (--frames {t}, --mask-type {kind.value})")
        for i in indices:
            video[:, i] = source[:, i]
    else:
        if len(indices) != images:
            raise ConditionError(f"{images} image(s) for {len(indices)} kept frame(s) (--mask-type {kind.value}"
                                 f"{', --cond-frames' if cond_frames is not None else ''}): give one index per image")
        for i, clip in zip(indices, clips):
            video[:, i] = clip[:, 0]
    mask = torch.ones(t)
    mask[indices] = 0
    return ImageCondition(video, mask, kind, sorted(indices))


@torch.no_grad()
def encode_image_condition(vae, condition: ImageCondition, noise_strength: float = 0.0,
                           generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(masked-video latent (1, C, t, h, w) in the diffusion space, compressed mask (1, s, t, h/8, w/8)), float32
    on the VAE's device. ``noise_strength`` adds Gaussian noise of that std to the kept frames first."""
    t, h, w = condition.video.shape[1:]
    pixel = condition.frame_mask.view(1, 1, t, 1, 1).expand(1, 1, t, h, w)
    masked = torch.where(pixel < 0.5, condition.video[None], torch.full_like(condition.video[None], -1.0))
    if noise_strength:
        masked = condition_noise(masked, pixel, generator=generator, strength=noise_strength)
    latents = vae.encode(masked.to(vae.device, vae.dtype)).mode().float()
    mask = compress_mask(pixel.float(), vae.temporal_compression, vae.spatial_compression)
    return vae.scale_latents(latents), mask.to(latents.device)


class InpaintConditioned(nn.Module):
    """An image-condition denoiser (or a :class:`ControlledDenoiser` around one) with its conditions bound: takes
    the noisy latent (B, C, t, h, w) only and appends the masked-video latent and the mask (batch 1 or B_c, repeated
    to fill B, e.g. for classifier-free guidance). ``config`` is the denoiser's, so samplers see C channels."""

    def __init__(self, model: nn.Module, masked_latents: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("masked_latents", masked_latents, persistent=False)
        self.register_buffer("mask", mask, persistent=False)

    @property
    def config(self):
        return self.model.config

    @property
    def base(self):
        return getattr(self.model, "base", self.model)

    def forward(self, hidden_states: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                **kwargs) -> torch.Tensor:
        b = hidden_states.shape[0]
        conds = []
        for cond in (self.masked_latents, self.mask):
            if cond.shape[2:] != hidden_states.shape[2:] or b % cond.shape[0]:
                raise ValueError(f"condition {tuple(cond.shape)} does not fit the latent {tuple(hidden_states.shape)}")
            conds.append(cond.to(hidden_states).repeat(b // cond.shape[0], 1, 1, 1, 1))
        x = torch.cat([hidden_states] + conds, dim=1)
        return self.model(x, timestep, encoder_hidden_states, encoder_attention_mask, attention_mask, **kwargs)


# ---------------------------------------------------------------------------------------------- structure control
def control_frame_mask(num_frames: int, control_frames: Optional[Sequence[int]]) -> torch.Tensor:
    """Video-frame mask (T,), 1 = controlled: all frames, or the given indices (negative: from the end)."""
    if control_frames is None:
        return torch.ones(num_frames)
    bad = [i for i in control_frames if not -num_frames <= i < num_frames]
    if bad:
        raise ConditionError(f"--control-frames {bad} outside the {num_frames}-frame output")
    mask = torch.zeros(num_frames)
    mask[[i % num_frames for i in control_frames]] = 1
    return mask


def read_control(path: str, kind: str, num_frames: int, height: int, width: int,
                 control_frames: Optional[Sequence[int]] = None, **options) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read a control source video (resized and centre-cropped to ``height`` x ``width``) and turn it into the
    control ``kind``: returns (control (3, T, H, W) in [-1, 1], video-frame mask (T,) with 1 = controlled).

    The video must reach the last controlled frame; frames after its end (uncontrolled) repeat its last frame.
    For ``depth`` without an ``estimator`` option the video is a depth video.
    """
    from wfvae.video_io import read_video

    mask = control_frame_mask(num_frames, control_frames)
    needed = int(mask.nonzero().max()) + 1
    source = read_video(path, num_frames=num_frames, size=(height, width), resize_mode="crop")
    if source.shape[1] < needed:
        raise ConditionError(f"control video {path} has {source.shape[1]} frames, {needed} needed "
                             f"(--frames {num_frames}{', --control-frames' if control_frames is not None else ''})")
    if source.shape[1] < num_frames:
        source = torch.cat([source, source[:, -1:].expand(-1, num_frames - source.shape[1], -1, -1)], dim=1)
    return make_control(kind, source, **options), mask


def attach_controller(model: nn.Module, controller: StructureController, control: torch.Tensor,
                      frame_mask: Optional[torch.Tensor] = None, strength: float = 1.0) -> ControlledDenoiser:
    """``ControlledDenoiser(model, controller)`` with ``control`` (3, T, H, W) and the video-frame mask (T,) stored;
    the controller follows the model's device and dtype."""
    param = next(model.parameters())
    controller = controller.to(param.device, param.dtype).eval()
    wrapped = ControlledDenoiser(model, controller, strength)
    latent_mask = None if frame_mask is None else latent_frame_mask(frame_mask, controller.config.temporal_compression)
    wrapped.set_control(control[None].to(param.device, param.dtype),
                        None if latent_mask is None else latent_mask.to(param.device))
    return wrapped


# ---------------------------------------------------------------------------------------------- CLI glue
def _read_controller_config(path: str) -> StructureControllerConfig:
    import json

    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise ConditionError(f"controller folder not found or without config.json: {path} (--controller)")
    with open(config) as fh:
        values = json.load(fh)
    if values.get("_class_name", CONTROLLER_CLASS_NAME) != CONTROLLER_CLASS_NAME:
        raise ConditionError(f"{path} is not a structure controller ({values.get('_class_name')})")
    return StructureControllerConfig.from_dict(values)


def check_condition_args(args, model_config) -> None:
    """Checks that need no weights: conditions vs the model kind, controller vs the model, files present."""
    image_args = args.image or args.video or args.mask_type or args.cond_frames is not None or args.noise_strength
    inpaint = isinstance(model_config, OpenSoraInpaintConfig)
    if image_args and not inpaint:
        raise ConditionError("--image/--video/--mask-type/--cond-frames/--noise-strength need an image-condition "
                             "model (OpenSoraInpaint_v1_3); --model is a text-to-video model")
    if args.image and args.video:
        raise ConditionError("give --image(s) or --video, not both")
    if args.noise_strength < 0:
        raise ConditionError("--noise-strength must be >= 0")
    for path in list(args.image) + ([args.video] if args.video else []):
        if not os.path.isfile(path):
            raise ConditionError(f"condition file not found: {path}")
    control_args = [a for a in ("control", "control_video", "control_frames", "save_control", "depth_estimator")
                    if getattr(args, a) is not None]
    if args.controller is None:
        if control_args:
            raise ConditionError(f"--{control_args[0].replace('_', '-')} needs --controller DIR")
        return
    if args.control is None or args.control_video is None:
        raise ConditionError("--controller needs --control {canny,sketch,depth} and --control-video PATH")
    if not os.path.isfile(args.control_video):
        raise ConditionError(f"control video not found: {args.control_video}")
    if args.depth_estimator is not None and args.control != "depth":
        raise ConditionError("--depth-estimator is for --control depth")
    c = _read_controller_config(args.controller)
    wanted = {"hidden size": (c.hidden_size, model_config.hidden_size),
              "number of blocks": (c.base_num_layers, model_config.num_layers),
              "patch size": (c.patch_size, model_config.patch_size)}
    wrong = [f"{k} {a} vs model {b}" for k, (a, b) in wanted.items() if a != b]
    if wrong:
        raise ConditionError(f"controller {args.controller} does not fit the model: {', '.join(wrong)}")


def condition_model(args, transformer: nn.Module, vae, seed: int = 0) -> nn.Module:
    """Wrap ``transformer`` with the structure controller and/or the image conditions given on the command line
    (returns it unchanged when there are none). Reports what it set up on stderr."""
    size, t = (args.height, args.width), args.frames
    model = transformer
    if args.controller is not None:
        options = {}
        if args.control == "canny":
            options = dict(low_threshold=args.canny_low, high_threshold=args.canny_high)
        elif args.control == "depth" and args.depth_estimator:
            options = dict(estimator=load_estimator(args.depth_estimator))
        control, mask = read_control(args.control_video, args.control, t, *size, args.control_frames, **options)
        if args.save_control:  # written under a temporary name, renamed when complete
            from wfvae.cli_support import commit, temp_path

            tmp = temp_path(args.save_control)
            save_control(tmp, control, fps=args.fps or 18.0)
            commit(tmp, args.save_control)
            print(f"{args.save_control}: {args.control} control {tuple(control.shape[1:])}", file=sys.stderr)
        controller = StructureController.from_pretrained(args.controller)
        model = attach_controller(model, controller, control, mask, args.control_strength)
        print(f"structure control: {args.control} on frames {mask.nonzero().flatten().tolist()} "
              f"(strength {args.control_strength:g})", file=sys.stderr)
    if isinstance(transformer.config, OpenSoraInpaintConfig):
        from wfvae.video_io import read_video

        paths = [args.video] if args.video else list(args.image)
        clips = [read_video(p, num_frames=t if args.video else 1, size=size, resize_mode="crop") for p in paths]
        condition = build_image_condition(clips, bool(args.video), t, args.mask_type, args.cond_frames,
                                          torch.Generator().manual_seed(seed), size)
        masked, mask = encode_image_condition(vae, condition, args.noise_strength,
                                              torch.Generator().manual_seed(seed))
        model = InpaintConditioned(model, masked, mask)
        print(f"image condition: {condition.mask_type.value}, kept frames {condition.indices}", file=sys.stderr)
    return model
