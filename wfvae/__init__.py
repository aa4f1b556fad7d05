"""WF-VAE: wavelet-flow video VAE with exact block-wise (causal-cache) inference and spatial tiling.

The names below load on first use (PEP 562), so ``import wfvae`` (and ``wfvae --help``) does not import torch.
"""
from importlib import import_module

__all__ = ["WFVAE", "WFVAEConfig", "DiagonalGaussian", "pad_video", "crop_video"]

_HOMES = {"WFVAE": ".vae", "WFVAEConfig": ".model", "DiagonalGaussian": ".model", "pad_video": ".padding",
          "crop_video": ".padding"}


# diffusers' pipeline loader finds how to load a component of a ["wfvae", "WFVAE"] model_index.json entry by
# looking up its base classes in the library module: ``wfvae.ModelMixin`` must be diffusers' class.
_DIFFUSERS_BASES = {"ModelMixin": "diffusers.models.modeling_utils"}


def __getattr__(name):
    if name in _HOMES or name in _DIFFUSERS_BASES:
        home = _HOMES.get(name)
        value = getattr(import_module(home, __name__) if home else import_module(_DIFFUSERS_BASES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
