"""Text-to-video with Open-Sora Plan v1.3: a diffusers pipeline (the call follows diffusers' Wan pipeline).

    from opensora.pipelines import OpenSoraPipeline  # importing a pipeline class registers them with diffusers
    from diffusers import DiffusionPipeline
    from diffusers.utils import export_to_video

    pipe = DiffusionPipeline.from_pretrained("assets/models/opensora-t2v")
    frames = pipe("a red ball moving to the right").frames           # (1, 17, 96, 96, 3) float32 in [0, 1]
    export_to_video(frames[0], "ball.mp4", fps=pipe.settings["fps"])

Registered modules: ``tokenizer`` and ``text_encoder`` (a transformers tokenizer and encoder; their
``last_hidden_state`` with the attention mask are the captions), ``transformer``
(:class:`opensora.models.OpenSoraT2V`), ``vae`` (:class:`wfvae.WFVAE`) and ``scheduler`` (a diffusers scheduler,
:func:`opensora.pipelines.schedulers.make_scheduler`). Registered configuration: ``sampling`` (the model folder's
settings,
:mod:`opensora.pipelines.defaults`) and ``text_encoder_location`` (where the text encoder is when the folder has none).

What a call does, as in the release's ``OpenSoraPipeline``:

1. prompts are wrapped in the release's quality template (unless ``raw_prompt``) and encoded with the negative
   prompts to (B, L, D) embeddings + (B, L) masks, repeated ``num_videos_per_prompt`` times (prompt-major);
2. the scheduler's timesteps are set and unit Gaussian latents (B, C, 1 + (T - 1)/4, H/8, W/8) are drawn and
   multiplied by its ``init_noise_sigma``;
3. each step runs the denoiser on [uncond, cond] in one batched call (guidance ``uncond + g * (cond - uncond)`` when
   ``g > 1``; only on the steps of ``guidance_interval``, the others run on cond alone) and lets the scheduler step;
4. latents live in the diffusion space ``(z - shift) * scale``; they are mapped back with the VAE's
   ``unscale_latents`` and decoded to frames.

``preset="quality"|"balanced"|"fast"`` (:mod:`opensora.pipelines.presets`; the folder's ``sampling`` may name a
default ``preset``) picks the scheduler, steps and guidance interval for the call; explicit arguments win.

Latents and scheduler arithmetic stay in float32 whatever the model dtype; the initial noise is drawn on the
generator's device (a CPU generator gives the same noise on any device).
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import CogVideoXLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from opensora.pipelines.defaults import (
    check_sampling, is_diffusers_index, part_folder, read_index, resolve_location, settings)
from opensora.pipelines.presets import check_guidance_interval, guided_steps, resolve_preset
from opensora.pipelines.schedulers import POSITIVE_PROMPT_TEMPLATE, make_scheduler

Prompts = Union[str, Sequence[str]]
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class OpenSoraPipelineOutput(BaseOutput):
    """``frames``: (B, T, H, W, 3) float32 numpy in [0, 1] (``np``), (B, T, 3, H, W) tensor in [0, 1] (``pt``),
    B lists of T PIL images (``pil``), or the diffusion-space latents (B, C, t, h, w) (``latent``)."""

    frames: Any


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale ("Common Diffusion Noise Schedules and Sample Steps are Flawed", sec. 3.4): bring the
    per-sample std of the guided prediction back to that of the conditional one, mixed by ``rescale``.
    Both (B, C, T, H, W)."""
    dims = list(range(1, cond.dim()))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1.0 - rescale) * guided


def _model_config(transformer):
    """(in_channels, out_channels, patch_size, patch_size_t, caption_channels) of a denoiser."""
    c = transformer.config
    get = (lambda k, d=None: c.get(k, d)) if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    in_ch = int(get("in_channels"))
    out_ch = get("output_channels") or get("out_channels") or in_ch
    return in_ch, int(out_ch), int(get("patch_size", 1)), int(get("patch_size_t", 1)), get("caption_channels")


def text_width(text_encoder) -> int:
    """Width D of a transformers text encoder's token features."""
    from opensora.text.encoders import config_hidden_size

    return config_hidden_size(text_encoder.config.to_dict())


def load_text_encoder(folder: str, dtype: Optional[torch.dtype] = None):
    """(tokenizer, encoder) from a local folder, checked strictly
    (:meth:`opensora.text.encoders.TextEncoder.from_pretrained`;
    nothing is downloaded)."""
    from opensora.text.encoders import TextEncoder

    wrapper = TextEncoder.from_pretrained(folder, dtype=dtype)
    return wrapper.tokenizer, wrapper.model


class OpenSoraLoraLoaderMixin(CogVideoXLoraLoaderMixin):
    """diffusers' LoRA loading for a pipeline whose only LoRA-able part is ``transformer``: ``load_lora_weights``,
    ``save_lora_weights``, ``set_adapters``, ``fuse_lora``, ``unload_lora_weights``. The files are diffusers'
    layout (``transformer.``-prefixed PEFT keys), which ``python -m opensora.training export --lora`` writes.
    (The CogVideoX loader does exactly this and nothing model-specific; it is reused, not copied.)"""


class OpenSoraPipeline(DiffusionPipeline, OpenSoraLoraLoaderMixin):
    """Text-to-video sampler (see the module docstring).

    Args:
        tokenizer, text_encoder: a transformers tokenizer and text encoder (``text_encoder_location`` is loaded
            when both are None).
        transformer: the denoiser (``latent (B, C, t, h, w), timestep (B,), encoder_hidden_states (B, 1, L, D),
            encoder_attention_mask (B, 1, L) -> .sample (B, C_out, t, h, w)``).
        vae: a :class:`wfvae.WFVAE` (``latent_dim`` = the denoiser's ``in_channels``).
        scheduler: a diffusers scheduler.
        sampling: the model's sampling settings (:data:`opensora.pipelines.defaults.SAMPLING_KEYS`).
        text_encoder_location: a folder or ``package:NAME/SUBFOLDER`` holding the text encoder.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["tokenizer", "text_encoder"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, tokenizer, text_encoder, transformer, vae, scheduler,
                 sampling: Optional[Dict[str, Any]] = None, text_encoder_location: Optional[str] = None):
        super().__init__()
        sampling = check_sampling(sampling)
        if text_encoder is None and tokenizer is None and text_encoder_location:
            tokenizer, text_encoder = load_text_encoder(resolve_location(text_encoder_location))
        self._check_components(text_encoder, transformer, vae)
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                              scheduler=scheduler)
        self.register_to_config(sampling=sampling, text_encoder_location=text_encoder_location)
        self.video_processor = VideoProcessor(vae_scale_factor=vae.spatial_compression)
        _, _, self.patch_size, self.patch_size_t, _ = _model_config(transformer)

    @staticmethod
    def _check_components(text_encoder, transformer, vae) -> None:
        in_ch, out_ch, _, _, caption = _model_config(transformer)
        if in_ch != vae.config.latent_dim:
            raise ValueError(f"the denoiser takes {in_ch} latent channels but the VAE has latent_dim "
                             f"{vae.config.latent_dim}")
        if out_ch < in_ch:
            raise ValueError(f"the denoiser predicts {out_ch} channels, fewer than its {in_ch} input channels")
        if text_encoder is not None and caption is not None and int(caption) != text_width(text_encoder):
            raise ValueError(f"the denoiser expects {caption}-wide captions but the text encoder gives "
                             f"{text_width(text_encoder)}")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` for a pipeline folder (``model_index.json`` with ``[library, class]``
        parts); a folder in the plain layout (``transformer/``, ``vae/``, ``text_encoder/`` and no index, or an
        older index giving paths) is assembled by :meth:`from_parts`."""
        folder = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not is_diffusers_index(read_index(folder)):
            return cls.from_parts(folder, torch_dtype=kwargs.get("torch_dtype"))
        return super().from_pretrained(folder, **kwargs)

    @classmethod
    def from_parts(cls, folder: str, transformer: Optional[str] = None, vae: Optional[str] = None,
                   text_encoder: Optional[str] = None, torch_dtype: Optional[torch.dtype] = None,
                   scheduler: Optional[str] = None, **kwargs) -> "OpenSoraPipeline":
        """A pipeline from part folders: each of ``transformer``, ``vae``, ``text_encoder`` given, else found in
        ``folder`` (:func:`opensora.pipelines.defaults.part_folder`; the denoiser may be ``folder`` itself). The
        ``sampling`` settings come from ``folder``'s index; ``scheduler`` (a name) overrides its scheduler.
        ``kwargs`` go to the constructor (e.g. ``controller``)."""
        from wfvae import WFVAE

        from opensora.pipelines.defaults import sampling_defaults
        from opensora.models import load_denoiser

        index = read_index(folder)
        paths = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder}
        for name in paths:
            paths[name] = paths[name] or part_folder(folder, name, index)
        paths["transformer"] = paths["transformer"] or folder
        missing = [name for name in ("vae", "text_encoder") if paths[name] is None]
        if missing:
            raise FileNotFoundError(f"{folder} has no {' or '.join(missing)} (subfolder or model_index.json entry)")
        sampling = sampling_defaults(folder, index)
        tokenizer, encoder = load_text_encoder(paths["text_encoder"], torch_dtype)
        return cls(tokenizer=tokenizer, text_encoder=encoder,
                   transformer=load_denoiser(paths["transformer"], dtype=torch_dtype),
                   vae=WFVAE.from_pretrained(paths["vae"], torch_dtype=torch_dtype),
                   scheduler=make_scheduler(scheduler or settings(sampling)["scheduler"]), sampling=sampling,
                   **kwargs)

    # ------------------------------------------------------------------ settings and shapes
    @property
    def settings(self) -> Dict[str, Any]:
        """Every sampling setting: the model folder's (``sampling``), else the release's."""
        return settings(self.config.get("sampling"))

    @property
    def defaults(self) -> Dict[str, Any]:
        """The settings as :meth:`__call__` keyword arguments."""
        s = self.settings
        return {"num_frames": s["num_frames"], "height": s["height"], "width": s["width"],
                "num_inference_steps": s["steps"], "guidance_scale": s["guidance"],
                "negative_prompt": s["negative_prompt"]}

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> Tuple[int, int, int, int, int]:
        """(B, C, 1 + (T - 1)/4, H/8, W/8), after checking that the sizes fit the VAE and the denoiser's patches."""
        f, s = self.vae.temporal_compression, self.vae.spatial_compression
        if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % f:
            raise ValueError(f"num_frames must be {f}n + 1 (1, {f + 1}, {2 * f + 1}, ...), got {num_frames}")
        unit = s * self.patch_size
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < unit or value % unit:
                raise ValueError(f"{name} must be a positive multiple of {unit} (VAE {s}x times patch size "
                                 f"{self.patch_size}), got {value}")
        t = 1 + (num_frames - 1) // f
        if t % self.patch_size_t:
            raise ValueError(f"{num_frames} frames give {t} latent frames, not divisible by the denoiser's temporal "
                             f"patch size {self.patch_size_t}")
        return batch, self.vae.config.latent_dim, t, height // s, width // s

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: List[str], max_sequence_length: Optional[int] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token features (N, L, D) in the denoiser's dtype and masks (N, L) on the execution device, for texts used
        as given; ``L`` = ``max_sequence_length`` (default: the settings' ``max_length``), capped at the encoder's
        ``max_position_embeddings``."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this pipeline has no text encoder: pass prompt_embeds (and negative_prompt_embeds)")
        device = self._execution_device
        length = max_sequence_length or self.settings["max_length"]
        limit = getattr(self.text_encoder.config, "max_position_embeddings", None)
        length = min(length, limit) if limit else length
        tokens = self.tokenizer(list(texts), padding="max_length", max_length=length, truncation=True,
                                return_attention_mask=True, return_tensors="pt")
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        embeds = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return embeds.to(device, self.transformer.dtype), mask

    def prompt_texts(self, prompts: List[str], raw_prompt: Optional[bool] = None) -> List[str]:
        """The texts encoded for ``prompts``: wrapped in the release's quality template unless ``raw_prompt``
        (default: the settings')."""
        raw = self.settings["raw_prompt"] if raw_prompt is None else raw_prompt
        return list(prompts) if raw else [POSITIVE_PROMPT_TEMPLATE.format(p) for p in prompts]

    def encode_prompt(self, prompt: Optional[Prompts], negative_prompt: Optional[Prompts] = None,
                      do_classifier_free_guidance: bool = True, num_videos_per_prompt: int = 1,
                      prompt_embeds: Optional[torch.Tensor] = None,
                      negative_prompt_embeds: Optional[torch.Tensor] = None,
                      prompt_attention_mask: Optional[torch.Tensor] = None,
                      negative_prompt_attention_mask: Optional[torch.Tensor] = None,
                      max_sequence_length: Optional[int] = None, raw_prompt: Optional[bool] = None):
        """(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask), each
        repeated ``num_videos_per_prompt`` times (row ``i * n + j``: prompt i, video j); the negatives are None
        without guidance. Prompts get the quality template unless ``raw_prompt`` (default: the settings'); the
        negative prompt defaults to the settings' (one for all prompts, or one per prompt)."""
        s = self.settings
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError("prompt must be a non-empty string or a list of non-empty strings")
            prompt_embeds, prompt_attention_mask = self.encode_text(self.prompt_texts(prompts, raw_prompt),
                                                                    max_sequence_length)
        elif prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], device=prompt_embeds.device)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = s["negative_prompt"] if negative_prompt is None else negative_prompt
            negatives = [negative] * batch if isinstance(negative, str) else list(negative)
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts")
            negative_prompt_embeds, negative_prompt_attention_mask = self.encode_text(negatives, max_sequence_length)
        elif do_classifier_free_guidance and negative_prompt_attention_mask is None:
            negative_prompt_attention_mask = torch.ones(negative_prompt_embeds.shape[:2],
                                                        device=negative_prompt_embeds.device)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_attention_mask = None

        def repeat(x):
            return None if x is None else x.repeat_interleave(num_videos_per_prompt, dim=0)

        return (repeat(prompt_embeds), repeat(prompt_attention_mask), repeat(negative_prompt_embeds),
                repeat(negative_prompt_attention_mask))

    # ------------------------------------------------------------------ sampling
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @staticmethod
    def _step_kwargs(scheduler, generator, eta: float) -> dict:
        params = inspect.signature(scheduler.step).parameters
        return {k: v for k, v in (("generator", generator), ("eta", eta)) if k in params}

    def _cache_context(self, name: str):
        """The transformer's step-cache context (diffusers' ``CacheMixin``); none for a denoiser without one."""
        opener = getattr(self.transformer, "cache_context", None)
        return opener(name) if opener is not None else contextlib.nullcontext()

    def predict(self, latent_input: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                mask: torch.Tensor, **model_kwargs) -> torch.Tensor:
        """One denoiser call: latents (N, C, t, h, w), timesteps (N,), captions (N, L, D), masks (N, L) ->
        prediction (N, C_out, t, h, w). Condition pipelines extend it."""
        return self.transformer(latent_input.to(self.transformer.dtype), timestep,
                                encoder_hidden_states=embeds.unsqueeze(1), encoder_attention_mask=mask.unsqueeze(1),
                                return_dict=False, **model_kwargs)[0]

    def denoise(self, latents: torch.Tensor, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor,
                negative_prompt_embeds: Optional[torch.Tensor], negative_mask: Optional[torch.Tensor],
                timesteps: torch.Tensor, guidance_rescale: float = 0.0, generator=None, eta: float = 0.0,
                callback_on_step_end: Optional[Callable] = None,
                callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), scheduler=None,
                guidance_interval: Optional[Tuple[float, float]] = None) -> torch.Tensor:
        """The sampling loop from scaled noise ``latents`` (B, C, t, h, w) float32; returns the final latents.
        Guided when negative embeddings are given: rows [negatives, prompts] in one call, on the steps of
        ``guidance_interval`` ((start, end) fractions of the steps; default all). ``scheduler``: default
        ``self.scheduler``, with its timesteps set."""
        scheduler = self.scheduler if scheduler is None else scheduler
        in_ch = latents.shape[1]
        step_kwargs = self._step_kwargs(scheduler, generator, eta)
        device = self._execution_device
        guide = guided_steps(len(timesteps), guidance_interval)
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                guided = negative_prompt_embeds is not None and guide[i]
                embeds = torch.cat([negative_prompt_embeds, prompt_embeds]) if guided else prompt_embeds
                mask = torch.cat([negative_mask, prompt_mask]) if guided else prompt_mask
                model_input = torch.cat([latents, latents]) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t)
                timestep = t.to(device, torch.float32).reshape(1).expand(model_input.shape[0])
                # one context for the batched [uncond, cond] call: diffusers' step caches key their state by it
                with self._cache_context("guided" if guided else "cond"):
                    pred = self.predict(model_input, timestep, embeds, mask)[:, :in_ch].float()
                if guided:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + self.guidance_scale * (cond - uncond)
                    if guidance_rescale > 0:
                        pred = rescale_guidance(pred, cond, guidance_rescale)
                latents = scheduler.step(pred, t, latents, return_dict=False, **step_kwargs)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "negative_prompt_embeds": negative_prompt_embeds}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    latents = out.pop("latents", latents)
                    prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = out.pop("negative_prompt_embeds", negative_prompt_embeds)
                bar.update()
        self._current_timestep = None
        return latents

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents (B, C, t, h, w) -> video (B, 3, 1 + 4(t - 1), 8h, 8w) float32 in [-1, 1]
        (``unscale_latents`` in float32, then the VAE decodes in its own dtype; its tiling/slicing settings
        apply)."""
        z = self.vae.unscale_latents(latents.float())
        video = self.vae.decode(z.to(self.vae.device, self.vae.dtype), return_dict=False)[0]
        return video.float().clamp_(-1.0, 1.0)

    def prepare_conditions(self, batch: int, num_frames: int, height: int, width: int, generator, **kwargs) -> None:
        """Hook for condition pipelines: set up what :meth:`predict` adds (nothing here; no extra arguments)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")

    @torch.no_grad()
    def __call__(self, prompt: Optional[Prompts] = None, negative_prompt: Optional[Prompts] = None,
                 height: Optional[int] = None, width: Optional[int] = None, num_frames: Optional[int] = None,
                 num_inference_steps: Optional[int] = None, guidance_scale: Optional[float] = None,
                 guidance_rescale: float = 0.0, num_videos_per_prompt: int = 1,
                 generator: Union[torch.Generator, List[torch.Generator], None] = None,
                 latents: Optional[torch.Tensor] = None, prompt_embeds: Optional[torch.Tensor] = None,
                 negative_prompt_embeds: Optional[torch.Tensor] = None,
                 prompt_attention_mask: Optional[torch.Tensor] = None,
                 negative_prompt_attention_mask: Optional[torch.Tensor] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 max_sequence_length: Optional[int] = None, raw_prompt: Optional[bool] = None, eta: float = 0.0,
                 preset: Optional[str] = None, guidance_interval: Optional[Tuple[float, float]] = None,
                 **conditions):
        """Generate ``num_videos_per_prompt`` videos per prompt.

        Unset (None) ``height``, ``width``, ``num_frames``, ``num_inference_steps``, ``guidance_scale``,
        ``negative_prompt``, ``max_sequence_length`` and ``raw_prompt`` come from :attr:`settings`. Guidance is on
        when ``guidance_scale > 1``. ``latents``: unit-variance noise (B * n, C, t, h, w) to start from.
        ``prompt_embeds`` (B, L, D) (+ ``prompt_attention_mask`` (B, L)) replace ``prompt``, likewise the negatives.
        ``callback_on_step_end(pipe, step, timestep, tensors)`` after every step may return replacements for
        ``callback_on_step_end_tensor_inputs``. ``eta``: DDIM's. ``conditions``: see the condition pipelines.
        ``preset``: ``quality`` | ``balanced`` | ``fast`` (default: the settings' ``preset``, else the settings as
        they are): a scheduler, ``num_inference_steps`` and ``guidance_interval`` for this call
        (:data:`opensora.pipelines.presets.PRESETS`; ``self.scheduler`` is left as it is), each overridden by an
        explicit argument. ``guidance_interval``: (start, end) fractions of the steps that are guided (default all).

        Returns :class:`OpenSoraPipelineOutput` (``frames``; see its docstring), or ``(frames,)`` without
        ``return_dict``.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be in {self._callback_tensor_inputs}, got {bad}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give prompt or prompt_embeds (one of them)")
        s = self.settings
        chosen = resolve_preset(s.get("preset") if preset is None else preset, num_inference_steps,
                                guidance_interval=guidance_interval)
        num_frames = s["num_frames"] if num_frames is None else num_frames
        height, width = s["height"] if height is None else height, s["width"] if width is None else width
        steps = s["steps"] if chosen["num_inference_steps"] is None else chosen["num_inference_steps"]
        guidance_interval = check_guidance_interval(chosen["guidance_interval"])
        scheduler = self.scheduler if chosen["scheduler"] is None else \
            make_scheduler(chosen["scheduler"], **chosen["scheduler_options"])
        self._guidance_scale = s["guidance"] if guidance_scale is None else guidance_scale
        if not isinstance(steps, int) or steps < 1 or not isinstance(num_videos_per_prompt, int) \
                or num_videos_per_prompt < 1:
            raise ValueError("num_inference_steps and num_videos_per_prompt must be integers >= 1")
        self._interrupt, self._current_timestep = False, None

        embeds, mask, neg, neg_mask = self.encode_prompt(
            prompt, negative_prompt, self.do_classifier_free_guidance, num_videos_per_prompt, prompt_embeds,
            negative_prompt_embeds, prompt_attention_mask, negative_prompt_attention_mask, max_sequence_length,
            raw_prompt)
        shape = self.latent_shape(embeds.shape[0], num_frames, height, width)
        device = self._execution_device
        self.prepare_conditions(shape[0], num_frames, height, width, generator, **conditions)
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        self._num_timesteps = len(timesteps)
        if latents is None:
            noise_device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
            latents = randn_tensor(shape, generator=generator, device=noise_device, dtype=torch.float32)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
        latents = latents.to(device, torch.float32) * scheduler.init_noise_sigma
        latents = self.denoise(latents, embeds, mask, neg, neg_mask, timesteps, guidance_rescale, generator, eta,
                               callback_on_step_end, callback_on_step_end_tensor_inputs, scheduler=scheduler,
                               guidance_interval=guidance_interval)
        if output_type == "latent":
            frames = latents
        else:
            frames = self.video_processor.postprocess_video(self.decode_latents(latents), output_type=output_type)
        self.maybe_free_model_hooks()
        return OpenSoraPipelineOutput(frames=frames) if return_dict else (frames,)


def register_with_diffusers(*classes: type) -> None:
    """Make ``DiffusionPipeline.from_pretrained`` find these classes by the ``_class_name`` of a
    ``model_index.json`` (diffusers looks pipeline classes up in its own namespace only)."""
    import diffusers

    for cls in classes:
        setattr(diffusers, cls.__name__, cls)


register_with_diffusers(OpenSoraPipeline)
import opensora.pipelines.conditions as condition_pipeline   # noqa: E402,F401  (registers the condition pipelines too)
