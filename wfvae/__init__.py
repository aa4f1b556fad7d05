"""WF-VAE: wavelet-flow video VAE with exact block-wise (causal-cache) inference and spatial tiling.

The names below load on first use (PEP 562), so ``import wfvae`` (and ``wfvae --help``) does not import torch.
"""
from importlib import import_module

__all__ = ["WFVAE", "WFVAEConfig", "DiagonalGaussian", "pad_video", "crop_video"]

_HOMES = {"WFVAE": ".vae", "WFVAEConfig": ".model", "DiagonalGaussian": ".model", "pad_video": ".padding",
          "crop_video": ".padding"}


def __getattr__(name):
    if name in _HOMES:
        value = getattr(import_module(_HOMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
