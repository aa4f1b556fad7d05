"""Measuring a WF-VAE: per-frame PSNR/SSIM (:mod:`~wfvae.evaluation.metrics`), the reconstruction evaluation
protocol (:mod:`~wfvae.evaluation.evaluate`) and per-channel latent statistics
(:mod:`~wfvae.evaluation.latent_stats`)."""
