"""WF-VAE: wavelet-flow video VAE with exact block-wise (causal-cache) inference and spatial tiling.

Subpackages: :mod:`wfvae.models` (the network, its configuration and checkpoints), :mod:`wfvae.inference` (tiling,
padding, memory planning), :mod:`wfvae.io` (video and latents files), :mod:`wfvae.training` (Lightning module,
losses, data), :mod:`wfvae.evaluation` (metrics, the evaluation protocol, latent statistics); ``wfvae`` the command.

The names below load on first use, so ``import wfvae`` (and ``wfvae --help``) does not import torch.
"""
from wfvae.lazy_exports import lazy_exports

__all__ = ["WFVAE", "WFVAEConfig", "DiagonalGaussian", "pad_video", "crop_video"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "WFVAE": "wfvae.models.autoencoder",
    "WFVAEConfig": "wfvae.models.encoder_decoder",
    "DiagonalGaussian": "wfvae.models.encoder_decoder",
    "pad_video": "wfvae.inference.padding",
    "crop_video": "wfvae.inference.padding",
    # diffusers' pipeline loader finds how to load a ["wfvae", "WFVAE"] model_index.json entry by looking up its
    # base classes in the library module: ``wfvae.ModelMixin`` must be diffusers' class.
    "ModelMixin": "diffusers.models.modeling_utils",
})
