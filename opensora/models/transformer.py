"""The Open-Sora Plan v1.3 text-to-video denoiser (published class ``OpenSoraT2V_v1_3``).

A PixArt-style diffusion transformer over latent videos::

    latent (B, C, T, H, W) --patch embed--> tokens x (B, N, D),  N = T/pt * H/p * W/p in (t, h, w) order
    timestep (B,) --adaLN-single--> modulation (B, 6, D) shared by all blocks, embedding e (B, D)
        (with ``pooled_text``, an MLP of the caption's masked mean is added to the timestep embedding first)
    caption (B, L, C_text) --projection--> context (B, L, D)
    num_layers x block:
        x = x + gate_msa * SelfAttn(modulate(LN(x), shift_msa, scale_msa))   # 3D RoPE; full or Skiparse
        x = x + CrossAttn(x, context)                                        # no norm, no gate
        x = x + gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))
    x = Linear(modulate(LN(x), shift, scale from e)) --unpatchify--> (B, C_out, T, H, W)

A 1-frame latent (T = 1) is an image: images and videos go through the same model. Parameter names follow the
published checkpoints, so released weights load as they are.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from opensora.models.attention import key_bias, sdpa_attention
from opensora.models.checkpoint import (
    CONFIG_NAME, DEFAULT_MAX_SHARD_SIZE, INDEX_NAME, WEIGHTS_NAME, cast_state, check_dtype, check_save_args,
    check_state_dict, read_weights, resolve_load_args, weights_file, write_json_atomic, write_weights)
from opensora.models.config import OpenSoraT2VConfig
from opensora.models.diffusers_glue import DiffusersModel, config_init
from opensora.models.embeddings import (
    AdaLNSingle, CaptionProjection, PatchEmbed, PooledCaptionEmbedding, RoPE3D, rope_tables, rotate)
from opensora.models.skiparse import skiparse_attention

Rope = Tuple[torch.Tensor, torch.Tensor]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` as one full-size operation: x (B, N, D), shift/scale (B, 1, D) -> (B, N, D)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` as one full-size operation: x, y (B, N, D), gate (B, 1, D) -> (B, N, D)."""
    return torch.addcmul(x, gate, y)


class Attention(nn.Module):
    """Multi-head attention projections (names as in diffusers: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``).

    ``backend`` computes the attention itself (see :mod:`opensora.models.attention`).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(dim, inner, bias=bias)
        self.to_v = nn.Linear(dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])
        self.backend: Callable[..., torch.Tensor] = sdpa_attention

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b s (h d) -> b s h d", h=self.heads)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out[1](self.to_out[0](rearrange(x, "b s h d -> b s (h d)")))


class SelfAttention(Attention):
    """Self-attention over the video tokens with 3D RoPE; full (ratio 1) or Skiparse (ratio k > 1)."""

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool = True, dropout: float = 0.0,
                 skiparse_ratio: int = 1, group_skip: bool = False):
        super().__init__(dim, heads, head_dim, bias, dropout)
        self.skiparse_ratio = skiparse_ratio
        self.group_skip = group_skip

    def forward(self, x: torch.Tensor, rope: Rope, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, N, D); rope (cos, sin) (N, d); keep (B, N) key mask or None -> (B, N, D)."""
        q, k, v = self.split_heads(self.to_q(x)), self.split_heads(self.to_k(x)), self.split_heads(self.to_v(x))
        tables = rope_tables(*rope)
        q, k = rotate(q, tables), rotate(k, tables)
        return self.project_out(self.attend(q, k, v, keep))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The attention over the tokens: q, k, v (B, N, heads, d) with RoPE applied, keep (B, N) or None ->
        (B, N, heads, d). Sequence parallelism (:mod:`opensora.models.sequence_parallel`) wraps it per instance."""
        if self.skiparse_ratio == 1:
            return self.backend(q, k, v, key_bias(keep, q.dtype))
        return skiparse_attention(q, k, v, self.skiparse_ratio, self.group_skip, keep, self.backend)


class CrossAttention(Attention):
    """Attention from the video tokens to the text tokens (unaffected by Skiparse, no RoPE)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, N, D), context (B, L, D), bias (B, 1, 1, L) or None -> (B, N, D)."""
        q = self.split_heads(self.to_q(x))
        k, v = self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))
        return self.project_out(self.backend(q, k, v, bias))


class ProjectedActivation(nn.Module):
    """Linear projection then activation, as named in the config's ``activation_fn``."""

    def __init__(self, dim: int, inner_dim: int, activation_fn: str):
        super().__init__()
        self.activation_fn = activation_fn
        self.proj = nn.Linear(dim, 2 * inner_dim if activation_fn == "geglu" else inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.activation_fn == "gelu":
            return F.gelu(x)
        if self.activation_fn == "gelu-approximate":
            return F.gelu(x, approximate="tanh")
        if self.activation_fn == "geglu":
            x, gate = x.chunk(2, dim=-1)
            return x * F.gelu(gate)
        return x * torch.sigmoid(1.702 * x)  # "geglu-approximate" (diffusers ApproximateGELU)


class FeedForward(nn.Module):
    """Linear + activation -> dropout -> Linear, hidden width 4 * dim (names ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, activation_fn: str = "gelu-approximate", dropout: float = 0.0, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([ProjectedActivation(dim, inner, activation_fn), nn.Dropout(dropout),
                                  nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class OpenSoraBlock(nn.Module):
    """One transformer block: modulated self-attention, cross-attention, modulated MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, activation_fn: str = "gelu-approximate",
                 attention_bias: bool = True, dropout: float = 0.0, norm_eps: float = 1e-6,
                 norm_elementwise_affine: bool = False, skiparse_ratio: int = 1, group_skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.attn1 = SelfAttention(dim, heads, head_dim, attention_bias, dropout, skiparse_ratio, group_skip)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.attn2 = CrossAttention(dim, heads, head_dim, attention_bias, dropout)
        self.ff = FeedForward(dim, activation_fn, dropout)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor, modulation: torch.Tensor, rope: Rope,
                keep: Optional[torch.Tensor] = None, context_bias: Optional[torch.Tensor] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """hidden_states (B, N, D), context (B, L, D), modulation (B, 6, D), residual (B, N, D) or None (a
        controller's feature, added to the output) -> (B, N, D).

        The first argument is named ``hidden_states`` and the block returns one tensor: the layout diffusers' step
        caches find through ``TransformerBlockRegistry`` (:func:`~opensora.models.diffusers_glue.register_blocks`).
        """
        x = hidden_states
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + modulation).chunk(6, dim=1)
        x = gated_residual(x, gate_msa, self.attn1(modulate(self.norm1(x), shift_msa, scale_msa), rope, keep))
        x = x + self.attn2(x, context, context_bias)
        x = gated_residual(x, gate_mlp, self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x if residual is None else x + residual.to(x.dtype)


class OpenSoraT2V(DiffusersModel):
    """Open-Sora Plan v1.3 denoiser, a diffusers model (``ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin``).

    ``OpenSoraT2V(config)``, ``OpenSoraT2V(**config_fields)`` or ``OpenSoraT2V.from_config(dict)``; the keys are
    those of :class:`OpenSoraT2VConfig` (the release's ``config.json``), registered with ``register_to_config``.
    """

    config_class = OpenSoraT2VConfig
    _no_split_modules = ["OpenSoraBlock"]
    _repeated_blocks = ["OpenSoraBlock"]  # regional compilation: ``model.compile_repeated_blocks()``

    @config_init(OpenSoraT2VConfig)
    def __init__(self, **fields):
        super().__init__()
        self.set_typed_config(self.config_class(**fields))
        c = self.config
        dim = c.hidden_size
        self.pos_embed = PatchEmbed(c.in_channels, dim, c.patch_size, c.patch_size_t)
        self.caption_projection = CaptionProjection(c.caption_channels, dim)
        self.adaln_single = AdaLNSingle(dim)
        self.pooled_caption = PooledCaptionEmbedding(c.caption_channels, dim) if c.pooled_text else None
        self.rope = RoPE3D(c.attention_head_dim, c.interpolation_scale_thw)
        self.transformer_blocks = nn.ModuleList([
            OpenSoraBlock(dim, c.num_attention_heads, c.attention_head_dim, c.activation_fn, c.attention_bias,
                          c.dropout, c.norm_eps, c.norm_elementwise_affine,
                          skiparse_ratio=c.skiparse_ratio(i), group_skip=c.is_group_block(i))
            for i in range(c.num_layers)
        ])
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, c.patch_size_t * c.patch_size * c.patch_size * c.output_channels)
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.scale_shift_table.dtype

    def set_attention_backend(self, backend: Callable[..., torch.Tensor]) -> None:
        """Use ``backend`` (e.g. :func:`~opensora.models.attention.xformers_attention`) in every attention."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = backend

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass (training only). ``False`` turns it off (as diffusers'
        ``disable_gradient_checkpointing()`` does)."""
        self.gradient_checkpointing = bool(enabled)

    # ------------------------------------------------------------------ forward
    def token_grid(self, frames: int, height: int, width: int) -> Tuple[int, int, int]:
        pt, p = self.config.patch_size_t, self.config.patch_size
        if frames % pt or height % p or width % p:
            raise ValueError(f"latent of {frames} frames at {height}x{width} is not divisible by the patch size "
                             f"{pt}x{p}x{p}")
        return frames // pt, height // p, width // p

    def latent_keep(self, attention_mask: Optional[torch.Tensor], grid: Tuple[int, int, int]) -> Optional[torch.Tensor]:
        """Latent mask (B, T, H, W) (nonzero = real) -> token key mask (B, N); None when every token is kept.

        A token is kept when any latent position of its patch is.
        """
        if attention_mask is None:
            return None
        if attention_mask.ndim != 4:
            raise ValueError(f"attention_mask of shape (B, T, H, W) expected, got {tuple(attention_mask.shape)}")
        c = self.config
        kernel = (c.patch_size_t, c.patch_size, c.patch_size)
        keep = F.max_pool3d((attention_mask != 0).float()[:, None], kernel_size=kernel, stride=kernel) > 0
        keep = rearrange(keep, "b 1 t h w -> b (t h w)")
        if keep.shape[1] != grid[0] * grid[1] * grid[2]:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match the latent")
        return None if bool(keep.all()) else keep

    @staticmethod
    def caption_keep(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Text mask (B, 1, L) or (B, L) (1 = real token) -> boolean (B, L), or None when no mask is given."""
        return None if mask is None else mask.reshape(mask.shape[0], -1) != 0

    @staticmethod
    def caption_bias(keep: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Text keep mask (B, L) -> additive bias (B, 1, 1, L); None when nothing is masked."""
        if keep is None:
            return None
        return None if bool(keep.all()) else key_bias(keep, dtype)

    def forward(self, hidden_states: torch.Tensor, timestep: Union[torch.Tensor, float],
                encoder_hidden_states: torch.Tensor, encoder_attention_mask: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                block_residuals: Optional[Sequence[Optional[torch.Tensor]]] = None,
                return_dict: bool = True) -> Union[Transformer2DModelOutput, Tuple[torch.Tensor]]:
        """Predict from a noisy latent.

        Args:
            hidden_states: latent (B, C, T, H, W); T = 1 for images.
            timestep: (B,) diffusion timesteps (or one value for the batch).
            encoder_hidden_states: text features (B, 1, L, C_text) or (B, L, C_text).
            encoder_attention_mask: (B, 1, L) or (B, L), 1 = real token, 0 = padding; None = all real.
            attention_mask: latent mask (B, T, H, W), 1 = real, 0 = padding; None = all real.
            block_residuals: one entry per block, None or a tensor (B, N, D) added to that block's output
                (a controller's features, see :mod:`opensora.models.structure_controller`); None = no residuals.
            return_dict: return a ``Transformer2DModelOutput`` (else a one-element tuple).

        Returns:
            ``Transformer2DModelOutput`` whose ``.sample`` is (B, C_out, T, H, W), or ``(sample,)``.
        """
        b, _, t, h, w = hidden_states.shape
        grid = self.token_grid(t, h, w)
        dtype = self.dtype
        x = self.embed_latent(hidden_states.to(dtype))

        if encoder_hidden_states.ndim == 4:
            if encoder_hidden_states.shape[1] != 1:
                raise ValueError(f"encoder_hidden_states of shape (B, 1, L, D) or (B, L, D) expected, "
                                 f"got {tuple(encoder_hidden_states.shape)}")
            encoder_hidden_states = encoder_hidden_states[:, 0]
        caption = encoder_hidden_states.to(dtype)
        context = self.caption_projection(caption)

        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
        caption_keep = self.caption_keep(encoder_attention_mask)
        pooled = None if self.pooled_caption is None else self.pooled_caption(caption, caption_keep)
        modulation, embedded_timestep = self.adaln_single(timestep, dtype, pooled)
        modulation = modulation.view(b, 6, -1)

        keep = self.latent_keep(attention_mask, grid)
        context_bias = self.caption_bias(caption_keep, dtype)
        rope = self.rope(grid, x.device, dtype)

        if block_residuals is not None and len(block_residuals) != len(self.transformer_blocks):
            raise ValueError(f"block_residuals must have one entry per block ({len(self.transformer_blocks)}), "
                             f"got {len(block_residuals)}")
        for i, block in enumerate(self.transformer_blocks):
            residual = None if block_residuals is None else block_residuals[i]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, context, modulation, rope, keep, context_bias, residual, use_reentrant=False)
            else:
                x = block(x, context, modulation, rope, keep, context_bias, residual)

        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))
        sample = self.unpatchify(x, grid)
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def embed_latent(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Model input (B, C, T, H, W) -> tokens (B, N, D); subclasses with extra input streams override it."""
        return self.pos_embed(hidden_states)

    def unpatchify(self, x: torch.Tensor, grid: Tuple[int, int, int]) -> torch.Tensor:
        """(B, N, pt * p * p * C_out) -> (B, C_out, T, H, W)."""
        c = self.config
        return rearrange(x, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", t=grid[0], h=grid[1], w=grid[2],
                         pt=c.patch_size_t, ph=c.patch_size, pw=c.patch_size)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: str, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None, *, torch_dtype: Optional[torch.dtype] = None,
                        subfolder: Optional[str] = None, **kwargs) -> "OpenSoraT2V":
        """Load a model folder (``path``, or ``path/subfolder``): ``config.json`` + ``diffusion_pytorch_model.safetensors``
        (or shards with ``diffusion_pytorch_model.safetensors.index.json``, the release layout).

        Strict: missing, unexpected or mis-shaped tensors raise ``ValueError`` naming them, and so do NaN or
        infinite weights, an unreadable or damaged ``config.json`` or weights file (naming the file).
        ``dtype`` (or diffusers' ``torch_dtype``) defaults to float32; the other keywords diffusers' pipeline loader
        passes are accepted at their defaults (:func:`~opensora.models.checkpoint.resolve_load_args`). The model is
        built on the meta device and takes the checkpoint's tensors, so the weights are never held twice. Eval mode.
        """
        path, dtype, device = resolve_load_args(path, subfolder, dtype, torch_dtype, device, kwargs)
        check_dtype(dtype)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model folder not found: {path} (expected a folder with {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME} or {INDEX_NAME})")
        config = cls.config_class.from_json(os.path.join(path, CONFIG_NAME))
        state = read_weights(path)
        with torch.device("meta"):  # no random initialisation of weights that are replaced anyway
            model = cls(config)
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, weights_file(path))
        state = cast_state(state, device, dtype or torch.float32, weights_file(path))
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def save_pretrained(self, folder: str, max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
                        is_main_process: bool = True, **kwargs) -> None:
        """Write ``config.json`` and the weights (sharded with an index above ``max_shard_size``). diffusers'
        ``safe_serialization`` / ``variant`` keywords are accepted at their defaults."""
        check_save_args(**kwargs)
        if not is_main_process:
            return
        write_weights(self.state_dict(), folder, max_shard_size)
        write_json_atomic(self.config.to_dict(), os.path.join(folder, CONFIG_NAME))
