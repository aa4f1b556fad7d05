"""WF-VAE training as a LightningModule: generator + 3D PatchGAN discriminator, manual optimisation, EMA.

One training step takes a batch ``{"video": (B, 3, T, H, W) in [-1, 1], ...}`` and updates ONE network, as the
published trainer does: the generator (the VAE) on even steps and, once ``global_step >= disc_start``, the
discriminator on odd steps (before ``disc_start`` every step is a generator step). ``trainer.global_step`` counts
these updates, so ``max_steps`` is the number of batches.

Generator loss (all terms per-element MEANS, see :mod:`wfvae.training.losses` for how they relate to the published
SUMS)::

    nll  = rec(x, x_hat) + perceptual_weight * perceptual(x, x_hat)         # rec: L1 (or L2)
    loss = nll + kl_weight * KL + wavelet_weight * wavelet(enc_l1/l2, dec_l1/l2)
           + [step >= disc_start] * disc_factor * d_weight * (-mean D(x_hat))
    d_weight = disc_weight * ||grad nll|| / (||grad gan|| + 1e-6), clamped to [0, 1e6], at decoder.conv_out.weight

Discriminator loss: ``disc_factor * 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``.

Other parts: AdamW for both networks (published: lr 1e-5, weight decay 1e-4); learning rate set every step from
``global_step`` (linear warm-up over ``warmup_steps``, then constant or cosine down to ``min_lr_ratio * lr`` at
``max_steps``); gradient-norm clipping in the module (``grad_clip``); an EMA copy of the VAE
(``torch.optim.swa_utils.AveragedModel``, decay 0.999) updated after every generator step, used for validation and
export; mixed precision comes from the Trainer (``precision: bf16-mixed`` on GPU). Every loss term is logged under
``train/``; validation logs ``val/psnr``, ``val/ssim``, ``val/rec_loss`` of the EMA model. Resume is exact
(:mod:`wfvae.training.resume`): each step's random numbers (posterior samples, discriminator dropout) derive from
``(seed, global_step, micro-batch, rank)`` and the data loader saves its place in the epoch.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Literal, Optional, Tuple

import lightning as L
import torch

from wfvae.training.discriminator import PatchDiscriminator3D
from wfvae.training.ema import ema_copy, ema_weights
from wfvae.training.losses import (
    adaptive_gan_weight, build_perceptual, frames_of, hinge_d_loss, hinge_g_loss, kl_loss, reconstruction_loss,
    wavelet_loss)
from wfvae.evaluation.metrics import video_psnr, video_ssim
from wfvae.models.encoder_decoder import WFVAEConfig
from wfvae.training.resume import step_rng, training_step_seed
from wfvae.models.autoencoder import WFVAE


def lr_multiplier(step: int, warmup_steps: int = 0, schedule: str = "constant", total_steps: Optional[int] = None,
                  min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up over ``warmup_steps``, then constant or
    (``schedule="cosine"``) a cosine from 1 down to ``min_ratio`` at ``total_steps``. Without a positive
    ``total_steps`` beyond the warm-up (a trainer with ``max_steps: -1``) the cosine stays at 1."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr schedule must be 'constant' or 'cosine', got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps is None or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WFVAETraining(L.LightningModule):
    """Trains a :class:`wfvae.WFVAE`.

    Args:
        vae: model hyper-parameters (``WFVAEConfig`` fields; default: the dataclass defaults).
        init_from: start from these weights: a WF-VAE release folder / safetensors / published ``*.ckpt``
            (anything ``WFVAE.from_pretrained`` reads, with this ``vae`` config), or a Lightning checkpoint of this
            module (EMA weights preferred). Not a resume: use ``--ckpt_path`` to resume a run.
        lr, disc_lr: AdamW learning rates of the VAE and the discriminator (``disc_lr`` default: ``lr``).
        weight_decay, betas: AdamW settings of both optimisers.
        warmup_steps, lr_schedule, min_lr_ratio: learning-rate schedule over ``trainer.max_steps``.
        grad_clip: clip each network's gradient norm to this (``None``: no clipping).
        rec_loss: ``"l1"`` (published) or ``"l2"``.
        perceptual, perceptual_weight: ``"lpips"`` (needs the VGG16 + LPIPS head weights, see
        :mod:`wfvae.training.lpips`),
            ``"msssim"`` (weight-free: 1 - MS-SSIM per frame) or ``"none"``.
        lpips_weights, lpips_backbone: paths of ``vgg.pth`` and ``vgg16-397923af.pth`` (default: torch hub cache).
        kl_weight, wavelet_weight: weights of the KL and energy-flow terms.
        disc_start: first step of the GAN (``None``: no discriminator at all).
        disc_weight, disc_factor: adaptive-weight multiplier and overall GAN factor (published 0.5 and 1.0).
        disc_channels, disc_layers: discriminator width and depth (published 64, 4).
        ema_decay: EMA decay of the VAE weights (``None``: no EMA; validation and export use the raw weights).
        sample_posterior: decode a posterior sample (published) rather than the mean during training.
        seed: the random numbers of every training step (posterior samples, discriminator dropout) derive from it
            and the step's ``(global_step, micro-batch, rank)`` (:func:`wfvae.training.resume.step_rng`), so that a
            resumed
            run draws what the uninterrupted run draws.
    """

    def __init__(self, vae: Optional[WFVAEConfig] = None, init_from: Optional[str] = None,
                 lr: float = 1e-5, disc_lr: Optional[float] = None, weight_decay: float = 1e-4,
                 betas: Tuple[float, float] = (0.9, 0.999), warmup_steps: int = 0,
                 lr_schedule: Literal["constant", "cosine"] = "constant", min_lr_ratio: float = 0.0,
                 grad_clip: Optional[float] = None, rec_loss: Literal["l1", "l2"] = "l1",
                 perceptual: Literal["lpips", "msssim", "none"] = "lpips", perceptual_weight: float = 1.0,
                 lpips_weights: Optional[str] = None, lpips_backbone: Optional[str] = None,
                 kl_weight: float = 1e-6, wavelet_weight: float = 0.1, disc_start: Optional[int] = 5,
                 disc_weight: float = 0.5, disc_factor: float = 1.0, disc_channels: int = 64, disc_layers: int = 4,
                 ema_decay: Optional[float] = 0.999, sample_posterior: bool = True, seed: int = 0):
        super().__init__()
        config = vae if vae is not None else WFVAEConfig()
        if isinstance(config, dict):
            config = WFVAEConfig.from_dict(config)
        # hyper-parameters hold only plain types so that checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["vae"])
        self.hparams["vae"] = dataclasses.asdict(config)
        self.automatic_optimization = False
        self.vae = WFVAE(**dataclasses.asdict(config))
        if init_from:
            self.vae.load_state_dict(load_vae_weights(init_from, config).state_dict())
        self.discriminator = (PatchDiscriminator3D(3, disc_channels, disc_layers) if disc_start is not None
                              else None)
        self.ema = None
        if ema_decay:
            self.ema = ema_copy(self.vae, ema_decay)
        use_perceptual = perceptual if perceptual_weight > 0 else "none"
        # kept outside the module tree: frozen weights are not saved in checkpoints
        self._perceptual = [build_perceptual(use_perceptual, lpips_weights, lpips_backbone).eval()]
        self._perceptual[0].requires_grad_(False)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def perceptual_loss(self) -> torch.nn.Module:
        return self._perceptual[0]

    @property
    def eval_vae(self) -> WFVAE:
        """The weights used for validation and export: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.vae

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rates at ``step`` (:func:`lr_multiplier` over ``trainer.max_steps``)."""
        hp = self.hparams
        total = self.trainer.max_steps if self._trainer is not None else None
        return lr_multiplier(step, hp.warmup_steps, hp.lr_schedule, total, hp.min_lr_ratio)

    def _set_lr(self, optimizer, base_lr: float) -> float:
        lr = base_lr * self.lr_factor(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _optimizers(self):
        opts = self.optimizers()
        return (opts[0], opts[1]) if isinstance(opts, (list, tuple)) else (opts, None)

    # ------------------------------------------------------------------------------------------ lightning
    def configure_optimizers(self):
        hp = self.hparams
        opts = [torch.optim.AdamW(self.vae.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                  weight_decay=hp.weight_decay)]
        if self.discriminator is not None:
            opts.append(torch.optim.AdamW(self.discriminator.parameters(), lr=hp.disc_lr or hp.lr,
                                          betas=tuple(hp.betas), weight_decay=hp.weight_decay))
        return opts

    def on_fit_start(self) -> None:
        self.perceptual_loss.to(self.device)
        if self.global_rank == 0:
            name = getattr(self.perceptual_loss, "name", type(self.perceptual_loss).__name__)
            self.print(f"WF-VAE training: perceptual loss = {name} (weight {self.hparams.perceptual_weight}), "
                       f"GAN from step {self.hparams.disc_start}, EMA decay {self.hparams.ema_decay}")

    def training_step(self, batch, batch_idx):
        if batch is None:  # every file of the batch was unreadable
            return None
        with step_rng(self.device, *training_step_seed(self, self.hparams.seed, batch_idx)):
            self._training_step(batch)

    def _training_step(self, batch) -> None:
        video = batch["video"]
        hp = self.hparams
        opt_g, opt_d = self._optimizers()
        step = self.global_step
        gan_on = self.discriminator is not None and step >= hp.disc_start
        self.log("data/skipped_files", float(batch.get("skipped", 0)), reduce_fx="sum", on_step=False,
                 on_epoch=True)
        if gan_on and step % 2 == 1:
            self._discriminator_step(video, opt_d)
        else:
            self._generator_step(video, opt_g, gan_on)

    def _generator_step(self, video: torch.Tensor, opt, gan_on: bool) -> None:
        hp = self.hparams
        lr = self._set_lr(opt, hp.lr)
        self.toggle_optimizer(opt)
        rec, posterior, (enc_l1, dec_l1, enc_l2, dec_l2) = self.vae(video, sample_posterior=hp.sample_posterior)
        rec_l = reconstruction_loss(video, rec, hp.rec_loss)
        p_loss = (self.perceptual_loss(frames_of(video), frames_of(rec)) if hp.perceptual_weight > 0
                  else rec_l.new_zeros(()))
        nll = rec_l + hp.perceptual_weight * p_loss
        kl = kl_loss(posterior)
        wl = wavelet_loss(enc_l1, dec_l1, enc_l2, dec_l2)
        loss = nll + hp.kl_weight * kl + hp.wavelet_weight * wl
        logs = {"rec_loss": rec_l, "perceptual_loss": p_loss, "nll_loss": nll, "kl_loss": kl, "wavelet_loss": wl}
        if gan_on:
            g_loss = hinge_g_loss(self.discriminator(rec))
            d_weight = adaptive_gan_weight(nll, g_loss, self.vae.decoder.conv_out.weight, hp.disc_weight)
            loss = loss + hp.disc_factor * d_weight * g_loss
            logs.update(g_loss=g_loss, d_weight=d_weight)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if hp.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=hp.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.untoggle_optimizer(opt)
        if self.ema is not None:
            self.ema.update_parameters(self.vae)
        logs.update(loss=loss, lr=torch.tensor(lr), latent_std=posterior.mean.detach().float().std())
        self.log_dict({f"train/{k}": v.detach().float() for k, v in logs.items()}, prog_bar=False,
                      batch_size=video.shape[0])
        self.log("loss", loss.detach().float(), prog_bar=True, logger=False, batch_size=video.shape[0])

    def _discriminator_step(self, video: torch.Tensor, opt) -> None:
        hp = self.hparams
        self._set_lr(opt, hp.disc_lr or hp.lr)
        with torch.no_grad():
            rec = self.vae(video, sample_posterior=hp.sample_posterior)[0]
        self.toggle_optimizer(opt)
        logits_real = self.discriminator(video.detach())
        logits_fake = self.discriminator(rec.detach())
        d_loss = hp.disc_factor * hinge_d_loss(logits_real, logits_fake)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        if hp.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=hp.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.untoggle_optimizer(opt)
        self.log_dict({"train/disc_loss": d_loss.detach().float(),
                       "train/logits_real": logits_real.detach().float().mean(),
                       "train/logits_fake": logits_fake.detach().float().mean()}, batch_size=video.shape[0])

    def validation_step(self, batch, batch_idx):
        if batch is None:
            return None
        video = batch["video"]
        model = self.eval_vae
        model.eval()
        with torch.no_grad():
            rec = model(video, sample_posterior=False)[0].float().clamp(-1, 1)
        target = video.float()
        self.log_dict({"val/rec_loss": (rec - target).abs().mean(),
                       "val/psnr": video_psnr(target, rec).mean(),
                       "val/ssim": video_ssim(target, rec).mean()},
                      prog_bar=True, sync_dist=True, batch_size=video.shape[0])

    def export(self, folder: str) -> None:
        """Write the EMA (or raw) VAE in the release layout (``WFVAE.save_pretrained``)."""
        self.eval_vae.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- loading
def _lightning_vae_state(ckpt: dict, prefer_ema: bool = True) -> Optional[dict]:
    """The VAE tensors of a checkpoint of :class:`WFVAETraining` (EMA copy first), or ``None`` if it is not one."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        return None
    found = ema_weights(state) if prefer_ema else {}
    return found or {k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")} or None


def load_vae_weights(path: str, config: Optional[WFVAEConfig] = None, prefer_ema: bool = True) -> WFVAE:
    """A :class:`WFVAE` from a Lightning checkpoint of this module (its stored config unless ``config`` is given;
    EMA weights preferred) or from anything ``WFVAE.from_pretrained`` reads (with ``config``)."""
    if path.endswith(".ckpt") and os.path.isfile(path):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # not loadable as plain tensors: let from_pretrained explain
            ckpt = {}
        state = _lightning_vae_state(ckpt, prefer_ema) if isinstance(ckpt, dict) else None
        if state is not None and (config is not None or "vae" in ckpt.get("hyper_parameters", {})):
            if config is None:
                config = WFVAEConfig.from_dict(ckpt["hyper_parameters"]["vae"])
            model = WFVAE(**dataclasses.asdict(config))
            model.load_state_dict(state)
            return model.eval()
    cfg = None if config is None else config.to_dict()
    return WFVAE.from_pretrained(path, config=cfg)


def export_checkpoint(ckpt_path: str, out_dir: str, prefer_ema: bool = True,
                      dtype: torch.dtype = torch.float32) -> WFVAE:
    """Write the (EMA) VAE of a Lightning checkpoint of :class:`WFVAETraining` with ``WFVAE.save_pretrained``."""
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {ckpt_path}: {str(exc).splitlines()[0]}") from None
    state = _lightning_vae_state(ckpt, prefer_ema) if isinstance(ckpt, dict) else None
    if state is None or "vae" not in ckpt.get("hyper_parameters", {}):
        raise ValueError(f"{ckpt_path} is not a checkpoint of wfvae.training.module.WFVAETraining")
    model = WFVAE.from_config(WFVAEConfig.from_dict(ckpt["hyper_parameters"]["vae"]).to_dict())
    model.load_state_dict(state)
    model.to(dtype).save_pretrained(out_dir)
    return model
