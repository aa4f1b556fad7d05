"""Structure condition controller (Open-Sora Plan v1.3 report, arXiv 2412.00131, "Structure Condition Controller").

A control video (canny edges, sketch, depth: :mod:`opensora.pipelines.control_signals`) steers a frozen denoiser
through residuals
added to the outputs of its transformer blocks::

    control (B, 3, T, H, W) in [-1, 1]
      --causal 3D-conv downsampler-->  (B, C', 1 + (T-1)/4, H/8, W/8)     # the latent grid, causal in time
      --patch embedding (base's patch size)-->  tokens (B, N, D)          # same N and order as the denoiser
      --K encoder blocks (self-attention with 3D RoPE + MLP, adaLN from the timestep)-->  features (B, N, D)
      --projector j (zero-initialised linear or 2-layer MLP)-->  residual_j (B, N, D)
    denoiser: x = block_i(x) + strength * frame_mask * residual_j      for the injected blocks i = j * inject_every

The base model is not touched: :class:`ControlledDenoiser` calls it with ``block_residuals`` (one entry per
block, None where nothing is injected). Since the projectors start at zero, a fresh controller leaves the base
model's output unchanged; training (base frozen, :mod:`opensora.training.controller`) opens them.

Frame masks here mean **1 = controlled**, 0 = free (the opposite of the inpaint masks' 1 = generate): latent
frames whose mask is 0 get no residual, so any subset of frames can be controlled.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.utils import BaseOutput
from torch import nn

from wfvae.models.causal import CausalConv3d
from wfvae.models.checkpoint import read_json_object

from opensora.models.checkpoint import (
    CONFIG_NAME, WEIGHTS_NAME, cast_state, check_dtype, check_save_args, check_state_dict, read_weights,
    resolve_load_args, weights_file, write_json_atomic, write_weights)
from opensora.models.config import ACTIVATIONS, ConfigAccess, config_from_dict, config_from_json
from opensora.models.diffusers_glue import DiffusersModel, config_init
from opensora.models.embeddings import AdaLNSingle, PatchEmbed, RoPE3D
from opensora.models.transformer import FeedForward, OpenSoraT2V, SelfAttention, modulate

CONTROLLER_CLASS_NAME = "OpenSoraStructureController"
PROJECTORS = ("linear", "mlp")


@dataclass
class StructureControllerConfig(ConfigAccess):
    """Sizes of a structure controller. The first five fields must match the base denoiser
    (:meth:`StructureController.for_base` copies them)."""

    num_attention_heads: int = 24  # of the base: hidden size D = heads * head_dim
    attention_head_dim: int = 96
    base_num_layers: int = 32  # blocks of the base denoiser
    patch_size: int = 2  # the base's patch sizes, so that the tokens line up with the denoiser's
    patch_size_t: int = 1
    num_layers: int = 2  # K encoder blocks
    control_channels: int = 3
    latent_channels: int = 16  # C' of the downsampler's output grid
    # conv_in width, then one width per spatial 2x stage (log2(spatial_compression) stages)
    downsampler_channels: Tuple[int, ...] = (32, 64, 128, 256)
    temporal_compression: int = 4  # the VAE's: 1 + (T - 1)/4 latent frames
    spatial_compression: int = 8
    projector: str = "linear"  # "linear" or "mlp" (Linear -> SiLU -> Linear), last layer zero-initialised
    inject_every: int = 1  # a residual for blocks 0, n, 2n, ... of the base
    timestep_conditioning: bool = True  # encoder blocks modulated by the timestep (adaLN-single)
    activation_fn: str = "gelu-approximate"
    attention_bias: bool = True
    norm_eps: float = 1e-6
    interpolation_scale_t: float = 1.0
    interpolation_scale_h: float = 1.0
    interpolation_scale_w: float = 1.0

    def __post_init__(self):
        self.downsampler_channels = tuple(int(c) for c in self.downsampler_channels)
        for name in ("temporal_compression", "spatial_compression"):
            value = int(getattr(self, name))
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of 2, got {value}")
        if self.temporal_compression > self.spatial_compression:
            raise ValueError("temporal_compression cannot exceed spatial_compression (one conv stage each 2x)")
        stages = int(math.log2(self.spatial_compression))
        if len(self.downsampler_channels) != stages + 1:
            raise ValueError(f"downsampler_channels needs {stages + 1} widths (conv_in + {stages} stages for "
                             f"{self.spatial_compression}x), got {self.downsampler_channels}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"activation_fn must be one of {ACTIVATIONS}, got {self.activation_fn!r}")
        if self.attention_head_dim % 6:
            raise ValueError(f"attention_head_dim must be a multiple of 6 (3D RoPE), got {self.attention_head_dim}")
        for name in ("base_num_layers", "inject_every", "patch_size", "patch_size_t", "control_channels",
                     "latent_channels", "num_attention_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def injected_blocks(self) -> Tuple[int, ...]:
        """Base blocks that receive a residual (one projector each)."""
        return tuple(range(0, self.base_num_layers, self.inject_every))

    def to_dict(self) -> Dict[str, Any]:
        values = dataclasses.asdict(self)
        values["downsampler_channels"] = list(self.downsampler_channels)
        return {"_class_name": CONTROLLER_CLASS_NAME, **values}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "StructureControllerConfig":
        """Build from a ``config.json`` dict (ValueError for unknown keys and values of the wrong JSON type)."""
        return config_from_dict(cls, values)

    @classmethod
    def for_base(cls, base_config, **fields) -> "StructureControllerConfig":
        """Config matching a base denoiser's :class:`~opensora.models.OpenSoraT2VConfig`, plus ``fields``."""
        matched = dict(num_attention_heads=base_config.num_attention_heads,
                       attention_head_dim=base_config.attention_head_dim, base_num_layers=base_config.num_layers,
                       patch_size=base_config.patch_size, patch_size_t=base_config.patch_size_t,
                       activation_fn=base_config.activation_fn, attention_bias=base_config.attention_bias,
                       norm_eps=base_config.norm_eps, interpolation_scale_t=base_config.interpolation_scale_t,
                       interpolation_scale_h=base_config.interpolation_scale_h,
                       interpolation_scale_w=base_config.interpolation_scale_w)
        return cls(**{**matched, **fields})


class ControlDownsampler(nn.Module):
    """Control video (B, 3, 1 + t*(T'-1), H, W) -> latent grid (B, C', T', H/s, W/s), causal in time.

    Each conv is the VAE's :class:`wfvae.models.causal.CausalConv3d` (kernel 3, first frame repeated in front, zero
    padding
    in space; with temporal stride 2, ``1 + 2m`` frames give ``1 + m`` and frame 0 stays alone).
    ``conv_in`` (stride 1), then one stride-2 stage per spatial 2x (the first log2(t) also 2x in time), each conv
    followed by SiLU, then ``conv_out`` to C' channels.
    """

    def __init__(self, config: StructureControllerConfig):
        super().__init__()
        c = config
        widths = c.downsampler_channels
        temporal_stages = int(math.log2(c.temporal_compression))
        self.conv_in = CausalConv3d(c.control_channels, widths[0], 3, padding=1)
        self.stages = nn.ModuleList([
            CausalConv3d(widths[i], widths[i + 1], 3, stride=(2 if i < temporal_stages else 1, 2, 2), padding=1)
            for i in range(len(widths) - 1)])
        self.conv_out = CausalConv3d(widths[-1], c.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(x))
        for stage in self.stages:
            x = F.silu(stage(x))
        return self.conv_out(x)


class ControlBlock(nn.Module):
    """Encoder block: adaLN-modulated self-attention (full, 3D RoPE) and MLP; an :class:`OpenSoraBlock` without the
    cross-attention, with the same parameter names so that it can start from one of the base's blocks."""

    def __init__(self, dim: int, heads: int, head_dim: int, activation_fn: str, attention_bias: bool, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.attn1 = SelfAttention(dim, heads, head_dim, attention_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.ff = FeedForward(dim, activation_fn)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, hidden_states: torch.Tensor, modulation: torch.Tensor,
                rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """hidden_states (B, N, D), modulation (B, 6, D) -> (B, N, D)."""
        x = hidden_states
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + modulation).chunk(6, dim=1)
        x = x + gate_msa * self.attn1(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))


def _projector(kind: str, dim: int) -> nn.Module:
    layers = [nn.Linear(dim, dim)] if kind == "linear" else [nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def latent_frame_mask(frames: torch.Tensor, stride_t: int = 4) -> torch.Tensor:
    """Video-frame mask (T,) or (B, T), T = 1 + stride_t * n (nonzero = controlled) -> latent-frame mask (…, 1 + n):
    latent frame 0 is frame 0, latent frame j the frames ``stride_t*(j-1)+1 .. stride_t*j``; a latent frame is
    controlled when any of its frames is."""
    frames = torch.as_tensor(frames)
    t = frames.shape[-1]
    if (t - 1) % stride_t:
        raise ValueError(f"frame mask of {t} frames: expected 1 + {stride_t}n")
    rest = (frames[..., 1:] != 0).reshape(*frames.shape[:-1], -1, stride_t).any(dim=-1)
    return torch.cat([frames[..., :1] != 0, rest], dim=-1).float()


@dataclass
class StructureControllerOutput(BaseOutput):
    """Output of :class:`StructureController`: ``block_residuals``, one entry per base block ((B, N, D) or None)."""

    block_residuals: List[Optional[torch.Tensor]]


class StructureController(DiffusersModel):
    """Structure condition controller, a diffusers model; see the module docstring. ``StructureController(config)``,
    ``StructureController(**fields)`` or ``StructureController.for_base(base_model, **fields)``."""

    _no_split_modules = ["ControlBlock"]
    _repeated_blocks = ["ControlBlock"]

    @config_init(StructureControllerConfig)
    def __init__(self, **fields):
        super().__init__()
        self.set_typed_config(StructureControllerConfig(**fields))
        c = self.config
        dim = c.hidden_size
        self.downsampler = ControlDownsampler(c)
        self.patch_embed = PatchEmbed(c.latent_channels, dim, c.patch_size, c.patch_size_t)
        self.adaln_single = AdaLNSingle(dim) if c.timestep_conditioning else None
        self.rope = RoPE3D(c.attention_head_dim, (c.interpolation_scale_t, c.interpolation_scale_h,
                                                  c.interpolation_scale_w))
        self.blocks = nn.ModuleList([ControlBlock(dim, c.num_attention_heads, c.attention_head_dim, c.activation_fn,
                                                  c.attention_bias, c.norm_eps) for _ in range(c.num_layers)])
        self.norm_out = nn.LayerNorm(dim, eps=c.norm_eps, elementwise_affine=False)
        self.projectors = nn.ModuleList([_projector(c.projector, dim) for _ in c.injected_blocks()])

    @classmethod
    def for_base(cls, base: OpenSoraT2V, init_from_base: bool = True, **fields) -> "StructureController":
        """A fresh controller sized for ``base``; with ``init_from_base`` its timestep embedding and encoder blocks
        start as copies of the base's (its first K blocks, cross-attention left out). Dtype/device follow ``base``."""
        param = base.scale_shift_table
        with torch.device(param.device):
            controller = cls(StructureControllerConfig.for_base(base.config, **fields)).to(param.dtype)
        if init_from_base:
            controller.copy_base_weights(base)
        return controller

    def copy_base_weights(self, base: OpenSoraT2V) -> None:
        """Copy the base's adaLN-single and the matching tensors of its first K blocks into the encoder."""
        self.check_base(base)
        if self.adaln_single is not None:
            self.adaln_single.load_state_dict(base.adaln_single.state_dict())
        for block, source in zip(self.blocks, base.transformer_blocks):
            wanted = block.state_dict()
            block.load_state_dict({k: v for k, v in source.state_dict().items() if k in wanted}, strict=True)

    def check_base(self, base: nn.Module) -> None:
        """ValueError when the controller's tokens and residuals do not fit ``base``'s blocks."""
        c, b = self.config, base.config
        pairs = {"hidden size": (c.hidden_size, b.hidden_size), "number of blocks": (c.base_num_layers, b.num_layers),
                 "patch size": (c.patch_size, b.patch_size), "temporal patch size": (c.patch_size_t, b.patch_size_t)}
        wrong = [f"{k} {mine} vs base {theirs}" for k, (mine, theirs) in pairs.items() if mine != theirs]
        if wrong:
            raise ValueError(f"structure controller does not fit the denoiser: {', '.join(wrong)}")

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    # ------------------------------------------------------------------ forward
    def encode_control(self, control: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
        """Control video (B, 3, T, H, W) in [-1, 1] -> tokens (B, N, D) and token grid (T'', H'', W'').

        Independent of the timestep: a sampler computes it once. T = 1 + 4n, H and W multiples of 8 * patch size.
        """
        c = self.config
        if control.ndim != 5 or control.shape[1] != c.control_channels:
            raise ValueError(f"control video (B, {c.control_channels}, T, H, W) expected, got {tuple(control.shape)}")
        t, h, w = control.shape[2:]
        unit = c.spatial_compression * c.patch_size
        if (t - 1) % c.temporal_compression or h % unit or w % unit:
            raise ValueError(f"control video of {t} frames at {h}x{w}: need 1 + {c.temporal_compression}n frames and "
                             f"sizes that are multiples of {unit}")
        grid_latent = self.downsampler(control.to(self.dtype))
        lt = grid_latent.shape[2]
        if lt % c.patch_size_t:
            raise ValueError(f"{lt} latent frames are not divisible by the temporal patch size {c.patch_size_t}")
        grid = (lt // c.patch_size_t, grid_latent.shape[3] // c.patch_size, grid_latent.shape[4] // c.patch_size)
        return self.patch_embed(grid_latent), grid

    def token_mask(self, frame_mask: Optional[torch.Tensor], grid: Tuple[int, int, int],
                   batch: int) -> Optional[torch.Tensor]:
        """Latent-frame mask (T',) or (B, T') (1 = controlled) -> token weights (B, N, 1); None = all controlled."""
        if frame_mask is None:
            return None
        mask = torch.as_tensor(frame_mask, dtype=torch.float32)
        mask = mask.expand(batch, -1) if mask.ndim == 1 else mask
        pt = self.config.patch_size_t
        if mask.shape != (batch, grid[0] * pt):
            raise ValueError(f"frame mask of shape (T',) or (B, T') = ({batch}, {grid[0] * pt}) expected, "
                             f"got {tuple(frame_mask.shape)}")
        mask = (mask.reshape(batch, grid[0], pt) != 0).any(dim=-1).float()
        return mask[:, :, None].expand(-1, -1, grid[1] * grid[2]).reshape(batch, -1, 1)

    def forward(self, control: torch.Tensor, timestep: Union[torch.Tensor, float, None] = None,
                frame_mask: Optional[torch.Tensor] = None, control_strength: float = 1.0,
                tokens: Optional[Tuple[torch.Tensor, Tuple[int, int, int]]] = None,
                return_dict: bool = True) -> Union[StructureControllerOutput, Tuple[List[Optional[torch.Tensor]]]]:
        """Per-block residuals for the base denoiser.

        Args:
            control: control video (B, 3, T, H, W) in [-1, 1] (ignored when ``tokens`` is given).
            timestep: (B,) or one value; required with ``timestep_conditioning``.
            frame_mask: latent-frame mask (T',) or (B, T'), 1 = controlled, 0 = no residual; None = all frames.
            control_strength: factor on every residual.
            tokens: the output of :meth:`encode_control`, to skip the downsampler.
            return_dict: return a :class:`StructureControllerOutput` (else a one-element tuple).

        Returns:
            ``.block_residuals``: ``base_num_layers`` entries, (B, N, D) residuals in the controller's dtype for the
            injected blocks, None for the others (the ``block_residuals`` argument of :class:`OpenSoraT2V`).
        """
        x, grid = tokens if tokens is not None else self.encode_control(control)
        b, dim = x.shape[0], x.shape[2]
        if self.adaln_single is not None:
            if timestep is None:
                raise ValueError("this controller is timestep-conditioned: pass the timestep")
            timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
            modulation = self.adaln_single(timestep, x.dtype)[0].view(b, 6, dim)
        else:
            modulation = x.new_zeros(b, 6, dim)
        rope = self.rope(grid, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, modulation, rope)
        x = self.norm_out(x)
        weight = self.token_mask(frame_mask, grid, b)
        weight = control_strength if weight is None else weight.to(x) * control_strength
        residuals: List[Optional[torch.Tensor]] = [None] * self.config.base_num_layers
        for block_index, projector in zip(self.config.injected_blocks(), self.projectors):
            residuals[block_index] = projector(x) * weight
        return StructureControllerOutput(block_residuals=residuals) if return_dict else (residuals,)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: str, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None, *, torch_dtype: Optional[torch.dtype] = None,
                        subfolder: Optional[str] = None, **kwargs) -> "StructureController":
        """Load ``config.json`` + ``diffusion_pytorch_model.safetensors`` (strict); eval mode, float32 by default.
        ``torch_dtype`` / ``subfolder`` / diffusers' loader keywords as for :meth:`OpenSoraT2V.from_pretrained`."""
        path, dtype, device = resolve_load_args(path, subfolder, dtype, torch_dtype, device, kwargs)
        check_dtype(dtype)
        config_path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"controller folder not found or without {CONFIG_NAME}: {path} (expected "
                                    f"{CONFIG_NAME} and {WEIGHTS_NAME})")
        values = read_json_object(config_path, "config")
        if values.get("_class_name", CONTROLLER_CLASS_NAME) != CONTROLLER_CLASS_NAME:
            raise ValueError(f"{config_path} holds a {values['_class_name']!r}, not a {CONTROLLER_CLASS_NAME}")
        config = config_from_json(StructureControllerConfig, config_path, values)
        state = read_weights(path)
        with torch.device("meta"):
            model = cls(config)
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, weights_file(path))
        state = cast_state(state, device, dtype or torch.float32, weights_file(path))
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def save_pretrained(self, folder: str, is_main_process: bool = True, **kwargs) -> None:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` (diffusers' ``safe_serialization`` /
        ``variant`` keywords accepted at their defaults)."""
        check_save_args(**kwargs)
        if not is_main_process:
            return
        write_weights(self.state_dict(), folder)
        write_json_atomic(self.config.to_dict(), os.path.join(folder, CONFIG_NAME))


class ControlledDenoiser(nn.Module):
    """A denoiser (:class:`OpenSoraT2V` or :class:`~opensora.models.OpenSoraInpaint`) steered by a structure
    controller. Same call as the denoiser, plus ``control``, ``frame_mask`` and ``control_strength``;
    :meth:`set_control` stores them (with the timestep-independent tokens computed once) for samplers that call
    the model with the denoiser's arguments only. Without any control the base runs unchanged.

    A control batch smaller than the latent batch is repeated to fill it (classifier-free guidance doubles the
    batch: both halves are controlled).
    """

    def __init__(self, base: OpenSoraT2V, controller: StructureController, control_strength: float = 1.0):
        super().__init__()
        controller.check_base(base)
        self.base, self.controller = base, controller
        self.control_strength = control_strength
        self._tokens: Optional[Tuple[torch.Tensor, Tuple[int, int, int]]] = None
        self._frame_mask: Optional[torch.Tensor] = None

    @property
    def config(self):
        return self.base.config

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def set_control(self, control: Optional[torch.Tensor], frame_mask: Optional[torch.Tensor] = None,
                    control_strength: Optional[float] = None) -> None:
        """Store a control video (B, 3, T, H, W) and latent-frame mask for the next calls (None clears them)."""
        with torch.no_grad():
            self._tokens = None if control is None else self.controller.encode_control(control)
        self._frame_mask = frame_mask
        if control_strength is not None:
            self.control_strength = control_strength

    def forward(self, hidden_states: torch.Tensor, timestep: Union[torch.Tensor, float],
                encoder_hidden_states: torch.Tensor, encoder_attention_mask: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, control: Optional[torch.Tensor] = None,
                frame_mask: Optional[torch.Tensor] = None,
                control_strength: Optional[float] = None,
                return_dict: bool = True) -> Union[Transformer2DModelOutput, Tuple[torch.Tensor]]:
        """As :meth:`OpenSoraT2V.forward` (same output); ``control`` (B_c, 3, T, H, W) overrides the stored one."""
        if control is not None:
            tokens = self.controller.encode_control(control)
        else:
            tokens = self._tokens
            frame_mask = self._frame_mask if frame_mask is None else frame_mask
        residuals = None
        if tokens is not None:
            x, grid = tokens
            x = x.to(hidden_states.device)  # tokens stored while the model sat elsewhere (CPU offload)
            b = hidden_states.shape[0]
            expected = self.base.token_grid(*hidden_states.shape[2:])
            if tuple(grid) != tuple(expected):
                raise ValueError(f"control gives a {grid} token grid, the latent a {expected} one (control videos "
                                 f"need the frame count and size of the generated video)")
            if b % x.shape[0]:
                raise ValueError(f"control batch {x.shape[0]} does not divide the latent batch {b}")
            repeat = b // x.shape[0]
            x = x.repeat(repeat, 1, 1)
            if frame_mask is not None and torch.as_tensor(frame_mask).ndim == 2:
                frame_mask = torch.as_tensor(frame_mask).repeat(repeat, 1)
            strength = self.control_strength if control_strength is None else control_strength
            residuals = self.controller(None, timestep, frame_mask, strength, tokens=(x, grid)).block_residuals
        return self.base(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, attention_mask,
                         block_residuals=residuals, return_dict=return_dict)
