"""Training the Open-Sora Plan v1.3 denoiser (text-to-video or image-condition) with Lightning.

    python tools/train.py fit --config configs/opensora/tiny.yaml
    python tools/train.py fit --config configs/opensora/t2v_v1_3.yaml --ckpt_path runs/t2v/checkpoints/last.ckpt
    python -m opensora.training export runs/t2v/checkpoints/last.ckpt out/OpenSoraT2V [--no-ema]
    python -m opensora.training cache --config configs/opensora/t2v_synthetic.yaml cache_dir   # latents + text

One step, for latents x0 (B, C, t, h, w) (VAE-encoded ``video`` or cached ``latents``) and caption features::

    t_i  ~ stratified: sample i of rank r (world W, batch B) in stratum [g, g+1) * 1000/(B W), g = r B + i
           (optionally mapped to favour the noisier or cleaner steps, :func:`bias_timesteps`)
    v:    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps,   target = sqrt(a_t) eps - sqrt(1 - a_t) x0
          (DDPM linear betas 1e-4..0.02 rescaled to zero terminal SNR, :func:`training_scheduler`)
          weight = min(snr_t, gamma) / (snr_t + 1)        # min-SNR-gamma for v-prediction, snr_t = a_t / (1 - a_t)
    flow: s = t/1000, x_s = (1 - s) x0 + s eps,  target = eps - x0,  weight = 1   (rectified flow)
    loss = mean_i weight_i * sum(mask (pred - target)^2) / sum(mask)   # mask: batch["latent_mask"] (B, t, h, w)

The image-condition model (:class:`~opensora.models.OpenSoraInpaint`) also gets the masked-video latent and the
compressed mask: from ``batch["mask"]`` (B, 1, T, H, W) (1 = generate), the kept frames get condition noise
(:func:`opensora.pipelines.masks.condition_noise`), are VAE-encoded, and the mask is compressed to the latent grid.

An EMA copy of the denoiser (``ema_decay``) is updated right after every optimizer step (so a checkpoint written at
that step holds it), saved in checkpoints (restored on resume with the step and the optimizer), validated
(``val/loss_ema``) and exported by :func:`opensora.training.offline.export`. Resume is exact
(:mod:`wfvae.training.resume`): each step's random numbers derive from ``(seed, global_step, micro-batch, rank)``
and the data loader saves its place in the epoch. :func:`opensora.training.offline.write_latent_cache` precomputes
latents and caption features for small GPUs. Adaptive gradient clipping is the
:class:`opensora.training.grad_clip.AdaptiveGradClip` callback; bf16 is the Trainer's ``precision: bf16-mixed``.
Under Lightning's ``ModelParallelStrategy`` :meth:`DenoiserTraining.configure_model` shards the denoiser and its EMA
with FSDP2 (:mod:`opensora.training.sharding`); with one process or DDP it does nothing.
Captions are encoded here (``text_encoder``), not in the data loaders.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Literal, Optional, Sequence, Tuple

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from wfvae.training.ema import ema_copy
from wfvae.training.resume import step_rng, training_step_seed
from wfvae.training.module import lr_multiplier

from opensora.training.controller import training_scheduler
from opensora.pipelines.masks import compress_mask, condition_noise
from opensora.models import OpenSoraInpaint, OpenSoraInpaintConfig, OpenSoraT2V, OpenSoraT2VConfig
from opensora.pipelines.defaults import resolve_location
from opensora.models.diffusers_glue import LORA_TARGETS, lora_config, save_lora_weights
from opensora.models.inpaint import load_denoiser, read_denoiser_config
from opensora.training.objectives import v_prediction
from opensora.training.sharding import full_state_dict, is_sharded, shard_denoiser

FROZEN_PREFIXES = ("vae.",)


def stratified_timesteps(batch: int, rank: int = 0, world: int = 1, num_steps: int = 1000,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B,) float times in [0, num_steps): sample ``i`` of ``rank`` uniform in its own stratum of the global batch
    (``B * world`` equal strata), so every global batch covers the whole range."""
    total = batch * world
    index = rank * batch + torch.arange(batch, dtype=torch.float64)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return ((index + u) * num_steps / total).float()


def bias_timesteps(times: torch.Tensor, strategy: str = "none", multiplier: float = 1.0, portion: float = 0.25,
                   num_steps: int = 1000) -> torch.Tensor:
    """Map uniform times in [0, num_steps) to a density ``multiplier`` times higher on the ``portion`` of the range
    that ``strategy`` names: ``"later"`` (the noisiest steps, near ``num_steps``), ``"earlier"`` (the cleanest)
    or ``"none"`` (unchanged) -- diffusers' ``timestep_bias_*`` training options, as an inverse CDF: the map is
    monotone, so stratified times stay stratified.
    """
    if strategy not in ("none", "later", "earlier"):
        raise ValueError(f"timestep_bias_strategy must be 'none', 'later' or 'earlier', got {strategy!r}")
    if multiplier <= 0 or not 0.0 < portion < 1.0:
        raise ValueError(f"need timestep_bias_multiplier > 0 and 0 < timestep_bias_portion < 1, "
                         f"got {multiplier} and {portion}")
    if strategy == "none" or multiplier == 1.0:
        return times
    u = times.double() / num_steps
    if strategy == "earlier":                  # the mirror image of "later"
        u = 1 - u
    a = 1.0 - portion                          # the plain part [0, a) has density 1, [a, 1) density multiplier
    mass = u * (a + multiplier * portion)
    out = torch.where(mass < a, mass, a + (mass - a) / multiplier)
    if strategy == "earlier":
        out = 1 - out
    return (out.clamp(0, 1 - 1e-9) * num_steps).to(times.dtype)


def min_snr_weight(snr: torch.Tensor, gamma: Optional[float]) -> torch.Tensor:
    """Min-SNR-gamma weight of the v-prediction loss, ``min(snr, gamma) / (snr + 1)`` (1 when gamma is None)."""
    if gamma is None:
        return torch.ones_like(snr)
    return torch.clamp(snr, max=gamma) / (snr + 1)


def build_config(pretrained: Optional[str], config: Optional[Dict[str, Any]], inpaint: bool) -> OpenSoraT2VConfig:
    """The denoiser config a :class:`DenoiserTraining` builds (without weights)."""
    if pretrained is not None:
        base = read_denoiser_config(pretrained)
        return OpenSoraInpaintConfig.from_t2v(base) if inpaint and not isinstance(base, OpenSoraInpaintConfig) else base
    cls = OpenSoraInpaintConfig if inpaint else OpenSoraT2VConfig
    return cls.from_dict(dict(config))


class DenoiserTraining(L.LightningModule):
    """Trains an :class:`~opensora.models.OpenSoraT2V` (or :class:`~opensora.models.OpenSoraInpaint`) denoiser.

    Args:
        pretrained: denoiser folder to start from (release layout); with ``inpaint`` a text-to-video folder is
            turned into an image-condition model (:meth:`OpenSoraInpaint.from_t2v`). Or
        model_config: config fields of a random denoiser (seeded by ``seed``).
        inpaint: train the image-condition model.
        vae, text_encoder, max_text_length: WF-VAE folder (for ``video`` batches) and text encoder folder
            (for ``caption`` batches; without one, batches need ``text_embeds`` or get one zero token);
            ``text_dtype`` its weights' dtype (``bfloat16`` for mT5-XXL on a GPU).
        objective: ``"v"`` (v-prediction, zero-terminal-SNR DDPM) or ``"flow"`` (rectified flow).
        snr_gamma: min-SNR-gamma (v only; None: unweighted).
        stratified: stratified timesteps across ranks (else uniform).
        timestep_bias_strategy, timestep_bias_multiplier, timestep_bias_portion: sample the ``"later"`` (noisier)
            or ``"earlier"`` ``portion`` of the timesteps ``multiplier`` times more often (:func:`bias_timesteps`,
            as diffusers' SDXL training options); ``"none"`` by default.
        ema_decay: EMA decay (None: no EMA).
        lr, weight_decay, betas, eps: AdamW.
        warmup_steps, lr_schedule, min_lr_ratio: linear warm-up, then a constant rate or a cosine down to
            ``min_lr_ratio * lr`` at ``trainer.max_steps`` (:func:`wfvae.training.module.lr_multiplier`).
        gradient_checkpointing: recompute the blocks in backward.
        seed: seeds the random denoiser, and the random numbers of every training step (timesteps, noise, VAE
            posterior samples, condition noise, caption dropout, dropout) together with the step's
            ``(global_step, micro-batch, rank)`` (:func:`wfvae.training.resume.step_rng`), so that a resumed run draws
            what
            the uninterrupted run draws.
        export_dir: ``save_pretrained`` of the EMA (else the model) at the end of ``fit``.
        cached_caption_dropout: for batches with cached ``text_embeds`` (a latent cache), the probability of
            replacing a sample's caption by the empty caption (classifier-free guidance; needs ``text_encoder``).
        lora_rank, lora_alpha, lora_targets: train a PEFT LoRA adapter of this rank (scale ``alpha / rank``; alpha
            defaults to the rank) on the ``lora_targets`` modules (default: every attention projection) and freeze
            every base weight; ``export_dir`` and ``export --lora`` then write only the adapter
            (``pytorch_lora_weights.safetensors``, diffusers' ``load_lora_weights`` layout).
        t2iv_condition: the image-condition model's input for samples that keep no frame (``t2iv``):
            ``"encoded"`` (the release: the VAE latent of an all-black video) or ``"zero"`` (a zero latent). With
            ``"zero"`` the model without a condition is exactly a text-to-video model
            (:meth:`opensora.models.OpenSoraInpaint.to_t2v` folds the constant condition into a bias).

    ``vae`` and ``text_encoder`` may be ``package:NAME/SUBFOLDER`` (a folder inside an installed Python package,
    :func:`opensora.pipelines.defaults.resolve_location`).
    """

    def __init__(self, pretrained: Optional[str] = None, model_config: Optional[Dict[str, Any]] = None,
                 inpaint: bool = False, vae: Optional[str] = None, text_encoder: Optional[str] = None,
                 max_text_length: int = 512, text_dtype: str = "float32", objective: str = "v",
                 snr_gamma: Optional[float] = 5.0,
                 stratified: bool = True, timestep_bias_strategy: str = "none",
                 timestep_bias_multiplier: float = 1.0, timestep_bias_portion: float = 0.25,
                 ema_decay: Optional[float] = 0.9999, lr: float = 1e-5,
                 weight_decay: float = 1e-2, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 warmup_steps: int = 0, lr_schedule: Literal["constant", "cosine"] = "constant",
                 min_lr_ratio: float = 0.0, gradient_checkpointing: bool = False, seed: int = 0,
                 export_dir: Optional[str] = None, cached_caption_dropout: float = 0.0,
                 lora_rank: Optional[int] = None, lora_alpha: Optional[float] = None,
                 lora_targets: Sequence[str] = LORA_TARGETS,
                 t2iv_condition: Literal["encoded", "zero"] = "encoded"):
        super().__init__()
        self.save_hyperparameters()
        if t2iv_condition not in ("encoded", "zero"):
            raise ValueError(f"t2iv_condition must be 'encoded' or 'zero', got {t2iv_condition!r}")
        if objective not in ("v", "flow"):
            raise ValueError(f"objective must be 'v' or 'flow', got {objective!r}")
        bias_timesteps(torch.zeros(1), timestep_bias_strategy, timestep_bias_multiplier,
                       timestep_bias_portion)  # checks the three settings now rather than at the first step
        lr_multiplier(0, schedule=lr_schedule)  # checks the schedule name now
        if (pretrained is None) == (model_config is None):
            raise ValueError("give exactly one of pretrained (a model folder) and model_config (a random model)")
        if pretrained is not None:
            model = load_denoiser(pretrained)
            if inpaint and not isinstance(model, OpenSoraInpaint):
                model = OpenSoraInpaint.from_t2v(model)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                cls = OpenSoraInpaint if inpaint else OpenSoraT2V
                model = cls(build_config(None, model_config, inpaint))
        if inpaint != isinstance(model, OpenSoraInpaint):
            raise ValueError(f"{pretrained} is an image-condition model: set inpaint: true")
        if lora_rank is not None:
            model.requires_grad_(False)
            model.add_adapter(lora_config(lora_rank, lora_alpha, lora_targets))  # only adapter weights train
        self.model = model.train()
        self.model.enable_gradient_checkpointing(gradient_checkpointing)
        self.ema = ema_copy(model, ema_decay) if ema_decay is not None else None
        self.vae = None
        if vae is not None:
            from wfvae import WFVAE

            self.vae = WFVAE.from_pretrained(resolve_location(vae)).requires_grad_(False).eval()
        if not 0.0 <= cached_caption_dropout < 1.0:
            raise ValueError(f"cached_caption_dropout must be in [0, 1), got {cached_caption_dropout}")
        if cached_caption_dropout > 0 and text_encoder is None:
            raise ValueError("cached_caption_dropout needs a text_encoder (to encode the empty caption)")
        self._text_encoder = None
        self._null_caption = None
        self.scheduler = training_scheduler()
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.strict_loading = False  # one-file checkpoints leave the VAE out

    # ------------------------------------------------------------------ frozen parts, EMA, optimiser
    def train(self, mode: bool = True) -> "DenoiserTraining":
        super().train(mode)
        for frozen in (self.ema, self.vae):
            if frozen is not None:
                frozen.eval()
        return self

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (a device mesh): FSDP2 on the denoiser and its EMA copy
        (:func:`opensora.training.sharding.shard_denoiser`); otherwise (one process, DDP) nothing."""
        mesh = self.device_mesh
        if mesh is not None and not is_sharded(self.model):
            shard_denoiser(self.model, self.ema, mesh)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if any(isinstance(v, DTensor) for v in state.values()):
            return  # a sharded (folder) checkpoint: its loader needs every key of the module, frozen ones included
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer step, then the EMA update: both are done when a checkpoint is saved in a callback's
        ``on_train_batch_end`` (callbacks run before the module's own ``on_train_batch_end``)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                                      eps=hp.eps)
        total = self.trainer.max_steps if self._trainer is not None else None
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
            lr_multiplier, warmup_steps=max(int(hp.warmup_steps), 0), schedule=hp.lr_schedule, total_steps=total,
            min_ratio=hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_end(self) -> None:
        if not self.hparams.export_dir:
            return
        network = self.ema.module if self.ema else self.model
        if is_sharded(network):  # FSDP: gather the full weights (every rank), rank 0 writes them
            from opensora.training.offline import write_release

            state = full_state_dict(network)
            if self.trainer.is_global_zero:
                write_release(dict(self.hparams), state, self.hparams.export_dir,
                              lora=self.hparams.get("lora_rank") is not None)
        elif self.trainer.is_global_zero:
            if self.hparams.get("lora_rank") is not None:
                save_lora_weights(network, self.hparams.export_dir)
            else:
                network.save_pretrained(self.hparams.export_dir)

    # ------------------------------------------------------------------ batch preparation
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            raise ValueError("the batch has no latents: give the module a vae to encode its videos")
        return self.vae.scale_latents(self.vae.encode(video.to(self.vae.dtype)).latent_dist.sample().float())

    @torch.no_grad()
    def captions_of(self, batch: Dict[str, Any], size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) caption features and (B, L) mask: cached, encoded, or one zero token without an encoder."""
        if "text_embeds" in batch:
            embeds, mask = batch["text_embeds"], batch["text_mask"]
            p = self.hparams.cached_caption_dropout
            if p > 0 and self.training:
                drop = torch.rand(embeds.shape[0], device=embeds.device) < p
                if drop.any():
                    null, null_mask = self.null_caption(embeds.shape[1])
                    embeds = torch.where(drop[:, None, None], null.to(embeds.dtype), embeds)
                    mask = torch.where(drop[:, None], null_mask.to(mask.dtype), mask)
            return embeds, mask
        if self.hparams.text_encoder is not None:
            embeds, mask = self.text_encoder.encode(list(batch.get("caption") or [""] * size))
            return embeds.float(), mask
        width = self.model.config.caption_channels
        return torch.zeros(size, 1, width, device=self.device), torch.ones(size, 1, device=self.device)

    @property
    def text_encoder(self):
        """The caption encoder (loaded on first use, kept out of checkpoints)."""
        if self._text_encoder is None:
            from opensora.text.encoders import TextEncoder

            self._text_encoder = TextEncoder.from_pretrained(
                resolve_location(self.hparams.text_encoder), self.hparams.max_text_length,
                getattr(torch, self.hparams.text_dtype))
        self._text_encoder.to(self.device)
        return self._text_encoder

    @torch.no_grad()
    def null_caption(self, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(1, length, D) features and (1, length) mask of the empty caption, padded like the cached ones."""
        if self._null_caption is None:
            embeds, mask = self.text_encoder.encode([""])
            self._null_caption = (embeds.float(), mask)
        embeds, mask = (t.to(self.device) for t in self._null_caption)
        if embeds.shape[1] < length:
            pad = length - embeds.shape[1]
            embeds = torch.cat([embeds, embeds.new_zeros(1, pad, embeds.shape[2])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(1, pad)], dim=1)
        return embeds[:, :length], mask[:, :length]

    @torch.no_grad()
    def conditions_of(self, batch: Dict[str, Any], latents: torch.Tensor) -> torch.Tensor:
        """(B, C + s, t, h, w) masked-video latent + compressed mask of the image-condition model."""
        if "masked_latents" in batch:
            return torch.cat([batch["masked_latents"].float(), batch["compressed_mask"].float()], dim=1)
        s = self.model.config.vae_scale_factor_t
        if "video" not in batch:
            b, _, t, h, w = latents.shape
            return torch.cat([torch.zeros_like(latents), latents.new_ones(b, s, t, h, w)], dim=1)
        video = batch["video"]
        mask = batch.get("mask")
        if mask is None:
            mask = video.new_ones(video.shape[0], 1, *video.shape[2:])
        # generated frames are black (-1), as in the release's training and sampling (masked on uint8 pixels)
        masked = condition_noise(torch.where(mask < 0.5, video, torch.full_like(video, -1.0)), mask)
        stride_hw = video.shape[-1] // latents.shape[-1]
        encoded = self.encode_video(masked)
        if self.hparams.get("t2iv_condition", "encoded") == "zero":
            nothing_kept = (mask >= 0.5).flatten(1).all(dim=1)            # (B,)
            encoded = torch.where(nothing_kept.view(-1, 1, 1, 1, 1), torch.zeros_like(encoded), encoded)
        return torch.cat([encoded, compress_mask(mask.float(), s, stride_hw)], dim=1)

    # ------------------------------------------------------------------ objective
    def timesteps(self, batch: int) -> torch.Tensor:
        """(B,) continuous times in [0, 1000) (stratified across ranks, or uniform; then the timestep bias)."""
        hp = self.hparams
        if hp.stratified:
            world = self.trainer.world_size if self._trainer is not None else 1
            rank = self.trainer.global_rank if self._trainer is not None else 0
            times = stratified_timesteps(batch, rank, world)
        else:
            times = torch.rand(batch) * 1000
        return bias_timesteps(times, hp.timestep_bias_strategy, hp.timestep_bias_multiplier,
                              hp.timestep_bias_portion).to(self.device)

    def diffusion_loss(self, batch: Dict[str, Any], model: Optional[torch.nn.Module] = None) -> torch.Tensor:
        model = model if model is not None else self.model
        latents = batch["latents"].float() if "latents" in batch else self.encode_video(batch["video"])
        b = latents.shape[0]
        text, text_mask = self.captions_of(batch, b)
        times = self.timesteps(b)
        noise = torch.randn_like(latents)
        if self.hparams.objective == "v":
            steps = times.long().clamp(0, 999)
            noisy, target, acp = v_prediction(self.alphas_cumprod, latents, noise, steps)
            snr = acp / (1 - acp).clamp(min=1e-12)
            weight = min_snr_weight(snr, self.hparams.snr_gamma)
            model_t = steps.float()
        else:
            s = (times / 1000).view(b, 1, 1, 1, 1)
            noisy, target = (1 - s) * latents + s * noise, noise - latents
            weight, model_t = torch.ones(b, device=latents.device), times
        inputs = noisy
        if isinstance(model, OpenSoraInpaint):
            inputs = torch.cat([noisy, self.conditions_of(batch, latents)], dim=1)
        latent_mask = batch.get("latent_mask")
        pred = model(inputs, model_t, text, text_mask, attention_mask=latent_mask).sample
        err = (pred[:, :latents.shape[1]].float() - target) ** 2
        if latent_mask is None:
            per_sample = err.flatten(1).mean(1)
        else:
            m = latent_mask.float()[:, None].expand_as(err)
            per_sample = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
        return (weight * per_sample).mean()

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _size(batch: Dict[str, Any]) -> int:
        return len(batch["latents"] if "latents" in batch else batch["video"])

    def training_step(self, batch: Optional[Dict[str, Any]], batch_idx: int):
        if batch is None:
            return None
        with step_rng(self.device, *training_step_seed(self, self.hparams.seed, batch_idx)):
            loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=self._size(batch))
        return loss

    def validation_step(self, batch: Optional[Dict[str, Any]], batch_idx: int):
        if batch is None:
            return None
        models = {"val/loss": self.model} | ({"val/loss_ema": self.ema.module} if self.ema is not None else {})
        for name, model in models.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(batch_idx)
                loss = self.diffusion_loss(batch, model)
            self.log(name, loss, batch_size=self._size(batch), sync_dist=True)
