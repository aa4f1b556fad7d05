"""The condition pipelines: image/video conditions (i2v, transition, continuation, random frames) for
:class:`~opensora.models.OpenSoraInpaint` (:class:`OpenSoraImageToVideoPipeline`), and structure control (canny,
sketch, depth) through a :class:`~opensora.models.StructureController` (:class:`OpenSoraControlPipeline`). Both are
diffusers pipelines with the text-to-video call (:class:`opensora.pipelines.text_to_video.OpenSoraPipeline`) plus
conditions::

    pipe = OpenSoraImageToVideoPipeline(tokenizer, text_encoder, OpenSoraInpaint.from_pretrained(DIR), vae, sched)
    frames = pipe(prompt, image=first_frame).frames                  # i2v; image=[first, last]: transition
    frames = pipe(prompt, video=clip).frames                         # continuation
    pipe = OpenSoraControlPipeline(tokenizer, text_encoder, inpaint, vae, sched, controller=controller)
    frames = pipe(prompt, image=first_frame, control=canny(clip)).frames

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

``opensora-sample`` turns its flags into these calls in :mod:`opensora.cli.conditions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from opensora.pipelines.control_signals import make_control
from opensora.pipelines.masks import MaskType, compress_mask, condition_noise, frame_mask
from opensora.models import latent_frame_mask
from opensora.models.inpaint import is_inpaint
from opensora.pipelines.text_to_video import OpenSoraPipeline, register_with_diffusers


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
        mask_type: a :class:`~opensora.pipelines.masks.MaskType` name; default from the inputs (module docstring).
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
    latents = vae.encode(masked.to(vae.device, vae.dtype)).latent_dist.mode().float()
    mask = compress_mask(pixel.float(), vae.temporal_compression, vae.spatial_compression)
    return vae.scale_latents(latents), mask.to(latents.device)


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
    from wfvae.io.video import read_video

    mask = control_frame_mask(num_frames, control_frames)
    needed = int(mask.nonzero().max()) + 1
    source = read_video(path, num_frames=num_frames, size=(height, width), resize_mode="crop")
    if source.shape[1] < needed:
        raise ConditionError(f"control video {path} has {source.shape[1]} frames, {needed} needed "
                             f"(--frames {num_frames}{', --control-frames' if control_frames is not None else ''})")
    if source.shape[1] < num_frames:
        source = torch.cat([source, source[:, -1:].expand(-1, num_frames - source.shape[1], -1, -1)], dim=1)
    return make_control(kind, source, **options), mask


# ---------------------------------------------------------------------------------------------- pipelines
def _as_clips(pipe: OpenSoraPipeline, image, video, height: int, width: int) -> Tuple[List[torch.Tensor], bool]:
    """Condition clips (3, t, H, W) in [-1, 1] from ``image`` (one or a list: PIL images, arrays or tensors
    (3, H, W) / (3, 1, H, W) in [-1, 1]) or ``video`` (a list of PIL frames or a tensor (3, T, H, W) in [-1, 1])."""
    if image is not None and video is not None:
        raise ConditionError("give image(s) or a video, not both")
    if video is not None:
        if isinstance(video, torch.Tensor) and video.dim() == 4:
            clip = video
        else:
            clip = pipe.video_processor.preprocess_video(video, height=height, width=width)[0]
        return [clip.float().cpu()], True
    if image is None:
        return [], False
    images = image if isinstance(image, (list, tuple)) else [image]
    clips = []
    for img in images:
        if isinstance(img, torch.Tensor) and img.dim() in (3, 4):
            clip = img if img.dim() == 4 else img[:, None]
        else:
            clip = pipe.video_processor.preprocess(img, height=height, width=width)[0][:, None]
        clips.append(clip.float().cpu())
    return clips, False


class OpenSoraImageToVideoPipeline(OpenSoraPipeline):
    """Image/video-conditioned sampling with an :class:`~opensora.models.OpenSoraInpaint` ``transformer``.

    Call arguments on top of :meth:`OpenSoraPipeline.__call__`: ``image`` (one or a list) or ``video`` (see
    :func:`_as_clips`; at the output size), ``mask_type``, ``cond_frames`` (the module docstring),
    ``noise_strength`` (std of noise added to the kept frames) and ``condition_generator`` (random frame choice and
    that noise; default seed 0). :attr:`image_condition` holds the last call's :class:`ImageCondition`.
    """

    image_condition: Optional[ImageCondition] = None

    def prepare_conditions(self, batch: int, num_frames: int, height: int, width: int, generator, image=None,
                           video=None, mask_type: Optional[str] = None, cond_frames: Optional[Sequence[int]] = None,
                           noise_strength: float = 0.0, condition_generator: Optional[torch.Generator] = None,
                           **kwargs) -> None:
        self._condition = None
        if not is_inpaint(self.transformer):
            if image is not None or video is not None or mask_type or cond_frames is not None or noise_strength:
                raise ConditionError("image/video conditions need an image-condition model (OpenSoraInpaint)")
            return super().prepare_conditions(batch, num_frames, height, width, generator, **kwargs)
        clips, from_video = _as_clips(self, image, video, height, width)
        gen = condition_generator or torch.Generator().manual_seed(0)
        noise_gen = torch.Generator().set_state(gen.get_state())  # the frame choice and the noise: same seed
        cond = build_image_condition(clips, from_video, num_frames, mask_type, cond_frames, gen, (height, width))
        if tuple(cond.video.shape[-2:]) != (height, width):
            raise ConditionError(f"condition frames are {tuple(cond.video.shape[-2:])}, the output {height}x{width}")
        masked, mask = encode_image_condition(self.vae, cond, noise_strength, noise_gen)
        self.image_condition = cond
        device = self._execution_device
        self._condition = (masked.to(device), mask.to(device))
        super().prepare_conditions(batch, num_frames, height, width, generator, **kwargs)

    def predict(self, latent_input, timestep, embeds, mask, **model_kwargs):
        """The latent with the masked-video latent and the mask appended (channels C + C + 4)."""
        if self._condition is not None:
            b = latent_input.shape[0]
            conds = [c.to(latent_input).expand(b, -1, -1, -1, -1) for c in self._condition]
            latent_input = torch.cat([latent_input] + conds, dim=1)
        return super().predict(latent_input, timestep, embeds, mask, **model_kwargs)


class OpenSoraControlPipeline(OpenSoraImageToVideoPipeline):
    """Structure control: a ``controller`` (:class:`~opensora.models.StructureController`) adds residuals to the
    blocks of the ``transformer`` (a text-to-video or an image-condition model; image conditions as in
    :class:`OpenSoraImageToVideoPipeline` for the latter).

    Call arguments on top: ``control`` (3, T, H, W) or (B_c, 3, T, H, W) in [-1, 1], a control signal at the
    output size (:func:`opensora.pipelines.control_signals.make_control`); ``control_frames`` (output frames
    controlled, default
    all; negative from the end); ``control_strength`` (factor on the residuals, default 1).
    """

    model_cpu_offload_seq = "text_encoder->controller->transformer->vae"

    def __init__(self, tokenizer, text_encoder, transformer, vae, scheduler, controller,
                 sampling: Optional[Dict[str, Any]] = None, text_encoder_location: Optional[str] = None):
        super().__init__(tokenizer, text_encoder, transformer, vae, scheduler, sampling, text_encoder_location)
        controller.check_base(transformer)
        self.register_modules(controller=controller)

    def prepare_conditions(self, batch: int, num_frames: int, height: int, width: int, generator,
                           control: Optional[torch.Tensor] = None, control_frames: Optional[Sequence[int]] = None,
                           control_strength: float = 1.0, **kwargs) -> None:
        self._control = None
        if control is not None:
            control = control if control.dim() == 5 else control[None]
            if tuple(control.shape[2:]) != (num_frames, height, width):
                raise ConditionError(f"control {tuple(control.shape[2:])} must be (frames, height, width) = "
                                     f"{(num_frames, height, width)}")
            frame_mask = None
            if control_frames is not None:
                frame_mask = latent_frame_mask(control_frame_mask(num_frames, control_frames),
                                               self.controller.config.temporal_compression)
            param = next(self.controller.parameters())
            tokens = self.controller.encode_control(control.to(param.device, param.dtype))
            self._control = (tokens, frame_mask, control_strength)
        super().prepare_conditions(batch, num_frames, height, width, generator, **kwargs)

    def predict(self, latent_input, timestep, embeds, mask, **model_kwargs):
        """The denoiser with the controller's residuals for the stored control."""
        if self._control is not None:
            (x, grid), frame_mask, strength = self._control
            b = latent_input.shape[0]
            if b % x.shape[0]:
                raise ValueError(f"control batch {x.shape[0]} does not divide the latent batch {b}")
            x = x.to(latent_input.device).repeat(b // x.shape[0], 1, 1)
            fm = None if frame_mask is None else frame_mask.to(latent_input.device)
            model_kwargs["block_residuals"] = self.controller(None, timestep, fm, strength, tokens=(x, grid),
                                                              return_dict=False)[0]
        return super().predict(latent_input, timestep, embeds, mask, **model_kwargs)


register_with_diffusers(OpenSoraImageToVideoPipeline, OpenSoraControlPipeline)
