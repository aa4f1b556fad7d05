"""WF-VAE: encoder and decoder with the wavelet energy flow, the config, and the Gaussian posterior.

Read top to bottom: :class:`WFVAEConfig` (the published ``config.json`` keys), :class:`Encoder`,
:class:`Decoder`, :class:`DiagonalGaussian`. The user-facing model with loading, block-wise inference and
tiling is :class:`wfvae.WFVAE` in ``wfvae/models/autoencoder.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wfvae.models.blocks import (Downsample2D, Downsample3D, FrameAttention, ResnetBlock2D, ResnetBlock3D, Sequence,
                     Upsample2D, Upsample3D, make_norm)
from wfvae.models.causal import AlignedAdd, CausalConv3d, Conv2d, StreamCache
from wfvae.models.wavelets import HaarWavelet2D, HaarWavelet3D, InverseHaarWavelet2D, InverseHaarWavelet3D

# The published config names one class per level; a level either halves time too ("3D") or not ("2D").
_LEVEL_KINDS = {
    "down": {"Downsample": "2D", "Spatial2xTime2x3DDownsample": "3D"},
    "down_wavelet": {"HaarWaveletTransform2D": "2D", "HaarWaveletTransform3D": "3D"},
    "up": {"Upsample": "2D", "Spatial2xTime2x3DUpsample": "3D"},
    "up_wavelet": {"InverseHaarWaveletTransform2D": "2D", "InverseHaarWaveletTransform3D": "3D"},
}


@dataclass
class WFVAEConfig:
    """WF-VAE hyper-parameters. Field names (typos included) and defaults are those of the published
    ``WFVAEModel`` so that released ``config.json`` files load as they are.

    ``scale``/``shift`` normalise latents for diffusion (``(z - shift) * scale``): one value per latent channel,
    or lists whose entries are all equal (the published 4-entry placeholders), which are broadcast to every
    channel. Lists of another length with differing entries are rejected.
    """

    latent_dim: int = 8
    base_channels: int = 128
    encoder_num_resblocks: int = 2
    encoder_energy_flow_hidden_size: int = 64
    decoder_num_resblocks: int = 2
    decoder_energy_flow_hidden_size: int = 128
    attention_type: str = "AttnBlock3DFix"
    use_attention: bool = True
    dropout: float = 0.0
    norm_type: str = "groupnorm"
    t_interpolation: str = "nearest"
    connect_res_layer_num: int = 1
    scale: Union[float, List[float]] = field(default_factory=lambda: [0.18215] * 4)
    shift: Union[float, List[float]] = field(default_factory=lambda: [0.0] * 4)
    l1_dowmsample_block: str = "Downsample"
    l1_downsample_wavelet: str = "HaarWaveletTransform2D"
    l2_dowmsample_block: str = "Spatial2xTime2x3DDownsample"
    l2_downsample_wavelet: str = "HaarWaveletTransform3D"
    l1_upsample_block: str = "Upsample"
    l1_upsample_wavelet: str = "InverseHaarWaveletTransform2D"
    l2_upsample_block: str = "Spatial2xTime2x3DUpsample"
    l2_upsample_wavelet: str = "InverseHaarWaveletTransform3D"

    def __post_init__(self):
        for name in ("latent_dim", "base_channels", "encoder_energy_flow_hidden_size",
                     "decoder_energy_flow_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("encoder_num_resblocks", "decoder_num_resblocks", "connect_res_layer_num"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_type == "groupnorm" and (self.base_channels % 32 or self.encoder_energy_flow_hidden_size % 32
                                              or self.decoder_energy_flow_hidden_size % 32):
            raise ValueError("groupnorm (32 groups) needs base_channels and both energy_flow_hidden_size values to "
                             "be multiples of 32; use norm_type 'layernorm' for other widths")
        if self.t_interpolation not in ("nearest", "trilinear"):
            raise ValueError(f"t_interpolation must be 'nearest' or 'trilinear', got {self.t_interpolation!r}")
        if self.attention_type != "AttnBlock3DFix":
            raise ValueError(f"attention_type {self.attention_type!r} is not supported (only 'AttnBlock3DFix')")
        for level in ("l1", "l2"):
            kinds = {
                _LEVEL_KINDS["down"].get(getattr(self, f"{level}_dowmsample_block")),
                _LEVEL_KINDS["down_wavelet"].get(getattr(self, f"{level}_downsample_wavelet")),
                _LEVEL_KINDS["up"].get(getattr(self, f"{level}_upsample_block")),
                _LEVEL_KINDS["up_wavelet"].get(getattr(self, f"{level}_upsample_wavelet")),
            }
            if None in kinds or len(kinds) != 1:
                raise ValueError(f"{level} blocks and wavelets must all be 2D or all be 3D variants of the published"
                                 f" classes; got {self.level_names(level)}")
        for name in ("scale", "shift"):
            self.latent_stat(name)  # validates

    def level_names(self, level: str) -> list:
        return level_names(self, level)

    def temporal(self, level: str) -> bool:
        return level_is_temporal(self, level)

    @property
    def temporal_compression(self) -> int:
        return temporal_compression(self)

    @property
    def spatial_compression(self) -> int:
        return SPATIAL_COMPRESSION

    def latent_stat(self, name: str) -> torch.Tensor:
        return latent_stat(self, name)

    @classmethod
    def from_dict(cls, d: Mapping) -> "WFVAEConfig":
        """Build from a ``config.json`` dict (or a model's ``vae.config``); private keys (``_class_name`` ...) are
        ignored, unknown keys and values of the wrong JSON type refused (ValueError); missing keys take the
        published defaults (:func:`wfvae.models.checkpoint.config_from_dict`)."""
        from wfvae.models.checkpoint import config_from_dict

        return config_from_dict(cls, d, "WF-VAE config")

    def to_dict(self) -> dict:
        return published_config(dataclasses.asdict(self))


# The helpers below read any object with the config keys as attributes: a WFVAEConfig or a model's ``vae.config``
# (diffusers' FrozenDict), so that the derived quantities have one definition.
SPATIAL_COMPRESSION = 8


def level_names(cfg, level: str) -> list:
    return [getattr(cfg, f"{level}_{k}") for k in
            ("dowmsample_block", "downsample_wavelet", "upsample_block", "upsample_wavelet")]


def level_is_temporal(cfg, level: str) -> bool:
    """Whether a level ("l1" or "l2") also halves time."""
    return _LEVEL_KINDS["down"][getattr(cfg, f"{level}_dowmsample_block")] == "3D"


def temporal_compression(cfg) -> int:
    return 2 * (2 if level_is_temporal(cfg, "l1") else 1) * (2 if level_is_temporal(cfg, "l2") else 1)


def latent_stat(cfg, name: str) -> torch.Tensor:
    """``scale`` or ``shift`` as a (latent_dim,) tensor (broadcast from a constant list if needed)."""
    values = getattr(cfg, name)
    values = [values] if isinstance(values, (int, float)) else list(values)
    if len(values) == cfg.latent_dim:
        return torch.tensor(values, dtype=torch.float32)
    if len(values) >= 1 and all(v == values[0] for v in values):
        return torch.full((cfg.latent_dim,), float(values[0]))
    raise ValueError(f"config {name} has {len(values)} different values but the model has {cfg.latent_dim} "
                     f"latent channels: give {cfg.latent_dim} values or one value")


def published_config(values: Mapping) -> dict:
    """The published ``config.json`` of a WF-VAE: ``_class_name`` and every key of :class:`WFVAEConfig`, as plain
    JSON values (lists for tuples), from a dict or a model's ``vae.config``; diffusers' bookkeeping keys dropped."""
    out = {"_class_name": "WFVAEModel"}
    for f in dataclasses.fields(WFVAEConfig):
        value = values[f.name]
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


class Encoder(nn.Module):
    """Video (B, 3, T, H, W) -> posterior parameters (B, 2*latent_dim, T/4, H/8, W/8) and the energy-flow
    coefficients (l1, l2) used by the wavelet loss.

    The input is Haar-transformed once (24 channels); its low-pass band is transformed again at each level
    and injected into the main path (the energy flow).
    """

    def __init__(self, cfg: WFVAEConfig):
        super().__init__()
        base, flow, nres = cfg.base_channels, cfg.encoder_energy_flow_hidden_size, cfg.encoder_num_resblocks
        norm, drop = cfg.norm_type, cfg.dropout
        l1_3d, l2_3d = cfg.temporal("l1"), cfg.temporal("l2")
        self.down1 = Sequence([
            Conv2d(24, base, 3, padding=1),
            *[ResnetBlock2D(base, base, norm, drop) for _ in range(nres)],
            Downsample3D(base, base) if l1_3d else Downsample2D(base, base),
        ])
        self.down2 = Sequence([
            Conv2d(base + flow, base * 2, 3, padding=1),
            *[ResnetBlock3D(base * 2, base * 2, norm, drop) for _ in range(nres)],
            Downsample3D(base * 2, base * 2) if l2_3d else Downsample2D(base * 2, base * 2),
        ])
        self.connect_l1 = Conv2d(24 if l1_3d else 12, flow, 3, padding=1)
        self.connect_l2 = Conv2d(24 if l2_3d else 12, flow, 3, padding=1)
        mid = [ResnetBlock3D(base * 2 + flow, base * 4, norm, drop), ResnetBlock3D(base * 4, base * 4, norm, drop)]
        if cfg.use_attention:
            mid.insert(1, FrameAttention(base * 4, norm))
        self.mid = Sequence(mid)
        self.norm_out = make_norm(base * 4, norm)
        self.conv_out = CausalConv3d(base * 4, cfg.latent_dim * 2, 3, padding=1)
        self.wavelet_transform_in = HaarWavelet3D()
        self.wavelet_transform_l1 = HaarWavelet3D() if l1_3d else HaarWavelet2D()
        self.wavelet_transform_l2 = HaarWavelet3D() if l2_3d else HaarWavelet2D()

    def forward(self, x: torch.Tensor, cache: Optional[StreamCache] = None) -> Tuple[torch.Tensor, tuple]:
        coeffs = self.wavelet_transform_in(x, cache)
        l1_coeffs = self.wavelet_transform_l1(coeffs[:, :3], cache)
        l1 = self.connect_l1(l1_coeffs)
        l2_coeffs = self.wavelet_transform_l2(l1_coeffs[:, :3], cache)
        l2 = self.connect_l2(l2_coeffs)
        h = self.down1(coeffs, cache)
        h = self.down2(torch.cat([h, l1], dim=1), cache)
        h = self.mid(torch.cat([h, l2], dim=1), cache)
        h = self.conv_out(F.silu(self.norm_out(h)), cache)
        return h, (l1_coeffs, l2_coeffs)


class Decoder(nn.Module):
    """Latent (B, latent_dim, t, h, w) -> video (B, 3, T, 8h, 8w) with T = 4(t - 1) + 1, plus the predicted
    energy-flow coefficients (l1, l2)."""

    def __init__(self, cfg: WFVAEConfig):
        super().__init__()
        base, flow, nres = cfg.base_channels, cfg.decoder_energy_flow_hidden_size, cfg.decoder_num_resblocks
        norm, drop, tint = cfg.norm_type, cfg.dropout, cfg.t_interpolation
        l1_3d, l2_3d = cfg.temporal("l1"), cfg.temporal("l2")
        self.energy_flow_hidden_size = flow
        self.conv_in = CausalConv3d(cfg.latent_dim, base * 4, 3, padding=1)
        mid = [ResnetBlock3D(base * 4, base * 4, norm, drop), ResnetBlock3D(base * 4, base * 4 + flow, norm, drop)]
        if cfg.use_attention:
            mid.insert(1, FrameAttention(base * 4, norm))
        self.mid = Sequence(mid)
        self.up2 = Sequence([
            *[ResnetBlock3D(base * 4, base * 4, norm, drop) for _ in range(nres)],
            Upsample3D(base * 4, base * 4, tint) if l2_3d else Upsample2D(base * 4, base * 4),
            ResnetBlock3D(base * 4, base * 4 + flow, norm, drop),
        ])
        self.up1 = Sequence([
            *[ResnetBlock3D(base * (4 if i == 0 else 2), base * 2, norm, drop) for i in range(nres)],
            Upsample3D(base * 2, base * 2, tint) if l1_3d else Upsample2D(base * 2, base * 2),
            ResnetBlock3D(base * 2, base * 2, norm, drop),
        ])
        self.layer = Sequence([ResnetBlock3D(base * (2 if i == 0 else 1), base, norm, drop) for i in range(2)])
        nconn = cfg.connect_res_layer_num
        self.connect_l1 = Sequence([*[ResnetBlock3D(flow, flow, norm, drop) for _ in range(nconn)],
                                    Conv2d(flow, 24 if l1_3d else 12, 3, padding=1)])
        self.connect_l2 = Sequence([*[ResnetBlock3D(flow, flow, norm, drop) for _ in range(nconn)],
                                    Conv2d(flow, 24 if l2_3d else 12, 3, padding=1)])
        self.norm_out = make_norm(base, norm)
        self.conv_out = Conv2d(base, 24, 3, padding=1)
        self.inverse_wavelet_transform_out = InverseHaarWavelet3D()
        self.inverse_wavelet_transform_l1 = InverseHaarWavelet3D() if l1_3d else InverseHaarWavelet2D()
        self.inverse_wavelet_transform_l2 = InverseHaarWavelet3D() if l2_3d else InverseHaarWavelet2D()
        self.add_l2 = AlignedAdd()
        self.add_l1 = AlignedAdd()

    def forward(self, z: torch.Tensor, cache: Optional[StreamCache] = None) -> Tuple[torch.Tensor, tuple]:
        flow = self.energy_flow_hidden_size
        h = self.mid(self.conv_in(z, cache), cache)
        l2_coeffs = self.connect_l2(h[:, -flow:], cache)
        l2 = self.inverse_wavelet_transform_l2(l2_coeffs, cache)
        h = self.up2(h[:, :-flow], cache)
        l1_coeffs = self.add_l2(self.connect_l1(h[:, -flow:], cache), l2, cache)
        l1 = self.inverse_wavelet_transform_l1(l1_coeffs, cache)
        h = self.up1(h[:, :-flow], cache)
        h = self.conv_out(F.silu(self.norm_out(self.layer(h, cache))))
        h = self.add_l1(h, l1, cache)
        return self.inverse_wavelet_transform_out(h, cache), (l1_coeffs, l2_coeffs)


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from the encoder's (B, 2C, t, h, w) output; logvar clamped to [-30, 20]."""

    def __init__(self, parameters: torch.Tensor):
        self.parameters = parameters
        self.mean, logvar = parameters.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL to N(0, I) per element, (B, C, t, h, w): the caller chooses the reduction."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
