"""The image condition controller of Open-Sora Plan v1.3 (published class ``OpenSoraInpaint_v1_3``).

The text-to-video denoiser with two more input streams, each with its own patch embedding followed by a
zero-initialised bias-free linear projection; the three token streams are summed before the first block::

    hidden_states (B, 2C + s, T, H, W) = [noisy latent C | masked-video latent C | compressed mask s]
    x = pos_embed(noisy)
        + pos_embed_masked_hidden_states[1](pos_embed_masked_hidden_states[0](masked))
        + pos_embed_mask[1](pos_embed_mask[0](mask))                         # then as OpenSoraT2V

``s = vae_scale_factor_t`` (4): the pixel mask (1 = generate, 0 = keep) compressed to the latent grid with the 4
video frames behind each latent frame as channels (:func:`opensora.pipelines.masks.compress_mask`). The masked video is
the
condition video with the generated frames black (-1 in [-1, 1]), encoded by the VAE and scaled to the
diffusion space like the noisy latent. Parameter names follow the release, so its I2V checkpoints load as they are.

Because the two projections start at zero, :meth:`OpenSoraInpaint.from_t2v` gives a model that predicts exactly
what the text-to-video model predicts from the noisy latent, whatever the conditions; training then opens them.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from torch import nn

from wfvae.models.checkpoint import read_json_object

from opensora.models.checkpoint import CONFIG_NAME
from opensora.models.config import OpenSoraT2VConfig
from opensora.models.diffusers_glue import config_init
from opensora.models.embeddings import PatchEmbed
from opensora.models.transformer import OpenSoraT2V

INPAINT_CLASS_NAME = "OpenSoraInpaint_v1_3"
T2V_CLASS_NAME = "OpenSoraT2V_v1_3"


@dataclass
class OpenSoraInpaintConfig(OpenSoraT2VConfig):
    """:class:`OpenSoraT2VConfig` plus the VAE's temporal compression (= channels of the compressed mask).

    ``in_channels`` stays the latent width C (as in the published ``config.json``); the model takes
    ``2 * in_channels + vae_scale_factor_t`` channels.
    """

    vae_scale_factor_t: int = 4

    def __post_init__(self):
        super().__post_init__()
        if int(self.vae_scale_factor_t) < 1:
            raise ValueError(f"vae_scale_factor_t must be >= 1, got {self.vae_scale_factor_t}")

    @property
    def model_in_channels(self) -> int:
        """Channels of the model input: noisy latent + masked-video latent + compressed mask."""
        return 2 * self.in_channels + self.vae_scale_factor_t

    def to_dict(self) -> Dict[str, Any]:
        values = super().to_dict()
        values["_class_name"] = INPAINT_CLASS_NAME
        return values

    @classmethod
    def from_t2v(cls, config: OpenSoraT2VConfig, vae_scale_factor_t: int = 4) -> "OpenSoraInpaintConfig":
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(OpenSoraT2VConfig)}
        return cls(**fields, vae_scale_factor_t=vae_scale_factor_t)


def _zero_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=False)
    nn.init.zeros_(layer.weight)
    return layer


class OpenSoraInpaint(OpenSoraT2V):
    """Open-Sora Plan v1.3 image condition controller (i2v, transition, continuation, random frames).

    Same call as :class:`OpenSoraT2V` with ``hidden_states`` of ``2C + vae_scale_factor_t`` channels (see the module
    docstring); the output is (B, C_out, T, H, W) as for the text-to-video model. ``from_pretrained`` /
    ``save_pretrained`` read and write the release's folder layout (``_class_name: OpenSoraInpaint_v1_3``).
    """

    config_class = OpenSoraInpaintConfig

    @config_init(OpenSoraInpaintConfig)
    def __init__(self, **fields):
        super().__init__(**fields)
        c, dim = self.config, self.config.hidden_size
        self.pos_embed_masked_hidden_states = nn.ModuleList(
            [PatchEmbed(c.in_channels, dim, c.patch_size, c.patch_size_t), _zero_linear(dim)])
        self.pos_embed_mask = nn.ModuleList(
            [PatchEmbed(c.vae_scale_factor_t, dim, c.patch_size, c.patch_size_t), _zero_linear(dim)])

    def embed_latent(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, 2C + s, T, H, W) -> tokens (B, N, D): the sum of the three embedded streams."""
        c = self.config
        if hidden_states.shape[1] != c.model_in_channels:
            raise ValueError(f"{type(self).__name__} takes {c.model_in_channels} input channels (noisy latent "
                             f"{c.in_channels} + masked-video latent {c.in_channels} + mask {c.vae_scale_factor_t}), "
                             f"got {hidden_states.shape[1]}")
        noisy, masked, mask = hidden_states.split([c.in_channels, c.in_channels, c.vae_scale_factor_t], dim=1)
        x = self.pos_embed(noisy)
        x = x + self.pos_embed_masked_hidden_states[1](self.pos_embed_masked_hidden_states[0](masked))
        return x + self.pos_embed_mask[1](self.pos_embed_mask[0](mask))

    @classmethod
    def from_t2v(cls, t2v: Union[OpenSoraT2V, str], vae_scale_factor_t: int = 4) -> "OpenSoraInpaint":
        """A fresh controller initialised from a text-to-video model (or its folder), as the release starts training.

        Every text-to-video tensor is copied; the masked-video patch embedding starts as a copy of ``pos_embed``
        (the release's rule), the mask patch embedding randomly (torch's default initialisation), both projections
        at zero, so the result equals the text-to-video model on the noisy latent. Dtype and device follow ``t2v``;
        eval mode.
        """
        if isinstance(t2v, str):
            t2v = OpenSoraT2V.from_pretrained(t2v)
        if isinstance(t2v, OpenSoraInpaint):
            raise ValueError("from_t2v needs a text-to-video model, got an OpenSoraInpaint")
        param = t2v.scale_shift_table
        config = cls.config_class.from_t2v(t2v.config, vae_scale_factor_t)
        with torch.device(param.device):
            model = cls(config).to(param.dtype)
        missing, unexpected = model.load_state_dict(t2v.state_dict(), strict=False)
        extra = {n for n in model.state_dict() if n.startswith(("pos_embed_masked_hidden_states.", "pos_embed_mask."))}
        if unexpected or set(missing) != extra:
            raise ValueError(f"text-to-video weights do not fit: missing {sorted(set(missing) - extra)}, "
                             f"unexpected {sorted(unexpected)}")
        model.pos_embed_masked_hidden_states[0].load_state_dict(t2v.pos_embed.state_dict())
        return model.eval()

    @torch.no_grad()
    def to_t2v(self) -> OpenSoraT2V:
        """The text-to-video model that this model is when nothing is kept *and* the masked-video latent is zero
        (trained so with ``DenoiserTraining(t2iv_condition="zero")``): both condition streams are then one
        constant token, ``L1(b1) + L2(P2(ones))``, folded here into ``pos_embed``'s bias. The result predicts
        exactly (to float rounding) what ``self`` predicts from ``[noisy | 0 | 1]``. Dtype and device follow
        ``self``; eval mode."""
        c = self.config
        param = self.scale_shift_table
        config = OpenSoraT2VConfig(**{f.name: getattr(c, f.name) for f in dataclasses.fields(OpenSoraT2VConfig)})
        with torch.device(param.device):
            t2v = OpenSoraT2V(config).to(param.dtype)
        state = {k: v for k, v in self.state_dict().items()
                 if not k.startswith(("pos_embed_masked_hidden_states.", "pos_embed_mask."))}
        t2v.load_state_dict(state, strict=True)
        # one patch of each condition input, (1, C, T=patch_t, p, p), through float32 copies of the two streams
        patch = (c.patch_size_t, c.patch_size, c.patch_size)
        zero = torch.zeros((1, c.in_channels) + patch, device=param.device)
        ones = torch.ones((1, c.vae_scale_factor_t) + patch, device=param.device)
        masked_stream = copy.deepcopy(self.pos_embed_masked_hidden_states).float()
        mask_stream = copy.deepcopy(self.pos_embed_mask).float()
        constant = (masked_stream[1](masked_stream[0](zero)) + mask_stream[1](mask_stream[0](ones)))[0, 0]   # (D,)
        bias = t2v.pos_embed.proj.bias
        bias.copy_((bias.float() + constant).to(bias.dtype))
        return t2v.eval()


def read_class_name(path: str) -> str:
    """``_class_name`` of a denoiser folder's ``config.json`` (``OpenSoraT2V_v1_3`` when absent)."""
    config = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"model folder not found or without {CONFIG_NAME}: {path}")
    name = read_json_object(config, "config").get("_class_name", T2V_CLASS_NAME)
    if not isinstance(name, str):
        raise ValueError(f"bad config {config}: _class_name must be a string, got {json.dumps(name)[:60]}")
    return name


def read_denoiser_config(path: str) -> OpenSoraT2VConfig:
    """The config of a denoiser folder without its weights: :class:`OpenSoraInpaintConfig` for an image-condition
    model, :class:`OpenSoraT2VConfig` for a text-to-video one (by ``_class_name``)."""
    name = read_class_name(path)
    classes = {T2V_CLASS_NAME: OpenSoraT2VConfig, INPAINT_CLASS_NAME: OpenSoraInpaintConfig}
    if name not in classes:
        raise ValueError(f"{path} holds a {name!r}; expected one of {', '.join(classes)}")
    return classes[name].from_json(os.path.join(path, CONFIG_NAME))


def load_denoiser(path: str, dtype: Optional[torch.dtype] = None,
                  device: Union[str, torch.device, None] = None) -> OpenSoraT2V:
    """Load a text-to-video or an image-condition denoiser folder, chosen by its ``_class_name``."""
    name = read_class_name(path)
    classes = {T2V_CLASS_NAME: OpenSoraT2V, INPAINT_CLASS_NAME: OpenSoraInpaint}
    if name not in classes:
        raise ValueError(f"{path} holds a {name!r}; expected one of {', '.join(classes)}")
    return classes[name].from_pretrained(path, dtype=dtype, device=device)


def is_inpaint(model: nn.Module) -> bool:
    """True for an image-condition denoiser (also behind a wrapper exposing ``base``)."""
    return isinstance(getattr(model, "base", model), OpenSoraInpaint)
