"""The latents file of ``wfvae encode`` / ``wfvae decode``: one safetensors tensor plus metadata, fully checked on read.

Layout: tensor ``latents`` float32 ``(1, C, t, h, w)`` (the posterior mean, ``C = latent_dim``,
``t = 1 + ceil((T - 1) / temporal_compression)``, ``h = ceil(H / 8)``, ``w = ceil(W / 8)``) and string metadata
``format`` (``wfvae-latents-v1``), ``num_frames`` (T), ``height`` (H), ``width`` (W), ``fps`` and ``model_config``
(the encoder's config as JSON). A file that breaks any of this is refused with a one-line :class:`UsageError`.
"""
from __future__ import annotations

import json
import math
import os

from wfvae.cli_support import UsageError, check_finite_tensor, first_line

LATENTS_FORMAT = "wfvae-latents-v1"
MAX_SIDE = 16384  # pixels per side the command line accepts (input, --size, latents metadata)
MAX_FPS = 1000.0
_KEYS = ("num_frames", "height", "width", "fps", "model_config")
_REENCODE = "re-encode the video with 'wfvae encode'"


def latents_metadata(vae, num_frames: int, height: int, width: int, fps: float) -> dict:
    """The metadata strings stored beside the latents of a ``num_frames`` x ``height`` x ``width`` video."""
    from wfvae.models.encoder_decoder import published_config

    return {"format": LATENTS_FORMAT, "fps": repr(float(fps)), "num_frames": str(int(num_frames)),
            "height": str(int(height)), "width": str(int(width)),
            "model_config": json.dumps(published_config(vae.config), sort_keys=True)}


def _meta_int(meta: dict, key: str, path: str, high: int) -> int:
    try:
        value = int(meta[key])
    except ValueError:
        raise UsageError(f"{path}: metadata {key!r} must be an integer, got {meta[key][:40]!r}; {_REENCODE}") from None
    if not 1 <= value <= high:
        raise UsageError(f"{path}: metadata {key!r} must be from 1 to {high}, got {value}; {_REENCODE}")
    return value


def _check_metadata(meta: dict, path: str) -> dict:
    """Parsed metadata: ``num_frames``, ``height``, ``width`` (ints), ``fps`` (float), ``model_config`` (dict)."""
    if meta.get("format") != LATENTS_FORMAT:
        raise UsageError(f"{path} is not a 'wfvae encode' latents file (metadata 'format' is not {LATENTS_FORMAT})")
    for key in _KEYS:
        if key not in meta:
            raise UsageError(f"{path}: metadata {key!r} is missing; {_REENCODE}")
    out = {"num_frames": _meta_int(meta, "num_frames", path, 10 ** 8),
           "height": _meta_int(meta, "height", path, MAX_SIDE), "width": _meta_int(meta, "width", path, MAX_SIDE)}
    try:
        fps = float(meta["fps"])
    except ValueError:
        raise UsageError(f"{path}: metadata 'fps' must be a number, got {meta['fps'][:40]!r}; {_REENCODE}") from None
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise UsageError(f"{path}: metadata 'fps' must be a number in (0, {MAX_FPS:g}], got {fps}; {_REENCODE}")
    try:
        config = json.loads(meta["model_config"])
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: metadata 'model_config' is not a JSON object; {_REENCODE}")
    out.update(fps=fps, model_config=config)
    return out


def _check_against(latents, info: dict, vae, path: str) -> None:
    """The latents must come from ``vae`` and match the frame count and size of the metadata."""
    from wfvae.models.encoder_decoder import published_config

    ours = json.loads(json.dumps(published_config(vae.config), sort_keys=True))
    theirs = info["model_config"]
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise UsageError(f"{path} was encoded by a different WF-VAE (config differs in {', '.join(diff)[:200]})")
    _, c, t, h, w = latents.shape
    if c != vae.config.latent_dim:
        raise UsageError(f"{path}: latents have {c} channels but the model's latent_dim is {vae.config.latent_dim}")
    tc, sc = vae.temporal_compression, vae.spatial_compression
    need = (1 + -(-(info["num_frames"] - 1) // tc), -(-info["height"] // sc), -(-info["width"] // sc))
    if (t, h, w) != need:
        raise UsageError(f"{path}: metadata says {info['num_frames']} frames of {info['height']}x{info['width']}, "
                         f"which need latents of {need[0]}x{need[1]}x{need[2]} (t x h x w), but they are {t}x{h}x{w}; "
                         f"{_REENCODE}")


def read_latents(path: str, vae=None):
    """(latents ``(1, C, t, h, w)``, metadata dict of strings) from a ``wfvae encode`` file.

    Checks the layout, every metadata value and that the values are finite; with ``vae`` also that the file was
    encoded by that model and that the latent shape matches the metadata. Raises :class:`UsageError` otherwise.
    """
    import torch
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise UsageError(f"latents file not found: {path}")
    try:
        with safe_open(path, "pt") as fh:
            meta = fh.metadata() or {}
            latents = fh.get_tensor("latents") if "latents" in fh.keys() else None
    except Exception as exc:
        raise UsageError(f"cannot read latents {path}: {first_line(exc)[:200]}") from None
    if latents is None:
        raise UsageError(f"{path} holds no 'latents' tensor: it is not a 'wfvae encode' latents file")
    info = _check_metadata(meta, path)
    if latents.dim() != 5 or latents.shape[0] != 1 or not torch.is_floating_point(latents):
        raise UsageError(f"{path}: 'latents' must be a float tensor (1, C, t, h, w), got {latents.dtype} "
                         f"{tuple(latents.shape)}")
    if min(latents.shape) < 1:
        raise UsageError(f"{path}: 'latents' are empty: shape {tuple(latents.shape)}")
    if vae is not None:
        _check_against(latents, info, vae, path)
    check_finite_tensor(latents, f"the latents file {path}")
    return latents, meta
