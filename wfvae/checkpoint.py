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

import json
import os
import re
from typing import Dict

import torch

from .wavelets import haar2d_filters, haar3d_filters

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"



def write_json_atomic(values, path: str, indent: int = 2) -> None:
    """Write ``values`` as JSON to ``path`` through ``path.tmp`` + rename: the file is whole or absent."""
    with open(path + ".tmp", "w") as fh:
        json.dump(values, fh, indent=indent)
        fh.write("\n")
    os.replace(path + ".tmp", path)


_HAAR3D_NAMES = ["h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v"]  # published order = our subband index
_HAAR2D_NAMES = ["aa", "ad", "da", "dd"]
_HAAR_MODULE = re.compile(r"^(encoder\.wavelet_transform_(?:in|l1|l2)|decoder\.inverse_wavelet_transform_(?:out|l1|l2))\.")


def normalize_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes and fix the Open-Sora Plan ``tranform`` spelling."""
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key.replace("wavelet_tranform_", "wavelet_transform_")] = value
    return out


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


def read_state_dict(path: str, allow_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a published training ``.ckpt`` (EMA weights preferred)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:  # pickle refused or corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]} "
                         f"(if you trust the file, pass allow_pickle=True)") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} does not hold a state dict")
    if isinstance(ckpt.get("ema_state_dict"), dict) and ckpt["ema_state_dict"]:
        return ckpt["ema_state_dict"]
    state = ckpt.get("state_dict", ckpt)
    if isinstance(state, dict) and isinstance(state.get("gen_model"), dict):
        state = state["gen_model"]
    return state
