"""What makes the denoisers and the structure controller diffusers models.

* :func:`config_init`: the ``__init__`` of a model takes the fields of its config dataclass as keyword arguments
  and registers them with diffusers' ``@register_to_config`` (so ``save_config``, ``from_config`` and pipelines
  see the release's config keys), while ``Model(config)``, ``Model(config_dict)`` and ``Model(config, **changes)``
  keep working. The dataclass stays the one definition of keys, defaults and checks.
* :func:`register_blocks`: tells diffusers' step caches (first-block cache, MagCache) how our transformer blocks
  are called and what they return (registered on first use, since the registry imports every diffusers model).
* :class:`DiffusersModel`: the mixins (``ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin``) and the typed
  ``config`` view shared by the three models.
* :func:`lora_config`, :func:`save_lora_weights`: LoRA on the attention projections (PEFT), saved in the layout of
  diffusers' ``save_lora_weights``.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Type

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = ["config_init", "register_blocks", "DiffusersModel", "LORA_TARGETS", "lora_config", "save_lora_weights"]


def config_values(config: Any) -> Dict[str, Any]:
    """The fields of a config dataclass as a flat dict (tuples kept, nothing renamed)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def config_init(config_cls: Type) -> Callable:
    """Decorator for a model ``__init__(self, **fields)`` whose keys are the fields of ``config_cls``.

    The decorated ``__init__`` accepts ``(config=None, **fields)``: ``config`` a ``config_cls`` instance or a
    ``config.json`` dict (checked by ``config_cls.from_dict``), ``fields`` changes on top of it. Every field is then
    registered with diffusers' ``register_to_config`` and the wrapped ``__init__`` receives the full set of fields.
    The signature seen by diffusers (``from_config``, ``extract_init_dict``) lists exactly the dataclass fields.
    """
    fields = dataclasses.fields(config_cls)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    signature = inspect.Signature(params)

    def decorate(init: Callable) -> Callable:
        init.__signature__ = signature
        registered = register_to_config(init)

        @functools.wraps(registered)
        def __init__(self, config: Any = None, **changes: Any) -> None:
            if isinstance(config, dict):
                config = config_cls.from_dict(config)
            if config is not None and not isinstance(config, config_cls):
                raise ValueError(f"{type(self).__name__} takes a {config_cls.__name__} or a config dict, "
                                 f"got {type(config).__name__}")
            values = {} if config is None else config_values(config)
            registered(self, **{**values, **changes})

        __init__.__signature__ = signature
        return __init__

    return decorate


@functools.lru_cache(maxsize=None)
def register_blocks() -> None:
    """Register the transformer block classes with diffusers' ``TransformerBlockRegistry`` (once).

    Every block is called as ``block(hidden_states, ...)`` and returns the new ``hidden_states`` only, the layout the
    first-block cache and MagCache expect (``return_hidden_states_index=0``, no encoder stream returned).
    """
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    from opensora.models.structure_controller import ControlBlock
    from opensora.models.transformer import OpenSoraBlock

    for block in (OpenSoraBlock, ControlBlock):
        TransformerBlockRegistry.register(block, TransformerBlockMetadata(return_hidden_states_index=0,
                                                                          return_encoder_hidden_states_index=None))


class DiffusersModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin):
    """Base of the Open-Sora models: diffusers' model mixins plus a typed ``config``.

    ``model.config`` is the model's config dataclass (attribute access to every key as with diffusers' config,
    ``model.config["key"]``, ``.get``, ``.keys``, ``.items``, and the derived values such as ``hidden_size``);
    the raw registered dict stays in ``model._internal_dict`` for diffusers' own use.
    """

    config_name = "config.json"
    ignore_for_config = ["config"]
    _supports_gradient_checkpointing = True
    # Under layerwise casting, patch embeddings, norms and the timestep / caption embedders keep their storage dtype
    # (as diffusers' PixArt and Wan do): their outputs modulate or feed every block.
    _skip_layerwise_casting_patterns = ("pos_embed", "patch_embed", "norm", "adaln_single", "caption_projection",
                                        "pooled_caption")

    @property
    def config(self):  # the typed view; diffusers' dict is ``_internal_dict``
        return self.__dict__["_typed_config"]

    def set_typed_config(self, config: Any) -> None:
        """Store the checked config dataclass (called once by ``__init__``)."""
        self.__dict__["_typed_config"] = config

    def to(self, *args, **kwargs):
        """``nn.Module.to``. diffusers 0.42.1's ``ModelMixin.to`` warns about float32-kept modules on every dtype cast
        even when a model has none (``[] is not None``); we have none, so its checks only matter under group
        offloading or quantization."""
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        if self._keep_in_fp32_modules or _is_group_offload_enabled(self) or getattr(self, "is_quantized", False):
            return super().to(*args, **kwargs)
        return nn.Module.to(self, *args, **kwargs)

    def enable_cache(self, config) -> None:
        """diffusers' ``CacheMixin.enable_cache`` (first-block cache, MagCache, TaylorSeer, ...), with our blocks
        registered first."""
        register_blocks()
        super().enable_cache(config)


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""Default LoRA target modules: the projections of every self- and cross-attention."""


def lora_config(rank: int, alpha: Optional[float] = None, targets: Sequence[str] = LORA_TARGETS):
    """A ``peft.LoraConfig`` for the attention projections (``alpha`` defaults to ``rank``: scale 1)."""
    from peft import LoraConfig

    if int(rank) < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    if not targets:
        raise ValueError("lora_targets must name at least one module (e.g. to_q, to_k, to_v, to_out.0)")
    return LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                      target_modules=list(targets), init_lora_weights=True)


def save_lora_weights(model: nn.Module, folder: str, prefix: str = "transformer",
                      adapter_name: str = "default") -> str:
    """Write the adapter weights of ``model`` to ``folder/pytorch_lora_weights.safetensors`` in the layout of
    diffusers' pipeline-level ``save_lora_weights``: tensor names and the adapter config (rank, alpha, targets,
    stored as safetensors metadata) under ``prefix.``, so that ``pipe.load_lora_weights(folder)`` and
    ``transformer.load_lora_adapter(folder, prefix="transformer", use_safetensors=True)`` read it. Only adapter
    tensors are written. Returns the file's path."""
    import json
    import os

    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if adapter_name not in getattr(model, "peft_config", {}):
        raise ValueError(f"the model has no LoRA adapter {adapter_name!r} to save")
    state = {f"{prefix}.{k}": v.detach().to("cpu").contiguous()
             for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
    meta = {f"{prefix}.{k}": sorted(v) if isinstance(v, set) else v
            for k, v in model.peft_config[adapter_name].to_dict().items()}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LORA_WEIGHT_NAME_SAFE)
    save_file(state, path + ".tmp", metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(meta, sort_keys=True)})
    os.replace(path + ".tmp", path)
    return path
