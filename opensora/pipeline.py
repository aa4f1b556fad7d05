"""Text-to-video sampling: the Open-Sora Plan v1.3 denoiser, a WF-VAE, a text encoder and a diffusers scheduler.

    pipe = OpenSoraPipeline(transformer, vae, text_encoder, make_scheduler()).to("cuda")
    video = pipe("a cat playing the piano", generator=torch.Generator().manual_seed(1234))  # (1, 3, 93, 352, 640)

What happens, as in the release's ``OpenSoraPipeline``:

1. prompts and negative prompts are encoded to (B, L, D) embeddings + (B, L) masks, repeated ``num_samples`` times;
2. the scheduler's timesteps are set, and Gaussian latents (B, C, 1 + (T - 1)/4, H/8, W/8) are drawn and multiplied
   by its ``init_noise_sigma`` (4096 for EulerAncestral on the zero-SNR schedule);
3. each step runs the denoiser once on the batch [uncond, cond] (classifier-free guidance,
   ``uncond + g * (cond - uncond)``; optional guidance rescale) and lets the scheduler step;
4. the latents, which live in the diffusion space ``(z - shift) * scale``, are mapped back with the VAE's
   ``unscale_latents`` (``z / scale + shift``, the release's WF-VAE wrapper) and decoded to frames in [-1, 1].

Differences from the release, on purpose: latents and scheduler arithmetic stay in float32 whatever the model
dtype (the model gets a cast copy), the initial noise is drawn from the generator's device (a CPU generator gives the
same noise on any device), and prompt ``i`` sample ``j`` is batch row ``i * num_samples + j`` for embeddings and
masks alike.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from .schedulers import (DEFAULT_GUIDANCE, DEFAULT_HEIGHT, DEFAULT_NUM_FRAMES, DEFAULT_STEPS, DEFAULT_WIDTH,
                         NEGATIVE_PROMPT)

Prompts = Union[str, Sequence[str]]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale ("Common Diffusion Noise Schedules and Sample Steps are Flawed", sec. 3.4): bring the
    per-sample std of the guided prediction back to that of the conditional one, mixed by ``rescale``.
    Both (B, C, T, H, W)."""
    dims = list(range(1, cond.dim()))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1.0 - rescale) * guided


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, latent_chunk: Optional[int] = None, tile: Optional[int] = None,
                   tile_overlap: Optional[int] = None) -> torch.Tensor:
    """Diffusion-space latents (B, C, t, h, w) -> video (B, 3, 1 + 4(t - 1), 8h, 8w) float32 in [-1, 1].

    ``unscale_latents`` runs in float32, then the VAE decodes in its own dtype and device (``latent_chunk``,
    ``tile``, ``tile_overlap`` as in :meth:`wfvae.WFVAE.decode`)."""
    z = vae.unscale_latents(latents.float())
    video = vae.decode(z.to(vae.dtype), latent_chunk=latent_chunk, tile=tile, tile_overlap=tile_overlap)
    return video.float().clamp_(-1.0, 1.0)


def _model_config(transformer):
    """(in_channels, out_channels, patch_size, patch_size_t, caption_channels) of a denoiser."""
    c = transformer.config
    get = (lambda k, d=None: c.get(k, d)) if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    in_ch = int(get("in_channels"))
    out_ch = get("output_channels") or get("out_channels") or in_ch
    return in_ch, int(out_ch), int(get("patch_size", 1)), int(get("patch_size_t", 1)), get("caption_channels")


class OpenSoraPipeline:
    """Text-to-video sampler.

    Args:
        transformer: the denoiser, ``transformer(hidden_states (B, C, t, h, w), timestep (B,),
            encoder_hidden_states (B, 1, L, D), encoder_attention_mask (B, 1, L)) -> (B, C_out, t, h, w)``, with a
            ``config`` giving ``in_channels``, ``patch_size``, ``patch_size_t``, ``caption_channels``
            (:class:`opensora.models.OpenSoraT2V`).
        vae: a :class:`wfvae.WFVAE` (``latent_dim`` must equal the denoiser's ``in_channels``).
        text_encoder: a :class:`opensora.text.TextEncoder` (its width must equal ``caption_channels``).
        scheduler: a diffusers scheduler, e.g. :func:`opensora.schedulers.make_scheduler`.

    Modules run where they are; :meth:`to` moves them, :meth:`enable_cpu_offload` keeps them on the CPU and moves
    each to the device only while it runs.
    """

    def __init__(self, transformer: torch.nn.Module, vae, text_encoder, scheduler):
        in_ch, out_ch, patch, patch_t, caption = _model_config(transformer)
        if in_ch != vae.config.latent_dim:
            raise ValueError(f"the denoiser takes {in_ch} latent channels but the VAE has latent_dim "
                             f"{vae.config.latent_dim}")
        if out_ch < in_ch:
            raise ValueError(f"the denoiser predicts {out_ch} channels, fewer than its {in_ch} input channels")
        if caption is not None and int(caption) != text_encoder.hidden_size:
            raise ValueError(f"the denoiser expects {caption}-wide captions but the text encoder gives "
                             f"{text_encoder.hidden_size}")
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.scheduler = scheduler
        self.patch_size, self.patch_size_t = patch, patch_t
        self._offload_device: Optional[torch.device] = None
        self.defaults: dict = {}  # sampling defaults of the model folder (from_pretrained)

    @classmethod
    def from_pretrained(cls, folder: str, device: Union[str, torch.device] = "cpu",
                        dtype: Optional[torch.dtype] = None, max_length: Optional[int] = None,
                        scheduler: Optional[str] = None) -> "OpenSoraPipeline":
        """A pipeline from a model folder in the pipeline layout (``transformer/``, ``vae/``, ``text_encoder/``, or
        a ``model_index.json`` saying where they are: :mod:`opensora.model_index`). The index's ``sampling``
        defaults are kept in :attr:`defaults` (keyword names of :meth:`__call__` where they match)."""
        from wfvae import WFVAE

        from .model_index import part_folder, read_index, sampling_defaults
        from .models import load_denoiser
        from .schedulers import DEFAULT_SCHEDULER, make_scheduler
        from .text import TextEncoder

        index = read_index(folder)
        parts = {name: part_folder(folder, name, index) for name in ("transformer", "vae", "text_encoder")}
        missing = [name for name in ("vae", "text_encoder") if parts[name] is None]
        if missing:
            raise FileNotFoundError(f"{folder} has no {' or '.join(missing)} (subfolder or model_index.json entry)")
        sampling = sampling_defaults(folder, index)
        text = TextEncoder.from_pretrained(parts["text_encoder"], max_length=max_length or sampling.get(
            "max_length", 512), dtype=dtype, device=device)
        pipe = cls(load_denoiser(parts["transformer"] or folder, dtype=dtype, device=device),
                   WFVAE.from_pretrained(parts["vae"], dtype=dtype, device=device), text,
                   make_scheduler(scheduler or sampling.get("scheduler", DEFAULT_SCHEDULER)))
        names = {"steps": "num_inference_steps", "guidance": "guidance_scale"}
        pipe.defaults = {names.get(k, k): v for k, v in sampling.items()
                         if k in ("num_frames", "height", "width", "steps", "guidance", "negative_prompt")}
        return pipe

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        """Where the computation runs."""
        if self._offload_device is not None:
            return self._offload_device
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's dtype (the text embeddings are cast to it)."""
        return next(self.transformer.parameters()).dtype

    def to(self, device: Union[str, torch.device]) -> "OpenSoraPipeline":
        """Move every module to ``device`` (and turn CPU offload off)."""
        device = torch.device(device)
        self._offload_device = None
        self.transformer.to(device)
        self.vae.to(device)
        self.text_encoder.cpu_offload = False
        self.text_encoder.to(device)
        return self

    def enable_cpu_offload(self, device: Union[str, torch.device]) -> "OpenSoraPipeline":
        """Keep the weights on the CPU; move the text encoder, the denoiser and the VAE to ``device`` one at a time,
        only while each runs. Peak memory: the largest module plus activations."""
        device = torch.device(device)
        self._offload_device = device
        self.transformer.to("cpu")
        self.vae.to("cpu")
        self.text_encoder.cpu_offload = True
        self.text_encoder.to(device)
        return self

    @contextmanager
    def _on_device(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        if self._offload_device is None:
            yield module
            return
        module.to(self._offload_device)
        try:
            yield module
        finally:
            module.to("cpu")

    # ------------------------------------------------------------------ checks and shapes
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

    @staticmethod
    def _prompt_list(prompt: Prompts) -> List[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("prompt must be a non-empty string or a list of non-empty strings")
        return prompts

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompt: Prompts, negative_prompt: Optional[Prompts] = NEGATIVE_PROMPT,
                      num_samples: int = 1, guidance: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """Caption embeddings (N, L, D) in the denoiser's dtype and masks (N, L), on :attr:`device`.

        With ``guidance`` the rows are [negatives..., prompts...] (N = 2 * B * num_samples), else the prompts only.
        ``negative_prompt``: one string for every prompt, a list with one per prompt, or None (empty strings).
        """
        prompts = self._prompt_list(prompt)
        texts = list(prompts)
        if guidance:
            if negative_prompt is None:
                negatives = [""] * len(prompts)
            elif isinstance(negative_prompt, str):
                negatives = [negative_prompt] * len(prompts)
            else:
                negatives = list(negative_prompt)
                if len(negatives) != len(prompts):
                    raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
            texts = negatives + texts
        self.text_encoder.to(self.device)
        embeds, mask = self.text_encoder.encode(texts)
        embeds = embeds.to(self.device, self.dtype).repeat_interleave(num_samples, dim=0)
        return embeds, mask.to(self.device).repeat_interleave(num_samples, dim=0)

    # ------------------------------------------------------------------ sampling
    def prepare_latents(self, shape: Tuple[int, ...], generator: Optional[torch.Generator] = None,
                        latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unit Gaussian noise of ``shape`` (drawn on the generator's device; or the given ``latents``), float32 on
        :attr:`device`. :meth:`denoise` scales it by the scheduler's ``init_noise_sigma``."""
        if latents is None:
            noise_device = generator.device if generator is not None else self.device
            latents = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
        return latents.to(self.device, torch.float32)

    def _step_kwargs(self, generator: Optional[torch.Generator], eta: float) -> dict:
        params = inspect.signature(self.scheduler.step).parameters
        kwargs = {}
        if "generator" in params:
            kwargs["generator"] = generator
        if "eta" in params:
            kwargs["eta"] = eta
        return kwargs

    @torch.no_grad()
    def denoise(self, noise: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor, num_inference_steps: int,
                guidance_scale: float, guidance_rescale: float = 0.0, generator: Optional[torch.Generator] = None,
                eta: float = 0.0, callback: Optional[StepCallback] = None, progress: bool = True) -> torch.Tensor:
        """The sampling loop. Returns the final latents (B, C, t, h, w) float32.

        ``noise`` (B, C, t, h, w) unit Gaussian, float32, is scaled here by the scheduler's ``init_noise_sigma``
        (known once the timesteps are set). ``embeds`` (B or 2B, L, D) and ``mask`` (B or 2B, L) come from
        :meth:`encode_prompt`; with 2B rows ([uncond, cond]) the prediction is guided,
        ``uncond + guidance_scale * (cond - uncond)``. ``callback(step_index, timestep, latents)`` runs after every
        step."""
        guided = embeds.shape[0] == 2 * noise.shape[0]
        if not guided and embeds.shape[0] != noise.shape[0]:
            raise ValueError(f"{embeds.shape[0]} caption rows for {noise.shape[0]} latents")
        in_ch = noise.shape[1]
        embeds, mask = embeds.unsqueeze(1), mask.unsqueeze(1)  # (N, 1, L, D), (N, 1, L) as the release passes them
        step_kwargs = self._step_kwargs(generator, eta)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        latents = noise.float() * self.scheduler.init_noise_sigma
        with self._on_device(self.transformer) as model, \
                tqdm(total=len(timesteps), desc="denoise", unit="step", disable=not progress, leave=False) as bar:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, latents]) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                timestep = t.to(self.device, torch.float32).reshape(1).expand(model_input.shape[0])
                pred = model(model_input.to(self.dtype), timestep, encoder_hidden_states=embeds,
                             encoder_attention_mask=mask)
                pred = pred[:, :in_ch].float()  # a learned-variance half, if any, is not used
                if guided:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                    if guidance_rescale > 0:
                        pred = rescale_guidance(pred, cond, guidance_rescale)
                latents = self.scheduler.step(pred, t, latents, return_dict=False, **step_kwargs)[0]
                if callback is not None:
                    callback(i, t, latents)
                bar.update()
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, latent_chunk: Optional[int] = None, tile: Optional[int] = None,
               tile_overlap: Optional[int] = None) -> torch.Tensor:
        """:func:`decode_latents` with this pipeline's VAE (moved to the device for the call under offload)."""
        with self._on_device(self.vae) as vae:
            return decode_latents(vae, latents, latent_chunk, tile, tile_overlap)

    @torch.no_grad()
    def __call__(self, prompt: Prompts, negative_prompt: Optional[Prompts] = NEGATIVE_PROMPT,
                 num_frames: int = DEFAULT_NUM_FRAMES, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH,
                 num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
                 guidance_rescale: float = 0.0, num_samples: int = 1, generator: Optional[torch.Generator] = None,
                 latents: Optional[torch.Tensor] = None, eta: float = 0.0, vae_latent_chunk: Optional[int] = None,
                 vae_tile: Optional[int] = None, vae_tile_overlap: Optional[int] = None, output_type: str = "video",
                 callback: Optional[StepCallback] = None, progress: bool = True) -> torch.Tensor:
        """Generate ``num_samples`` videos per prompt.

        Args:
            prompt: a prompt or a list of B prompts (used as given: the release's quality template is added by the
                caller, see :data:`opensora.schedulers.POSITIVE_PROMPT_TEMPLATE`).
            negative_prompt: the release's negative prompt by default; None = empty; one per prompt as a list.
            num_frames: 4n + 1 (1 = an image).
            height, width: multiples of 8 * patch_size (16 for the release).
            num_inference_steps, guidance_scale: guidance is on when ``guidance_scale > 1`` (the release's rule).
            guidance_rescale: 0 = off (the release's default).
            generator: seeds the initial noise and ancestral steps; same seed and device -> same output.
            latents: unit-variance noise (B * num_samples, C, t, h, w) to start from, instead of drawing it.
            eta: DDIM's eta (other schedulers ignore it).
            vae_latent_chunk, vae_tile, vae_tile_overlap: WF-VAE decoding in chunks / tiles.
            output_type: "video" -> (B * num_samples, 3, T, H, W) float32 in [-1, 1]; "latents" -> the final
                diffusion-space latents (B * num_samples, C, t, h, w) float32 (decode with :meth:`decode`).
            callback: ``callback(step_index, timestep, latents)`` after every step.
            progress: tqdm progress bar over the steps.

        Rows are ordered prompt-major: prompt i, sample j is row ``i * num_samples + j``.
        """
        if output_type not in ("video", "latents"):
            raise ValueError(f"output_type must be 'video' or 'latents', got {output_type!r}")
        if num_inference_steps < 1 or num_samples < 1:
            raise ValueError("num_inference_steps and num_samples must be >= 1")
        prompts = self._prompt_list(prompt)
        shape = self.latent_shape(len(prompts) * num_samples, num_frames, height, width)
        guidance = guidance_scale > 1.0
        embeds, mask = self.encode_prompt(prompts, negative_prompt, num_samples, guidance)
        noise = self.prepare_latents(shape, generator, latents)
        latents = self.denoise(noise, embeds, mask, num_inference_steps, guidance_scale, guidance_rescale,
                               generator, eta, callback, progress)
        if output_type == "latents":
            return latents
        return self.decode(latents, vae_latent_chunk, vae_tile, vae_tile_overlap)
