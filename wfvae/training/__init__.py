"""Training WF-VAE with Lightning: the module (:mod:`~wfvae.training.module`), losses, the 3D PatchGAN
discriminator, LPIPS, the video data module (:mod:`~wfvae.training.data`), the weight EMA, exact resume
(:mod:`~wfvae.training.resume`) and the step progress bar. The exact-resume and EMA pieces are shared with the
denoiser trainers in :mod:`opensora.training`."""
from wfvae.lazy_exports import lazy_exports

__all__ = ["WFVAETraining", "VideoDataModule"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "WFVAETraining": "wfvae.training.module",
    "VideoDataModule": "wfvae.training.data",
})
