"""The user-facing WF-VAE, a diffusers model: loading and saving, block-wise (causal-cache) inference and tiling.

    vae = WFVAE.from_pretrained("WF-VAE-L-16Chn", torch_dtype=torch.bfloat16)   # config.json + safetensors
    posterior = vae.encode(video, latent_chunk=4).latent_dist     # video (B, 3, 1+4n, H, W) in [-1, 1]
    video = vae.decode(posterior.mode(), latent_chunk=4).sample   # (B, 3, 1+4n, H, W)

``latent_chunk=k`` runs k latent frames (4k video frames) at a time and gives the same result as the whole-video
call (up to float rounding): every causal layer carries what it needs across chunks in a cache that lives only
for the call. ``tile``/``tile_overlap`` (pixels) split frames into overlapping tiles blended linearly: this is an
approximation (attention and receptive fields are cut at tile borders), opt-in, also as a default with
:meth:`WFVAE.enable_tiling`. :meth:`WFVAE.enable_slicing` runs a batch one sample at a time.

``encode``/``decode`` are differentiable, chunked or not: the stream cache keeps its frames in the autograd graph,
so chunked gradients equal whole-video gradients (up to float rounding; a chunked call under autograd saves no
memory, since every chunk's graph is kept until backward). ``encode_stream``/``decode_stream`` (bounded memory
for any length, used by the ``wfvae`` command) run under ``torch.inference_mode()``.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import typing
import warnings
from typing import Iterable, Iterator, List, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from wfvae.models.causal import StreamCache
from wfvae.models.checkpoint import (CONFIG_NAME, HAAR_KEY_PATTERN, WEIGHTS_NAME, check_dtype, check_finite_state,
                         check_state_dict, haar_entries, parameters_on_meta, read_json_object, read_weights,
                         save_safetensors_atomic, write_json_atomic)
from wfvae.cli_support import first_line
from wfvae.models.encoder_decoder import (
    SPATIAL_COMPRESSION, Decoder, DiagonalGaussian, Encoder, WFVAEConfig, latent_stat, level_is_temporal,
    published_config, temporal_compression)
from wfvae.inference.tiling import TileGrid

# encode() refuses videos with values beyond +-VIDEO_LIMIT: far outside [-1, 1], so that the overshoot of resampling
# filters and the Gaussian noise added to image conditions (std up to about 2) pass, while any 0..255 video with a
# pixel above 16 (every real one) is caught.
VIDEO_LIMIT = 16.0

# Keyword arguments that diffusers' pipeline loader passes to every model's from_pretrained, with the values this
# loader accepts for them (it always loads with low memory, from local safetensors or published .ckpt files).
_PIPELINE_LOADING_KWARGS = {"max_memory": (None,), "offload_folder": (None,), "offload_state_dict": (None, False),
                            "variant": (None,), "use_safetensors": (None, True), "use_flashpack": (None, False),
                            "low_cpu_mem_usage": (None, True, False), "disable_mmap": (None, True, False),
                            "quantization_config": (None,), "local_files_only": (None, True, False),
                            "output_loading_info": (None, False)}
_SAVE_KWARGS = {"safe_serialization": (True,), "variant": (None,), "max_shard_size": None, "is_main_process": None,
                "push_to_hub": (False,), "use_flashpack": (False,), "save_peft_format": None}


@dataclasses.dataclass
class DecoderOutput(BaseOutput):
    """What :meth:`WFVAE.decode` returns: diffusers' ``DecoderOutput`` fields, ``sample`` (B, 3, T, H, W) and
    ``commit_loss`` (always None here). Defined here because importing diffusers' own class imports every diffusers
    model, which made the first decode of a process 8-15 s slower on the CPU."""

    sample: torch.Tensor
    commit_loss: Optional[torch.Tensor] = None


def _config_signature() -> inspect.Signature:
    """``(self, *, latent_dim=8, base_channels=128, ...)``: the published config keys of :class:`WFVAEConfig`, their
    types and defaults, as keyword arguments (what diffusers' ``register_to_config`` and ``from_config`` read)."""
    hints = typing.get_type_hints(WFVAEConfig)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in dataclasses.fields(WFVAEConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = tuple(default) if isinstance(default, list) else default  # no shared mutable default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=hints[f.name]))
    return inspect.Signature(params)


class WFVAE(ModelMixin, ConfigMixin):
    """Wavelet-flow video VAE with 4x (or 8x) temporal and 8x spatial compression.

    Built from the published config keys (``WFVAE(latent_dim=16, base_channels=192, ...)``, or
    ``WFVAE.from_config(vae.config)``); ``vae.config`` holds them. Invalid values raise ValueError.
    """

    config_name = CONFIG_NAME
    _keys_to_ignore_on_load_unexpected = [HAAR_KEY_PATTERN]  # diffusers' own loader: the Haar constants we rebuild
    # layerwise casting: the frame attention reads its projection weights directly (as a matmul), not via forward
    _skip_layerwise_casting_patterns = ["norm", r"\.(q|k|v|proj_out)\.conv$"]

    def __init__(self, *args, **config):
        if args:
            raise TypeError("WFVAE takes its config keys as keywords: WFVAE(**config) or WFVAE.from_config(config)")
        super().__init__()
        cfg = WFVAEConfig.from_dict(config)  # validates keys, JSON types and values
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.use_tiling, self.tile_size, self.tile_overlap = False, None, None
        self.use_slicing = False

    __init__.__signature__ = _config_signature()
    __init__ = register_to_config(__init__)

    # ------------------------------------------------------------------ properties
    @property
    def temporal_compression(self) -> int:
        return temporal_compression(self.config)

    @property
    def spatial_compression(self) -> int:
        return SPATIAL_COMPRESSION

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: diffusers' rule (a layerwise-casting hook's compute dtype, else the weights'), without
        walking every module when no diffusers hook is attached (called once per encode/decode)."""
        probe = self.decoder.conv_in.conv
        if "_diffusers_hook" in self.__dict__ or "_diffusers_hook" in probe.__dict__:
            return super().dtype
        return probe.weight.dtype

    @property
    def device(self) -> torch.device:
        """Compute device: diffusers' rule (group offloading's onload device, else the weights'), fast without hooks."""
        probe = self.decoder.conv_in.conv
        if "_diffusers_hook" in self.__dict__ or "_diffusers_hook" in probe.__dict__:
            return super().device
        return probe.weight.device

    def latent_stat(self, name: str) -> torch.Tensor:
        """The config's ``scale`` or ``shift`` as a (latent_dim,) float32 tensor."""
        return latent_stat(self.config, name)

    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents ``(z - shift) * scale`` with the config's per-channel statistics; z is
        (B, latent_dim, ...) (any number of trailing dimensions)."""
        self._check_latents(z, rank=None)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        return (z - self.latent_stat("shift").to(z).view(shape)) * self.latent_stat("scale").to(z).view(shape)

    def unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`scale_latents`."""
        self._check_latents(z, rank=None)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        return z / self.latent_stat("scale").to(z).view(shape) + self.latent_stat("shift").to(z).view(shape)

    # ------------------------------------------------------------------ defaults (diffusers' VAE switches)
    def enable_tiling(self, tile: int = 256, tile_overlap: Optional[int] = None) -> None:
        """Tile frames by default: calls that pass no ``tile`` use ``tile`` / ``tile_overlap`` pixels."""
        TileGrid.for_pixels((tile, tile), tile, tile_overlap, self.spatial_compression)  # validates now
        self.use_tiling, self.tile_size, self.tile_overlap = True, tile, tile_overlap

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_slicing(self) -> None:
        """Encode and decode a batch one sample at a time (less memory, same results)."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def _tiling(self, tile: Optional[int], tile_overlap: Optional[int]):
        if tile is None and self.use_tiling:
            return self.tile_size, self.tile_overlap if tile_overlap is None else tile_overlap
        return tile, tile_overlap

    def _slices(self, x: torch.Tensor) -> List[torch.Tensor]:
        return list(x.split(1)) if self.use_slicing and x.shape[0] > 1 else [x]

    # ------------------------------------------------------------------ encode / decode
    def forward(self, video: torch.Tensor, sample_posterior: bool = True, generator=None):
        """Training pass: (reconstruction, posterior, (enc_l1, dec_l1, enc_l2, dec_l2))."""
        params, (enc_l1, enc_l2) = self.encoder(video)
        posterior = DiagonalGaussian(params)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        rec, (dec_l1, dec_l2) = self.decoder(z)
        return rec, posterior, (enc_l1, dec_l1, enc_l2, dec_l2)

    def encode(self, x: torch.Tensor, return_dict: bool = True, latent_chunk: Optional[int] = None,
               tile: Optional[int] = None, tile_overlap: Optional[int] = None):
        """Encode (B, 3, T, H, W) in [-1, 1], T = 1 + 4n, H and W multiples of 8, to the posterior over
        (B, latent_dim, 1 + n, H/8, W/8): ``AutoencoderKLOutput`` with ``.latent_dist`` (``(posterior,)`` with
        ``return_dict=False``). See the module docstring for ``latent_chunk`` and tiling.

        Raises ValueError for anything else: another shape, an integer or bool dtype, NaN/inf, values far
        outside [-1, 1] (beyond +-16: 0..255 pixels) (one min/max pass per chunk)."""
        self._check_video(x, whole=True)
        if latent_chunk is not None:
            self._check_chunk(latent_chunk)
        tile, tile_overlap = self._tiling(tile, tile_overlap)
        parts = []
        for video in self._slices(x):
            bounds = [(0, video.shape[2])] if latent_chunk is None else self.video_chunk_bounds(video.shape[2],
                                                                                                latent_chunk)
            parts.append(_cat(list(self._encode_chunks((video[:, :, a:b] for a, b in bounds), tile, tile_overlap)),
                              dim=2))
        posterior = DiagonalGaussian(_cat(parts, dim=0))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, latent_chunk: Optional[int] = None,
               tile: Optional[int] = None, tile_overlap: Optional[int] = None):
        """Decode latents (B, latent_dim, t, h, w) to video (B, 3, 1 + 4(t - 1), 8h, 8w), nominally in [-1, 1]
        (not clamped): ``DecoderOutput`` with ``.sample`` (``(video,)`` with ``return_dict=False``). Raises
        ValueError for another shape, a non-float dtype or NaN/inf latents."""
        self._check_latents(z)
        k = z.shape[2] if latent_chunk is None else self._check_chunk(latent_chunk)
        tile, tile_overlap = self._tiling(tile, tile_overlap)
        slices = self._slices(z)
        if len(slices) == 1 and k >= z.shape[2]:  # one piece: the decoder's output is the video
            video = next(self._decode_chunks(iter([z]), tile, tile_overlap))
        else:  # pieces written in place into the output (no list of pieces, no concatenation copy)
            video, row = None, 0
            for lat in slices:
                frame = 0
                for piece in self._decode_chunks((lat[:, :, i:i + k] for i in range(0, lat.shape[2], k)), tile,
                                                 tile_overlap):
                    if video is None:
                        frames = 1 + self.temporal_compression * (z.shape[2] - 1)
                        video = piece.new_empty(z.shape[0], piece.shape[1], frames, *piece.shape[3:])
                    video[row:row + lat.shape[0], :, frame:frame + piece.shape[2]] = piece
                    frame += piece.shape[2]
                row += lat.shape[0]
        if not return_dict:
            return (video,)
        return DecoderOutput(sample=video)

    def video_chunk_bounds(self, num_frames: int, latent_chunk: int) -> List[tuple]:
        """Frame ranges [(a, b), ...] that map to ``latent_chunk`` latent frames each: 1 + f(k-1) frames, then f*k."""
        f = self.temporal_compression
        k = self._check_chunk(latent_chunk)
        bounds, start, end = [], 0, 1 + f * (k - 1)
        while start < num_frames:
            bounds.append((start, min(end, num_frames)))
            start, end = end, end + f * k
        return bounds

    @torch.inference_mode()
    def encode_stream(self, chunks: Iterable[torch.Tensor], tile: Optional[int] = None,
                      tile_overlap: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Encode consecutive video chunks under inference mode; yields posterior parameters
        (B, 2*latent_dim, t_i, h, w) per chunk.

        Chunks must be aligned: the first has 1 + f*m frames, later ones multiples of f (f = 4), so that every
        chunk maps to whole latent frames. Memory is bounded by the chunk size, whatever the video length.
        """
        yield from self._encode_chunks(chunks, *self._tiling(tile, tile_overlap))

    @torch.inference_mode()
    def decode_stream(self, chunks: Iterable[torch.Tensor], tile: Optional[int] = None,
                      tile_overlap: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Decode consecutive latent chunks of any sizes under inference mode; yields video frames as they are
        determined.

        The frame counts per chunk differ from 4*t_i (one frame is held back for temporal interpolation and
        released with the next chunk); the concatenation equals :meth:`decode` of the whole sequence.
        """
        yield from self._decode_chunks(chunks, *self._tiling(tile, tile_overlap))

    def _encode_chunks(self, chunks: Iterable[torch.Tensor], tile, tile_overlap) -> Iterator[torch.Tensor]:
        """Posterior parameters per aligned video chunk (differentiable; the caller picks the grad mode)."""
        caches, grid = {}, None
        f, device, dtype = self.temporal_compression, self.device, self.dtype
        iterator = iter(chunks)
        nxt, i = next(iterator, None), -1
        while nxt is not None:
            chunk, nxt, i = nxt, next(iterator, None), i + 1
            self._check_video(chunk, whole=False, what=f"video chunk {i}")
            n = chunk.shape[2]
            if (i == 0 and (n - 1) % f) or (i > 0 and n % f):
                raise ValueError(f"chunk {i} has {n} frames: the first chunk needs 1 + {f}m frames, later ones "
                                 f"multiples of {f}")
            chunk = chunk.to(device, dtype)
            _check_values(chunk, "video" if i == 0 and nxt is None else f"video chunk {i}", VIDEO_LIMIT)
            if grid is None:
                self._warn_groupnorm(tile)
                grid = TileGrid.for_pixels(chunk.shape[-2:], tile, tile_overlap, self.spatial_compression)

            def run(x, j, last=nxt is None):
                cache = caches.setdefault(j, StreamCache())
                cache.last = last  # nothing needs to be kept for later chunks
                return self.encoder(x, cache)[0]

            yield grid.run(chunk, run, out_scale=1.0 / self.spatial_compression)

    def _decode_chunks(self, chunks: Iterable[torch.Tensor], tile, tile_overlap) -> Iterator[torch.Tensor]:
        """Video frames per latent chunk as they are determined (differentiable)."""
        caches, grid = {}, None
        device, dtype = self.device, self.dtype
        iterator = iter(chunks)
        nxt, i = next(iterator, None), -1
        while nxt is not None:
            chunk, nxt, i = nxt, next(iterator, None), i + 1
            what = "latents" if i == 0 and nxt is None else f"latent chunk {i}"
            self._check_latents(chunk, what=what)
            chunk = chunk.to(device, dtype)
            _check_values(chunk, what)
            if grid is None:
                self._warn_groupnorm(tile)
                grid = TileGrid.for_latents(chunk.shape[-2:], tile, tile_overlap, self.spatial_compression)

            def run(x, j, last=nxt is None):
                cache = caches.setdefault(j, StreamCache())
                cache.last = last
                return self.decoder(x, cache)[0]

            yield grid.run(chunk, run, out_scale=self.spatial_compression)

    # ------------------------------------------------------------------ checks
    def _check_chunk(self, latent_chunk) -> int:
        if not isinstance(latent_chunk, int) or isinstance(latent_chunk, bool) or latent_chunk < 1:
            raise ValueError(f"latent_chunk must be a positive integer, got {latent_chunk!r}")
        return latent_chunk

    def _check_video(self, video: torch.Tensor, whole: bool, what: str = "video") -> None:
        """Type, dtype and shape of a video (B, 3, T, H, W) (O(1); the values are checked by :func:`_check_values`).
        ``whole``: T must be 1 + 4n (a chunk's frame count is checked by :meth:`encode_stream`)."""
        f, s = self.temporal_compression, self.spatial_compression
        _check_tensor(video, what, "(B, 3, T, H, W)", video_hint=True)
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"{what} must be (B, 3, T, H, W) with 3 RGB channels, got shape {tuple(video.shape)}")
        if 0 in video.shape:
            raise ValueError(f"{what} (B, 3, T, H, W) has an empty dimension: shape {tuple(video.shape)}")
        t, h, w = video.shape[2:]
        if (whole and (t - 1) % f) or h % s or w % s:
            raise ValueError(f"{what} of {t} frames at {h}x{w}: need 1 + {f}n frames and sizes divisible by {s} "
                             f"(wfvae.pad_video pads, wfvae.crop_video trims back)")

    def _check_latents(self, z: torch.Tensor, what: str = "latents", rank: Optional[int] = 5) -> None:
        """Type, dtype and shape of latents (B, latent_dim, t, h, w) (``rank=None``: (B, latent_dim, ...))."""
        c = self.config.latent_dim
        shape = f"(B, {c}, t, h, w)" if rank == 5 else f"(B, {c}, ...)"
        _check_tensor(z, what, shape)
        if (z.dim() != rank if rank else z.dim() < 2) or z.shape[1] != c:
            raise ValueError(f"{what} must be {shape} for this VAE (latent_dim {c}), got shape {tuple(z.shape)}")
        if rank and 0 in z.shape:
            raise ValueError(f"{what} {shape} has an empty dimension: shape {tuple(z.shape)}")

    def _warn_groupnorm(self, tile) -> None:
        if self.config.norm_type == "groupnorm":
            warnings.warn("GroupNorm statistics span all frames and pixels: chunked or tiled results of a GroupNorm "
                          "WF-VAE only approximate the whole-video result", stacklevel=4)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], config: Union[str, dict, WFVAEConfig, None] = None,
                        torch_dtype: Optional[torch.dtype] = None, subfolder: Optional[str] = None,
                        device: Union[str, torch.device, None] = None, allow_pickle: bool = False,
                        dtype: Optional[torch.dtype] = None, **loading) -> "WFVAE":
        """Load a released WF-VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), an Open-Sora
        Plan v1.3 VAE folder, or a safetensors / published ``*.ckpt`` file with ``config`` (a dict, a
        :class:`WFVAEConfig` or a json path; default: ``config.json`` beside the file), from ``path/subfolder``.
        Strict: missing or unexpected tensors raise ``ValueError``. ``dtype`` is an alias of ``torch_dtype``.

        The model is built without weights (parameters on the meta device) and takes the loaded tensors as they
        are (``load_state_dict(assign=True)``), converted to ``torch_dtype`` one at a time: loading holds one
        copy of the weights. The keyword arguments diffusers' pipeline loader passes are accepted at their
        default values (``device_map`` as a device name)."""
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype {dtype} and torch_dtype {torch_dtype} disagree: pass one of them")
        dtype = torch_dtype if torch_dtype is not None else dtype
        device = _loading_device(device, loading.pop("device_map", None))
        _check_options(loading, _PIPELINE_LOADING_KWARGS, "WFVAE.from_pretrained")
        path = os.fspath(path)
        if subfolder:
            path = os.path.join(path, subfolder)
        if os.path.isdir(path):
            weights = os.path.join(path, WEIGHTS_NAME)
            config_path = os.path.join(path, CONFIG_NAME)
        elif os.path.isfile(path):
            weights, config_path = path, os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
        else:
            raise FileNotFoundError(f"WF-VAE model not found: {path} (expected a folder with {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME}, or a weights file)")
        check_dtype(dtype)
        if config is None or isinstance(config, (str, os.PathLike)):
            config_path = os.fspath(config or config_path)
            values = read_json_object(config_path, "WF-VAE config")
        else:
            config_path = None
            values = dataclasses.asdict(config) if isinstance(config, WFVAEConfig) else config
        if not isinstance(values, dict):
            raise ValueError(f"a WF-VAE config must be a dict, got {type(values).__name__}")
        try:
            with parameters_on_meta():
                model = cls(**{k: v for k, v in values.items() if not str(k).startswith("_")})
        except (ValueError, TypeError) as exc:
            if config_path is None:
                raise
            raise ValueError(f"bad WF-VAE config {config_path}: {first_line(exc)}") from None
        state = read_weights(weights, dtype, allow_pickle)
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, weights)
        check_finite_state(state, weights)
        model.load_state_dict(state, strict=True, assign=True)
        del state  # the model owns the tensors now
        model.eval()
        if device is not None or dtype is not None:  # the Haar buffers; nn.Module.to: ModelMixin.to always warns
            torch.nn.Module.to(model, device=device, dtype=dtype)
        return model

    def save_pretrained(self, folder: Union[str, os.PathLike], **options) -> None:
        """Write the release layout: ``config.json`` (the published keys, ``_class_name``) +
        ``diffusion_pytorch_model.safetensors`` (Haar entries included, so the published code loads it too).
        Files appear only when complete. Accepts the options of diffusers' pipeline saver at their defaults."""
        _check_options(options, _SAVE_KWARGS, "WFVAE.save_pretrained")
        if not options.get("is_main_process", True):
            return
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        haar = haar_entries(True, level_is_temporal(self.config, "l1"), level_is_temporal(self.config, "l2"))
        dtype = next(iter(state.values())).dtype
        state.update({k: v.to(dtype) for k, v in haar.items()})
        save_safetensors_atomic(state, os.path.join(folder, WEIGHTS_NAME))
        write_json_atomic(published_config(self.config), os.path.join(folder, CONFIG_NAME))


def _cat(parts: List[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` without the copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _loading_device(device, device_map):
    """``device``, or diffusers' ``device_map`` when it names one device (a dict of devices is not supported)."""
    if device_map is None:
        return device
    if not isinstance(device_map, (str, torch.device)) or device_map in ("auto", "balanced"):
        raise ValueError(f"device_map {device_map!r} is not supported by WFVAE.from_pretrained: pass one device "
                         f"(device='cuda') and use enable_model_cpu_offload() or group offloading to spread memory")
    if device is not None and torch.device(device) != torch.device(device_map):
        raise ValueError(f"device {device} and device_map {device_map} disagree: pass one of them")
    return device_map


def _check_options(options: dict, accepted: dict, where: str) -> None:
    """ValueError for an option ``where`` does not know, or one set to a value it does not support."""
    for name, value in options.items():
        if name not in accepted:
            raise ValueError(f"{where} got an unknown option {name}={value!r}")
        allowed = accepted[name]
        if allowed is not None and not any(value is a or (a is not None and value == a and type(value) is type(a))
                                           for a in allowed):
            raise ValueError(f"{where}: option {name}={value!r} is not supported (accepted: "
                             f"{', '.join(repr(a) for a in allowed)})")


# ---------------------------------------------------------------------------------------------- input checks
def _check_tensor(x, what: str, shape: str, video_hint: bool = False) -> None:
    """``x`` must be a floating torch.Tensor; the message says how to convert what was given (O(1))."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if x.is_floating_point():
        return
    if not video_hint:
        raise ValueError(f"{what} must be a floating tensor {shape}, got {x.dtype}: convert with x.float()")
    if x.dtype == torch.uint8:
        how = "x.float() / 127.5 - 1"
    elif x.dtype == torch.bool:
        how = "x.float() * 2 - 1"
    else:
        how = "x.float(), scaled to [-1, 1] (x.float() / 127.5 - 1 for 0..255 pixels)"
    raise ValueError(f"{what} must be a floating tensor in [-1, 1]; got {x.dtype}: convert with {how}")


def _check_values(x: torch.Tensor, what: str, limit: Optional[float] = None) -> None:
    """No NaN or inf in ``x`` (and, with ``limit``, all values in [-limit, limit]): one min/max reduction, which
    NaN propagates to, and one device sync. Meta tensors (shape-only runs, e.g. memory accounting) have no values
    to check."""
    if x.device.type == "meta":
        return
    low, high = torch.aminmax(x)
    low, high = torch.stack([low, high]).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{what} holds NaN or infinite values")
    if limit is not None and (low < -limit or high > limit):
        raise ValueError(f"{what} must be in [-1, 1], but its values span [{low:.4g}, {high:.4g}]: scale it "
                         f"(x / 127.5 - 1 for 0..255 pixels)")
