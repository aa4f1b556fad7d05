"""Reading and writing WF-VAE weights in the published layouts.

Layouts read:

(a) WF-VAE release: ``config.json`` + ``diffusion_pytorch_model.safetensors``; the fixed Haar filters are
    stored too (``encoder.wavelet_transform_in.h_conv.conv.weight``, ``decoder.inverse_wavelet_transform_out.h``...).
(b) Open-Sora Plan v1.3: the same, spelled ``wavelet_tranform_l1/l2``, without the input/output Haar entries.
(c) Published training checkpoints ``*.ckpt``: ``ema_state_dict`` (preferred) or ``state_dict["gen_model"]``,
    keys possibly prefixed with ``module.``.

Our modules build the Haar filters themselves (they are constants, never trained); Haar entries found in a
checkpoint are checked against those constants and then dropped. Everything else loads strictly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from wfvae.cli_support import commit, discard, first_line, temp_path
from wfvae.models.wavelets import haar2d_filters, haar3d_filters

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"



def write_json_atomic(values, path: str, indent: int = 2) -> None:
    """Write ``values`` as JSON to ``path`` through a registered hidden temporary file (``cli_support.temp_path``)
    + rename: the file is whole or absent, also when the program is interrupted."""
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as fh:
            json.dump(values, fh, indent=indent)
            fh.write("\n")
        commit(tmp, path)
    finally:
        discard(tmp)


def save_safetensors_atomic(tensors: Dict[str, torch.Tensor], path: str) -> None:
    """Write ``tensors`` to a .safetensors file that is whole or absent (registered temporary file + rename), with
    the usual file permissions."""
    from safetensors.torch import save_file

    tmp = temp_path(path)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        commit(tmp, path)
    finally:
        discard(tmp)


_HAAR3D_NAMES = ["h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v"]  # published order = our subband index
_HAAR2D_NAMES = ["aa", "ad", "da", "dd"]
HAAR_KEY_PATTERN = r"^(encoder\.wavelet_transform_(?:in|l1|l2)|decoder\.inverse_wavelet_transform_(?:out|l1|l2))\."
_HAAR_MODULE = re.compile(HAAR_KEY_PATTERN)


def normalize_key(key: str) -> str:
    """Strip ``module.`` prefixes and fix the Open-Sora Plan ``tranform`` spelling."""
    while key.startswith("module."):
        key = key[len("module."):]
    return key.replace("wavelet_tranform_", "wavelet_transform_")


def normalize_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """:func:`normalize_key` applied to every key."""
    return {normalize_key(key): value for key, value in state.items()}


def read_weights(path: str, dtype: Optional[torch.dtype] = None, allow_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """The model tensors of a weights file in any published layout: keys normalised, Haar entries checked against
    the constants and dropped, floating tensors converted to ``dtype`` as they are read (one at a time).

    A ``.safetensors`` file is read tensor by tensor (:func:`iter_safetensors`); a ``.ckpt`` is memory-mapped where
    its format allows, so that only the chosen weights (EMA preferred) are read, and each is copied once."""
    if path.endswith(".safetensors"):
        items, mapped = iter_safetensors(path, dtype), False
    else:
        items, mapped = read_state_dict(path, allow_pickle=allow_pickle, mmap=True).items(), True
    state, haar = {}, {}
    for key, value in items:
        key = normalize_key(key)
        if _HAAR_MODULE.match(key):
            haar[key] = value
            continue
        if dtype is not None and value.is_floating_point() and value.dtype != dtype:
            value = value.to(dtype)
        elif mapped:
            value = value.clone()  # not backed by the checkpoint file, which may be rewritten later
        state[key] = value
    try:
        split_haar(haar)
    except ValueError as exc:
        raise ValueError(f"weights {path}: {exc}") from None
    return state


def _expected_haar(key: str) -> torch.Tensor:
    leaf = key.split(".")[2]  # e.g. "h_conv", "h", "aa"
    name = leaf[: -len("_conv")] if leaf.endswith("_conv") else leaf
    if name in _HAAR2D_NAMES:
        return haar2d_filters()[_HAAR2D_NAMES.index(name)].unsqueeze(0)
    if name in _HAAR3D_NAMES:
        return haar3d_filters()[_HAAR3D_NAMES.index(name)].unsqueeze(0)
    raise KeyError(key)


def split_haar(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the published Haar entries after checking that they hold the standard constants."""
    out = {}
    for key, value in state.items():
        if not _HAAR_MODULE.match(key):
            out[key] = value
            continue
        try:
            expected = _expected_haar(key)
        except KeyError:
            raise ValueError(f"unexpected wavelet tensor in checkpoint: {key}") from None
        if tuple(value.shape) != tuple(expected.shape) or not torch.allclose(value.double(), expected, atol=1e-4):
            raise ValueError(f"checkpoint tensor {key} is not the standard Haar filter this model uses")
    return out


def haar_entries(has_in_out: bool = True, l1_3d: bool = False, l2_3d: bool = True) -> Dict[str, torch.Tensor]:
    """The Haar tensors of layout (a), so that published code can load what we save."""
    entries = {}

    def add3d(prefix: str, conv: bool):
        for i, n in enumerate(_HAAR3D_NAMES):
            key = f"{prefix}.{n}_conv.conv.weight" if conv else f"{prefix}.{n}"
            entries[key] = haar3d_filters()[i].unsqueeze(0).clone()

    def add2d(prefix: str):
        for i, n in enumerate(_HAAR2D_NAMES):
            entries[f"{prefix}.{n}"] = haar2d_filters()[i].unsqueeze(0).clone()

    if has_in_out:
        add3d("encoder.wavelet_transform_in", True)
        add3d("decoder.inverse_wavelet_transform_out", False)
    for level, is3d in (("l1", l1_3d), ("l2", l2_3d)):
        if is3d:
            add3d(f"encoder.wavelet_transform_{level}", True)
            add3d(f"decoder.inverse_wavelet_transform_{level}", False)
        else:
            add2d(f"encoder.wavelet_transform_{level}")
            add2d(f"decoder.inverse_wavelet_transform_{level}")
    return entries


def read_state_dict(path: str, allow_pickle: bool = False, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a published training ``.ckpt`` (EMA weights preferred).

    A ``.ckpt`` is a torch pickle: it is read with ``torch.load(weights_only=True)`` unless ``allow_pickle``;
    ``mmap``: memory-mapped (tensors read when touched) when the file's format allows it.
    Raises FileNotFoundError for a missing file and ValueError naming the file for anything unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if os.path.getsize(path) == 0:
        raise ValueError(f"cannot read checkpoint {path}: the file is empty")
    ckpt = None
    if mmap:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=True)
        except Exception:  # a legacy (non-zip) file, or a damaged one: the plain load below explains
            ckpt = None
    try:
        if ckpt is None:
            ckpt = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:  # pickle refused or corrupt file
        detail = first_line(exc)
        hint = (" (if you trust the file, pass allow_pickle=True)" if "weights_only" in str(exc).lower()
                and not allow_pickle else "")
        raise ValueError(f"cannot read checkpoint {path}: not a torch checkpoint or damaged ({detail}){hint}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} does not hold a state dict (found a {type(ckpt).__name__})")
    if isinstance(ckpt.get("ema_state_dict"), dict) and ckpt["ema_state_dict"]:
        state = ckpt["ema_state_dict"]
    else:
        state = ckpt.get("state_dict", ckpt)
        if isinstance(state, dict) and isinstance(state.get("gen_model"), dict):
            state = state["gen_model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors (expected ema_state_dict, "
                         f"state_dict['gen_model'] or a dict of tensors)")
    return state


# ---------------------------------------------------------------------------------------------- safe reading
def read_json_object(path: str, what: str = "config") -> Dict[str, Any]:
    """The JSON object stored in ``path``.

    Raises FileNotFoundError when the file is absent and ValueError naming the file when it is empty, not
    UTF-8 text, not JSON, or JSON that is not an object (a list, a number ...)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {what} {path}: not a JSON text file") from None
    if not text.strip():
        raise ValueError(f"cannot read {what} {path}: the file is empty (expected a JSON object)")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"cannot read {what} {path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    if not isinstance(values, dict):
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(values), "number")
        raise ValueError(f"{what} {path} must hold a JSON object {{...}}, found a JSON {kind}")
    return values


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU); ValueError naming the file when it cannot be read."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"cannot read weights {path}: the file is empty")
    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError (bad header, truncated data), OSError
        raise ValueError(f"cannot read weights {path}: truncated or not a safetensors file "
                         f"({first_line(exc)})") from None


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


_STAGING_BYTES = 8 * 1024 ** 2


def iter_safetensors(path: str, dtype: Optional[torch.dtype] = None) -> Iterator[Tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of a safetensors file, one at a time, read with plain file reads into a fresh
    CPU tensor (no memory map, so no file pages are held while loading), in file order.

    With ``dtype``, floating tensors of another dtype are converted while they are read, through a staging buffer
    of at most ``_STAGING_BYTES``: loading in a smaller dtype never holds a whole tensor in the file's dtype.

    Raises FileNotFoundError for a missing file and ValueError naming the file for a damaged one (the whole
    header is checked before the first tensor is read)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"cannot read weights {path}: the file is empty")

    def bad(detail: str) -> ValueError:
        return ValueError(f"cannot read weights {path}: truncated or not a safetensors file ({detail})")

    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= size - 8:
            raise bad("bad header length")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad("header is not JSON") from None
        if not isinstance(header, dict):
            raise bad("header is not a JSON object")
        header.pop("__metadata__", None)
        entries, data_start = [], 8 + n
        for name, info in header.items():
            try:
                kind, shape = _SAFETENSORS_DTYPES[info["dtype"]], list(info["shape"])
                begin, end = info["data_offsets"]
                count = math.prod(shape)
                ok = (all(isinstance(d, int) and d >= 0 for d in shape) and 0 <= begin <= end
                      and end - begin == count * torch.empty(0, dtype=kind).element_size())
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok or data_start + end > size:
                raise bad(f"bad entry for tensor {name}")
            entries.append((begin, name, kind, shape))
        staging = None
        for begin, name, kind, shape in sorted(entries, key=lambda e: e[0]):
            fh.seek(data_start + begin)
            if dtype is None or not kind.is_floating_point or kind == dtype:
                raw = torch.empty(math.prod(shape) * torch.empty(0, dtype=kind).element_size(), dtype=torch.uint8)
                if fh.readinto(raw.numpy()) != raw.numel():
                    raise bad(f"data of tensor {name} is cut short")
                yield name, raw.view(kind).reshape(shape)
                continue
            out = torch.empty(shape, dtype=dtype).view(-1)
            size = torch.empty(0, dtype=kind).element_size()
            if staging is None:
                staging = torch.empty(_STAGING_BYTES, dtype=torch.uint8)
            step = _STAGING_BYTES // size
            for i in range(0, out.numel(), step):
                n = min(step, out.numel() - i) * size
                if fh.readinto(staging[:n].numpy()) != n:
                    raise bad(f"data of tensor {name} is cut short")
                out[i:i + n // size] = staging[:n].view(kind)
            yield name, out.view(shape)


@contextmanager
def parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory, no initialisation cost), buffers
    stay real (the constant Haar filters): load the weights with ``load_state_dict(state, assign=True)``."""
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        if param is not None:
            param = torch.nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def check_dtype(dtype) -> None:
    """``dtype`` must be None or a floating torch.dtype (ValueError otherwise)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16 ...), got {dtype!r}")


def is_finite(tensor: torch.Tensor) -> bool:
    """True unless a floating ``tensor`` holds NaN or +-inf. One reduction pass (min/max propagate NaN), no copy."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.detach())
    return math.isfinite(low.item()) and math.isfinite(high.item())


def check_finite_state(state: Mapping[str, torch.Tensor], source: str) -> None:
    """ValueError naming the first tensor of a checkpoint that holds NaN or infinite values."""
    for name, tensor in state.items():
        if not is_finite(tensor):
            raise ValueError(f"weights {source}: tensor {name} holds NaN or infinite values: the checkpoint is "
                             f"broken (re-download it or use an earlier one)")


def check_state_dict(expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check; the error names every offending tensor (the first 20 of each kind)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if not (missing or unexpected or mismatched):
        return

    def show(items: List[str]) -> str:
        return f"{items[:20]}{' ...' if len(items) > 20 else ''}"

    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {show(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {show(mismatched)}")
    raise ValueError(f"weights in {source} do not match the config: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------- config values
def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}.get(hint, str(hint))


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis or origin is list else args
        if items and len(items) > 1:
            return len(value) == len(items) and all(_matches(v, a) for v, a in zip(value, items))
        return not items or all(_matches(v, items[0]) for v in value)
    return True


def config_from_dict(cls, values: Mapping[str, Any], label: Optional[str] = None):
    """An instance of the config dataclass ``cls`` from a ``config.json`` dict (or a model's ``.config``): keys
    starting with ``_`` (``_class_name`` ...) ignored, unknown keys and values of the wrong JSON type refused
    (ValueError, naming the config as ``label``, default the class name), missing keys left at their defaults.
    The one ``from_dict`` of the WF-VAE, denoiser and controller configs."""
    label = label or cls.__name__
    if not isinstance(values, Mapping):
        raise ValueError(f"a {label} must be a dict, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"unknown {label} keys: {', '.join(unknown)}")
    check_config_values(cls, values)
    return cls(**{k: v for k, v in values.items() if k in known})


def check_config_values(cls, values: Mapping[str, Any]) -> None:
    """ValueError naming the first value of ``values`` whose JSON type does not fit the dataclass field ``cls``
    declares for it (``"8"`` or ``8.5`` for an int, ``true`` for a number, a number for a list ...)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in values and not _matches(values[f.name], hints[f.name]):
            value = values[f.name]
            raise ValueError(f"{f.name} must be {_type_name(hints[f.name])}, got {json.dumps(value)[:60]}")
