"""Configuration of the Open-Sora Plan v1.3 denoiser.

The fields are the keys of the published ``config.json`` (``OpenSoraT2V_v1_3``, written by diffusers); the
defaults are those of the released 2.7B model ``OpenSoraT2V_v1_3-2B/122``. Keys starting with ``_``
(``_class_name``, ``_diffusers_version``, ...) are bookkeeping and ignored on reading.

Two fields are ours: ``dense_blocks``, the blocks that use full 3D attention when ``sparse1d`` is on, and
``pooled_text`` (default off, as in the release), which adds the caption's masked mean to the timestep embedding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from wfvae.models.checkpoint import config_from_dict, read_json_object
from wfvae.cli_support import first_line

CLASS_NAME = "OpenSoraT2V_v1_3"
ACTIVATIONS = ("gelu", "gelu-approximate", "geglu", "geglu-approximate")


class ConfigAccess:
    """Dict-style reading of a config dataclass (``config["key"]``, ``.get``, ``.keys``, ``.items``), so that a
    model's typed ``config`` also reads like diffusers' ``FrozenDict`` config."""

    def keys(self) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


@dataclass
class OpenSoraT2VConfig(ConfigAccess):
    num_attention_heads: int = 24
    attention_head_dim: int = 96
    in_channels: int = 8
    out_channels: Optional[int] = 8  # None: same as in_channels
    num_layers: int = 32
    dropout: float = 0.0
    cross_attention_dim: Optional[int] = 2304  # must equal the hidden size (or None)
    attention_bias: bool = True
    sample_size_h: Any = None  # recorded training sizes (the release writes [h, w] lists); not used by the model
    sample_size_w: Any = None
    sample_size_t: Any = None
    patch_size: int = 2
    patch_size_t: int = 1
    activation_fn: str = "gelu-approximate"
    only_cross_attention: bool = False
    double_self_attention: bool = False
    upcast_attention: bool = False  # no effect: attention always runs through SDPA (as in the release)
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    caption_channels: int = 4096
    interpolation_scale_h: float = 1.0
    interpolation_scale_w: float = 1.0
    interpolation_scale_t: float = 1.0
    sparse1d: bool = True  # Skiparse attention in the blocks not listed in dense_blocks
    sparse_n: int = 4  # Skiparse ratio k
    # Blocks with full 3D attention when sparse1d is on; negative indices count from the end.
    # None: the first two and the last two, which is the release's rule (dense unless 2 <= i < 30) for its
    # 32 blocks. dense_blocks=(0, 1, 30, 31) reproduces that rule for any depth.
    dense_blocks: Optional[Tuple[int, ...]] = None
    # Add an MLP of the masked mean of the caption features to the timestep embedding (as SD3's pooled text
    # embedding does), so that every block's modulation sees the whole caption. Off in the release.
    pooled_text: bool = False

    def __post_init__(self):
        if self.dense_blocks is not None:
            self.dense_blocks = tuple(int(i) for i in self.dense_blocks)
        if self.attention_head_dim % 6:
            raise ValueError(f"attention_head_dim must be a multiple of 6 (3D RoPE uses three even-sized parts), "
                             f"got {self.attention_head_dim}")
        if self.cross_attention_dim not in (None, self.hidden_size):
            raise ValueError(f"cross_attention_dim must equal num_attention_heads * attention_head_dim = "
                             f"{self.hidden_size} (captions are projected to the hidden size), "
                             f"got {self.cross_attention_dim}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"activation_fn must be one of {ACTIVATIONS}, got {self.activation_fn!r}")
        for name in ("num_layers", "patch_size", "patch_size_t", "sparse_n", "in_channels", "caption_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    # ------------------------------------------------------------------ derived values
    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def interpolation_scale_thw(self) -> Tuple[float, float, float]:
        return (self.interpolation_scale_t, self.interpolation_scale_h, self.interpolation_scale_w)

    def dense_block_indices(self) -> Tuple[int, ...]:
        listed = (0, 1, -2, -1) if self.dense_blocks is None else self.dense_blocks
        return normalize_blocks(listed, self.num_layers)

    def skiparse_ratio(self, block: int) -> int:
        """Skiparse ratio k of a block: 1 (full attention) or ``sparse_n``."""
        if not self.sparse1d or block in self.dense_block_indices():
            return 1
        return self.sparse_n

    @staticmethod
    def is_group_block(block: int) -> bool:
        """Odd blocks use group skip, even blocks single skip (as the release alternates them)."""
        return block % 2 == 1

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "OpenSoraT2VConfig":
        """Build from a ``config.json`` dict. ValueError for unknown keys and values of the wrong JSON type; keys
        starting with ``_`` are ignored, missing keys take the defaults."""
        return config_from_dict(cls, values)

    @classmethod
    def from_json(cls, path: str) -> "OpenSoraT2VConfig":
        """Read ``config.json``: FileNotFoundError when absent, ValueError naming the file for a bad one."""
        return config_from_json(cls, path)

    def to_dict(self) -> Dict[str, Any]:
        values = dataclasses.asdict(self)
        if self.dense_blocks is None:
            del values["dense_blocks"]  # keep the file identical in keys to a published one
        else:
            values["dense_blocks"] = list(self.dense_blocks)
        if not self.pooled_text:
            del values["pooled_text"]
        return {"_class_name": CLASS_NAME, **values}

    def replace(self, **changes: Any) -> "OpenSoraT2VConfig":
        return dataclasses.replace(self, **changes)


def normalize_blocks(blocks: Sequence[int], num_layers: int) -> Tuple[int, ...]:
    """Non-negative, sorted, de-duplicated block indices (entries outside the model are dropped)."""
    return tuple(sorted({i + num_layers if i < 0 else i for i in blocks if -num_layers <= i < num_layers}))


def config_from_json(cls, path: str, values: Optional[Dict[str, Any]] = None):
    """:func:`config_from_dict` of the JSON object in ``path`` (or of ``values`` already read from it); every
    error names the file."""
    if values is None:
        values = read_json_object(path, "config")
    try:
        return cls.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad config {path}: {first_line(exc)}") from None
