"""Reading and writing denoiser weights in the diffusers folder layout of the release.

A model folder holds ``config.json`` and either ``diffusion_pytorch_model.safetensors`` or shards
``diffusion_pytorch_model-0000i-of-0000n.safetensors`` listed by ``diffusion_pytorch_model.safetensors.index.json``
(``{"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}``).
Every file is written under a temporary name and renamed once complete.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from wfvae.models.checkpoint import (check_dtype, check_state_dict, is_finite, read_json_object, read_safetensors,
                              save_safetensors_atomic, write_json_atomic)

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "INDEX_NAME", "parse_size", "read_weights", "write_weights",
           "check_state_dict", "check_dtype", "cast_state", "weights_file", "write_json_atomic", "resolve_load_args",
           "check_save_args"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
DEFAULT_MAX_SHARD_SIZE = "10GB"  # diffusers' default

_SHARD = re.compile(r"^diffusion_pytorch_model-\d{5}-of-\d{5}\.safetensors$")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: Union[int, str]) -> int:
    """Bytes from an int or a string such as ``"10GB"``, ``"500MB"``, ``"2GiB"``."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?I?B)\s*", size.upper())
    if not match:
        raise ValueError(f"cannot read size {size!r} (expected e.g. 10GB, 500MB or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def read_weights(folder: str) -> Dict[str, torch.Tensor]:
    """All tensors of a model folder (single file, or shards listed by the index).

    FileNotFoundError when a file is absent; ValueError naming the file when one is empty, truncated, not a
    safetensors file, or an index that is not ``{"weight_map": {tensor name: shard file}}``."""
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, INDEX_NAME)
    if os.path.isfile(single):
        return read_safetensors(single)
    if not os.path.isfile(index):
        raise FileNotFoundError(f"no weights in {folder}: expected {single} or {index}")
    weight_map = read_json_object(index, "weights index").get("weight_map")
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(v, str) and _SHARD.match(v) for v in weight_map.values())):
        raise ValueError(f"weights index {index} must map tensor names to shard files "
                         f"diffusion_pytorch_model-0000i-of-0000n.safetensors under \"weight_map\"")
    state: Dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard listed in {index} not found: {path}")
        state.update(read_safetensors(path))
    listed, found = set(weight_map), set(state)
    if listed != found:
        raise ValueError(f"{index} does not match its shards: listed but absent {sorted(listed - found)[:20]}, "
                         f"present but not listed {sorted(found - listed)[:20]}")
    return state


def weights_file(folder: str) -> str:
    """The weights file of a model folder, for messages: the single file, else the shard index."""
    single = os.path.join(folder, WEIGHTS_NAME)
    return single if os.path.isfile(single) else os.path.join(folder, INDEX_NAME)


def cast_state(state: Dict[str, torch.Tensor], device: Union[str, torch.device, None], dtype: torch.dtype,
               source: str) -> Dict[str, torch.Tensor]:
    """The tensors of ``state`` on ``device`` in ``dtype`` each checked once for NaN and
    inf after the move (one min/max pass on the target device). ``state`` is emptied as it goes, so that a
    checkpoint is never held twice. ValueError naming the first broken tensor."""
    check_dtype(dtype)
    out: Dict[str, torch.Tensor] = {}
    for name in list(state):
        raw = state.pop(name)
        tensor = raw.to(device=device or "cpu", dtype=dtype)
        if not is_finite(tensor):
            if is_finite(raw):
                raise ValueError(f"weights {source}: tensor {name} overflows {dtype} (values beyond its range): "
                                 f"load in torch.float32 or torch.bfloat16")
            raise ValueError(f"weights {source}: tensor {name} holds NaN or infinite values: the checkpoint is "
                             f"broken (re-download it or use an earlier one)")
        out[name] = tensor
    return out


def _plan_shards(state: Mapping[str, torch.Tensor], max_bytes: int) -> List[List[str]]:
    shards: List[List[str]] = [[]]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _remove(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.isfile(path):
            os.remove(path)


def write_weights(state: Mapping[str, torch.Tensor], folder: str,
                  max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE) -> List[str]:
    """Write ``state`` into ``folder``: one file, or shards + index above ``max_shard_size``.

    Weight files of the other layout left by an earlier save are removed, so the folder is never ambiguous.
    Returns the names of the files written.
    """
    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    shards = _plan_shards(tensors, parse_size(max_shard_size))
    stale = [os.path.join(folder, f) for f in os.listdir(folder) if _SHARD.match(f) or f in (WEIGHTS_NAME, INDEX_NAME)]
    if len(shards) == 1:
        save_safetensors_atomic(tensors, os.path.join(folder, WEIGHTS_NAME))
        _remove(p for p in stale if os.path.basename(p) != WEIGHTS_NAME)
        return [WEIGHTS_NAME]
    names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, keys in zip(names, shards):
        save_safetensors_atomic({k: tensors[k] for k in keys}, os.path.join(folder, name))
        weight_map.update({k: name for k in keys})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_json_atomic({"metadata": {"total_size": total}, "weight_map": weight_map}, os.path.join(folder, INDEX_NAME))
    _remove(p for p in stale if os.path.basename(p) not in names and os.path.basename(p) != INDEX_NAME)
    return names + [INDEX_NAME]


# Keyword arguments that diffusers' loaders (``DiffusionPipeline.from_pretrained``, ``ModelMixin.from_pretrained``)
# pass to a model's ``from_pretrained``; at their defaults they change nothing for our local, strict loading.
_NEUTRAL_LOAD_KWARGS = {"low_cpu_mem_usage": None, "use_safetensors": None, "disable_mmap": None,
                        "offload_state_dict": None, "cache_dir": None, "force_download": None, "proxies": None,
                        "local_files_only": None, "token": None, "revision": None, "max_memory": None,
                        "offload_folder": None, "provider": None, "sess_options": None, "provider_options": None,
                        "use_flashpack": None, "variant": "must be None", "quantization_config": "must be None",
                        "device_map": "device", "output_loading_info": "must be False"}


def resolve_load_args(path: str, subfolder: Optional[str], dtype: Optional[torch.dtype],
                      torch_dtype: Optional[torch.dtype], device: Union[str, torch.device, None],
                      kwargs: Dict[str, Any]) -> Tuple[str, Optional[torch.dtype], Union[str, torch.device, None]]:
    """The folder, dtype and device a ``from_pretrained(path, dtype, device, torch_dtype=, subfolder=, **kwargs)``
    call means. ``torch_dtype`` is diffusers' name for ``dtype``; a string ``device_map`` ("cpu", "cuda:0") is a
    device. ValueError for a conflicting pair, an unknown keyword, or a diffusers option we do not support
    (variants, quantization, dict device maps)."""
    if torch_dtype is not None:
        if dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree: give one of them")
        dtype = torch_dtype
    for key, value in kwargs.items():
        rule = _NEUTRAL_LOAD_KWARGS.get(key, "unknown")
        if rule == "unknown":
            raise ValueError(f"from_pretrained got an unknown keyword argument {key!r}")
        if rule == "must be None" and value is not None:
            raise ValueError(f"from_pretrained: {key}={value!r} is not supported by the Open-Sora models")
        if rule == "must be False" and value:
            raise ValueError(f"from_pretrained: {key}={value!r} is not supported by the Open-Sora models")
        if rule == "device" and value is not None:
            if not isinstance(value, (str, torch.device)) or str(value) in ("auto", "balanced", "sequential"):
                raise ValueError(f"from_pretrained: device_map={value!r} is not supported (give one device, e.g. "
                                 f"'cpu' or 'cuda', or use enable_group_offload / enable_model_cpu_offload)")
            if device is not None and torch.device(device) != torch.device(value):
                raise ValueError(f"device={device} and device_map={value!r} disagree: give one of them")
            device = value
    folder = os.path.join(path, subfolder) if subfolder else path
    return folder, dtype, device


def check_save_args(safe_serialization: bool = True, variant: Optional[str] = None, push_to_hub: bool = False,
                    **ignored: Any) -> None:
    """ValueError for the diffusers ``save_pretrained`` options we cannot honour (pickle weights, variants, Hub)."""
    if not safe_serialization:
        raise ValueError("save_pretrained writes safetensors only (safe_serialization=False is not supported)")
    if variant is not None:
        raise ValueError(f"save_pretrained: variant={variant!r} is not supported by the Open-Sora models")
    if push_to_hub:
        raise ValueError("save_pretrained: push_to_hub is not supported; upload the folder yourself")
