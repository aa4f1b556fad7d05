"""Training the structure controller on a frozen denoiser (Lightning; ``tools/train.py fit --config ...``).

One step, for a batch of latents x0 (B, C, t, h, w) and their control videos (B, 3, T, H, W)::

    t ~ U{0..999};  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps;  v = sqrt(a_t) eps - sqrt(1 - a_t) x0
    residuals = controller(control, t, frame_mask).block_residuals   # trainable
    loss = mse(base(x_t, t, caption, block_residuals=residuals), v)   # base frozen (eval, no gradients)

with the v1.3 noise schedule: DDPM linear betas rescaled to zero terminal SNR, v-prediction
(``DDPMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")``).
``frame_mask`` controls every latent frame with probability ``1 - partial_control_prob``, else a random non-empty
subset, so that the controller learns to steer any subset of frames.

Batches are dicts; whatever is missing is derived:

* ``latents`` (B, C, t, h, w) diffusion-space latents, or ``video`` (B, 3, T, H, W) in [-1, 1] encoded by the
  ``vae`` (``scale_latents(encode(video).sample())``);
* ``control`` (B, 3, T, H, W), or computed from ``video`` with :func:`opensora.pipelines.control_signals.make_control`;
* ``text_embeds`` (B, L, C_text) + ``text_mask`` (B, L), or ``caption`` strings encoded by ``text_encoder``, or (no
  encoder) a single all-zero caption token.

So the same module trains on :class:`opensora.synthetic.control_data.SyntheticControlData` (random moving shapes,
their canny maps, pseudo-latents: runs on a CPU in seconds) and on real clips from
:class:`wfvae.training.data.VideoDataModule` with a VAE (and a text encoder). Checkpoints hold the controller and
the optimiser only (the frozen models are rebuilt from their paths/config); ``export_dir`` receives
``StructureController.save_pretrained`` at the end of training, and :func:`export_controller` does the same from a
checkpoint.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import lightning as L
import torch
import torch.nn.functional as F

from wfvae.training.resume import step_rng, training_step_seed
from wfvae.training.module import lr_multiplier

from opensora.pipelines.control_signals import make_control
from opensora.models import OpenSoraT2V, OpenSoraT2VConfig, StructureController, StructureControllerConfig
from opensora.models.inpaint import OpenSoraInpaint, load_denoiser
from opensora.training.objectives import v_prediction

FROZEN_PREFIXES = ("base.", "vae.")


def training_scheduler():
    """The v1.3 training noise schedule (DDPM, zero terminal SNR, v-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                         rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")


class StructureControllerTraining(L.LightningModule):
    """Trains a :class:`~opensora.models.StructureController` against a frozen text-to-video denoiser.

    Args:
        base: folder of the text-to-video denoiser (``OpenSoraT2V.from_pretrained``), or
        base_config: ``OpenSoraT2VConfig`` fields of a random base (seeded by ``seed``; tests and smoke runs).
        controller: ``StructureControllerConfig`` fields other than those copied from the base (``num_layers``,
            ``latent_channels``, ``downsampler_channels``, ``projector``, ``inject_every``, ...).
        controller_init: start from a saved controller folder instead of a fresh one.
        init_from_base: a fresh controller's timestep embedding and blocks start from the base's.
        vae: WF-VAE folder for batches that carry ``video`` but no ``latents``.
        text_encoder, max_text_length: :class:`opensora.text.encoders.TextEncoder` folder for ``caption`` batches.
        control, control_options: control signal computed from ``video`` when a batch has no ``control``.
        partial_control_prob: probability of controlling a random subset of the latent frames.
        lr, weight_decay, warmup_steps: AdamW on the controller's parameters only, linear warm-up.
        seed: seeds the random base, and each training step's timesteps, noise and frame masks together with
            ``(global_step, micro-batch, rank)`` (:func:`wfvae.training.resume.step_rng`: a resumed run draws the same).
        export_dir: where to save the trained controller at the end of ``fit``.
    """

    def __init__(self, base: Optional[str] = None, base_config: Optional[Dict[str, Any]] = None,
                 controller: Optional[Dict[str, Any]] = None, controller_init: Optional[str] = None,
                 init_from_base: bool = True, vae: Optional[str] = None, text_encoder: Optional[str] = None,
                 max_text_length: int = 512, control: str = "canny",
                 control_options: Optional[Dict[str, Any]] = None, partial_control_prob: float = 0.3,
                 lr: float = 1e-4, weight_decay: float = 0.0, warmup_steps: int = 0, seed: int = 0,
                 export_dir: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters()
        if (base is None) == (base_config is None):
            raise ValueError("give exactly one of base (a model folder) and base_config (a random base)")
        if base is not None:
            self.base = load_denoiser(base)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.base = OpenSoraT2V(OpenSoraT2VConfig.from_dict(dict(base_config)))
        if isinstance(self.base, OpenSoraInpaint):
            raise ValueError("train the structure controller on a text-to-video base (OpenSoraT2V)")
        self.base.requires_grad_(False).eval()
        if controller_init is not None:
            self.controller = StructureController.from_pretrained(controller_init)
            self.controller.check_base(self.base)
        else:
            self.controller = StructureController.for_base(self.base, init_from_base, **dict(controller or {}))
        self.controller.train()
        self.vae = None
        if vae is not None:
            from wfvae import WFVAE

            self.vae = WFVAE.from_pretrained(vae).requires_grad_(False).eval()
        self._text_encoder = None
        self.scheduler = training_scheduler()

    # ------------------------------------------------------------------ frozen parts stay frozen
    def train(self, mode: bool = True) -> "StructureControllerTraining":
        super().train(mode)
        self.base.eval()
        if self.vae is not None:
            self.vae.eval()
        return self

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Checkpoints leave the frozen models out (:meth:`on_save_checkpoint`): they come from their own folders,
        as this module was built; loading stays strict for everything else."""
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith(FROZEN_PREFIXES) and key not in state:
                state[key] = value

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.controller.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(lr_multiplier, warmup_steps=max(int(hp.warmup_steps), 0)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.controller.save_pretrained(self.hparams.export_dir)

    # ------------------------------------------------------------------ batch preparation
    @torch.no_grad()
    def latents_of(self, batch: Dict[str, Any]) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].float()
        if self.vae is None:
            raise ValueError("the batch has no latents: give the module a vae to encode its videos")
        video = batch["video"].to(self.vae.dtype)
        return self.vae.scale_latents(self.vae.encode(video).latent_dist.sample().float())

    @torch.no_grad()
    def control_of(self, batch: Dict[str, Any]) -> torch.Tensor:
        if "control" in batch:
            return batch["control"]
        options = dict(self.hparams.control_options or {})
        return torch.stack([make_control(self.hparams.control, clip, **options) for clip in batch["video"]])

    @torch.no_grad()
    def captions_of(self, batch: Dict[str, Any], size: int):
        if "text_embeds" in batch:
            return batch["text_embeds"], batch["text_mask"]
        if self.hparams.text_encoder is not None:
            if self._text_encoder is None:
                from opensora.text.encoders import TextEncoder

                self._text_encoder = TextEncoder.from_pretrained(self.hparams.text_encoder,
                                                                 self.hparams.max_text_length)
            self._text_encoder.to(self.device)
            embeds, mask = self._text_encoder.encode(list(batch.get("caption") or [""] * size))
            return embeds.float(), mask
        width = self.base.config.caption_channels
        return torch.zeros(size, 1, width, device=self.device), torch.ones(size, 1, device=self.device)

    def frame_mask(self, batch: int, frames: int) -> torch.Tensor:
        """(B, t) latent-frame mask, 1 = controlled: all frames, or a random non-empty subset."""
        mask = torch.ones(batch, frames, device=self.device)
        for row in mask:
            if frames > 1 and torch.rand(()) < self.hparams.partial_control_prob:
                keep = torch.rand(frames) < 0.5
                keep[torch.randint(frames, ())] = True
                row.copy_(keep.float())
        return mask

    # ------------------------------------------------------------------ steps
    def diffusion_loss(self, batch: Dict[str, Any]) -> torch.Tensor:
        latents = self.latents_of(batch)
        b = latents.shape[0]
        control = self.control_of(batch)
        text, text_mask = self.captions_of(batch, b)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=self.device)
        noise = torch.randn_like(latents)
        noisy, target, _ = v_prediction(self.scheduler.alphas_cumprod, latents, noise, timesteps)
        t = timesteps.float()
        residuals = self.controller(control, t, self.frame_mask(b, latents.shape[2])).block_residuals
        pred = self.base(noisy.to(self.base.dtype), t, text, text_mask, block_residuals=residuals).sample
        return F.mse_loss(pred[:, :latents.shape[1]].float(), target.float())

    def training_step(self, batch: Optional[Dict[str, Any]], batch_idx: int):
        if batch is None:  # every file of the batch was unreadable (wfvae.training.data.collate_clips)
            return None
        with step_rng(self.device, *training_step_seed(self, self.hparams.seed, batch_idx)):
            loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.get("latents", batch.get("video"))))
        return loss

    def validation_step(self, batch: Optional[Dict[str, Any]], batch_idx: int):
        if batch is None:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            loss = self.diffusion_loss(batch)
        self.log("val/loss", loss, batch_size=len(batch.get("latents", batch.get("video"))))
        return loss


def export_controller(checkpoint: str, folder: str) -> StructureController:
    """Save the controller of a :class:`StructureControllerTraining` checkpoint with ``save_pretrained``."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = {k[len("controller."):]: v for k, v in data["state_dict"].items() if k.startswith("controller.")}
    hp = data["hyper_parameters"]
    base = load_denoiser(hp["base"]) if hp.get("base") else None
    base_config = base.config if base is not None else OpenSoraT2VConfig.from_dict(dict(hp["base_config"]))
    if hp.get("controller_init"):
        config = StructureController.from_pretrained(hp["controller_init"]).config
    else:
        config = StructureControllerConfig.for_base(base_config, **dict(hp.get("controller") or {}))
    controller = StructureController(config)
    controller.load_state_dict(state, strict=True)
    controller.save_pretrained(folder)
    return controller
