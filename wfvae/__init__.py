"""WF-VAE: wavelet-flow video VAE with exact block-wise (causal-cache) inference and spatial tiling."""
from .model import DiagonalGaussian, WFVAEConfig
from .padding import crop_video, pad_video
from .vae import WFVAE

__all__ = ["WFVAE", "WFVAEConfig", "DiagonalGaussian", "pad_video", "crop_video"]
