"""The user-facing WF-VAE: loading and saving, block-wise (causal-cache) inference and spatial tiling.

    vae = WFVAE.from_pretrained("WF-VAE-L-16Chn")          # folder with config.json + safetensors
    posterior = vae.encode(video, latent_chunk=4)           # video (B, 3, 1+4n, H, W) in [-1, 1]
    video = vae.decode(posterior.mode(), latent_chunk=4)    # (B, 3, 1+4n, H, W)

``latent_chunk=k`` runs k latent frames (4k video frames) at a time and gives the same result as the whole-video
call (up to float rounding): every causal layer carries what it needs across chunks in a cache that lives only
for the call. ``tile``/``tile_overlap`` (pixels) split frames into overlapping tiles blended linearly: this is an
approximation (attention and receptive fields are cut at tile borders), opt-in.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Iterable, Iterator, List, Optional, Union

import torch
import torch.nn as nn

from .causal import StreamCache
from .checkpoint import (CONFIG_NAME, WEIGHTS_NAME, check_dtype, check_finite_state, check_state_dict, haar_entries,
                         normalize_keys, read_json_object, read_state_dict, save_safetensors_atomic, split_haar,
                         write_json_atomic)
from .cli_support import first_line
from .model import Decoder, DiagonalGaussian, Encoder, WFVAEConfig
from .tiling import TileGrid

# encode() refuses videos with values beyond +-VIDEO_LIMIT: far outside [-1, 1], so that the overshoot of resampling
# filters and the Gaussian noise added to image conditions (std up to about 2) pass, while any 0..255 video with a
# pixel above 16 (every real one) is caught.
VIDEO_LIMIT = 16.0


class WFVAE(nn.Module):
    """Wavelet-flow video VAE with 4x (or 8x) temporal and 8x spatial compression."""

    def __init__(self, config: Union[WFVAEConfig, dict, None] = None):
        super().__init__()
        if config is None:
            config = WFVAEConfig()
        elif isinstance(config, dict):
            config = WFVAEConfig.from_dict(config)
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    # ------------------------------------------------------------------ properties
    @property
    def temporal_compression(self) -> int:
        return self.config.temporal_compression

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_in.conv.weight.device

    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents ``(z - shift) * scale`` with the config's per-channel statistics; z is
        (B, latent_dim, ...) (any number of trailing dimensions)."""
        self._check_latents(z, rank=None)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        scale = self.config.latent_stat("scale").to(z).view(shape)
        shift = self.config.latent_stat("shift").to(z).view(shape)
        return (z - shift) * scale

    def unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`scale_latents`."""
        self._check_latents(z, rank=None)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        scale = self.config.latent_stat("scale").to(z).view(shape)
        shift = self.config.latent_stat("shift").to(z).view(shape)
        return z / scale + shift

    # ------------------------------------------------------------------ encode / decode
    def forward(self, video: torch.Tensor, sample_posterior: bool = True, generator=None):
        """Training pass: (reconstruction, posterior, (enc_l1, dec_l1, enc_l2, dec_l2))."""
        params, (enc_l1, enc_l2) = self.encoder(video)
        posterior = DiagonalGaussian(params)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        rec, (dec_l1, dec_l2) = self.decoder(z)
        return rec, posterior, (enc_l1, dec_l1, enc_l2, dec_l2)

    def encode(self, video: torch.Tensor, latent_chunk: Optional[int] = None, tile: Optional[int] = None,
               tile_overlap: Optional[int] = None) -> DiagonalGaussian:
        """Encode (B, 3, T, H, W) in [-1, 1], T = 1 + 4n, H and W multiples of 8, to the posterior over
        (B, latent_dim, 1 + n, H/8, W/8). See the module docstring for ``latent_chunk`` and tiling.

        Raises ValueError for anything else: another shape, an integer or bool dtype, NaN/inf, values far
        outside [-1, 1] (beyond +-16: 0..255 pixels) (one min/max pass per call)."""
        self._check_video(video, whole=True)
        if latent_chunk is None:
            chunks = [video]
        else:
            chunks = [video[:, :, a:b] for a, b in self.video_chunk_bounds(video.shape[2], latent_chunk)]
        params = torch.cat(list(self.encode_stream(chunks, tile, tile_overlap)), dim=2)
        return DiagonalGaussian(params)

    def decode(self, z: torch.Tensor, latent_chunk: Optional[int] = None, tile: Optional[int] = None,
               tile_overlap: Optional[int] = None) -> torch.Tensor:
        """Decode latents (B, latent_dim, t, h, w) to video (B, 3, 1 + 4(t - 1), 8h, 8w), nominally in [-1, 1]
        (not clamped). Raises ValueError for another shape, a non-float dtype or NaN/inf latents."""
        self._check_latents(z)
        k = z.shape[2] if latent_chunk is None else self._check_chunk(latent_chunk)
        chunks = [z[:, :, i:i + k] for i in range(0, z.shape[2], k)]
        return torch.cat(list(self.decode_stream(chunks, tile, tile_overlap)), dim=2)

    def video_chunk_bounds(self, num_frames: int, latent_chunk: int) -> List[tuple]:
        """Frame ranges [(a, b), ...] that map to ``latent_chunk`` latent frames each: 1 + f(k-1) frames, then f*k."""
        f = self.temporal_compression
        k = self._check_chunk(latent_chunk)
        bounds, start, end = [], 0, 1 + f * (k - 1)
        while start < num_frames:
            bounds.append((start, min(end, num_frames)))
            start, end = end, end + f * k
        return bounds

    @torch.no_grad()
    def encode_stream(self, chunks: Iterable[torch.Tensor], tile: Optional[int] = None,
                      tile_overlap: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Encode consecutive video chunks; yields posterior parameters (B, 2*latent_dim, t_i, h, w) per chunk.

        Chunks must be aligned: the first has 1 + f*m frames, later ones multiples of f (f = 4), so that every
        chunk maps to whole latent frames. Memory is bounded by the chunk size, whatever the video length.
        """
        caches, grid = {}, None
        f = self.temporal_compression
        iterator = iter(chunks)
        nxt, i = next(iterator, None), -1
        while nxt is not None:
            chunk, nxt, i = nxt, next(iterator, None), i + 1
            self._check_video(chunk, whole=False, what=f"video chunk {i}")
            n = chunk.shape[2]
            if (i == 0 and (n - 1) % f) or (i > 0 and n % f):
                raise ValueError(f"chunk {i} has {n} frames: the first chunk needs 1 + {f}m frames, later ones "
                                 f"multiples of {f}")
            chunk = chunk.to(self.device, self.dtype)
            _check_values(chunk, "video" if i == 0 and nxt is None else f"video chunk {i}", VIDEO_LIMIT)
            if grid is None:
                self._warn_groupnorm(tile)
                grid = TileGrid.for_pixels(chunk.shape[-2:], tile, tile_overlap, self.spatial_compression)

            def run(x, j, last=nxt is None):
                cache = caches.setdefault(j, StreamCache())
                cache.last = last  # nothing needs to be kept for later chunks
                return self.encoder(x, cache)[0]

            yield grid.run(chunk, run, out_scale=1.0 / self.spatial_compression)

    @torch.no_grad()
    def decode_stream(self, chunks: Iterable[torch.Tensor], tile: Optional[int] = None,
                      tile_overlap: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Decode consecutive latent chunks of any sizes; yields video frames as they are determined.

        The frame counts per chunk differ from 4*t_i (one frame is held back for temporal interpolation and
        released with the next chunk); the concatenation equals :meth:`decode` of the whole sequence.
        """
        caches, grid = {}, None
        iterator = iter(chunks)
        nxt, i = next(iterator, None), -1
        while nxt is not None:
            chunk, nxt, i = nxt, next(iterator, None), i + 1
            what = "latents" if i == 0 and nxt is None else f"latent chunk {i}"
            self._check_latents(chunk, what=what)
            chunk = chunk.to(self.device, self.dtype)
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
                          "WF-VAE only approximate the whole-video result", stacklevel=3)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: str, config: Union[str, dict, WFVAEConfig, None] = None,
                        dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None,
                        allow_pickle: bool = False) -> "WFVAE":
        """Load a released WF-VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), an Open-Sora
        Plan v1.3 VAE folder, or a safetensors / published ``*.ckpt`` file with ``config`` (a dict or json path;
        default: ``config.json`` beside the file). Strict: missing or unexpected tensors raise ``ValueError``.
        """
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
            config = read_json_object(config_path, "WF-VAE config")
            try:
                model = cls(config)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"bad WF-VAE config {config_path}: {first_line(exc)}") from None
        else:
            model = cls(config)
        state = normalize_keys(read_state_dict(weights, allow_pickle=allow_pickle))
        try:
            state = split_haar(state)
        except ValueError as exc:
            raise ValueError(f"weights {weights}: {exc}") from None
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, weights)
        check_finite_state(state, weights)
        model.load_state_dict(state, strict=True)
        model.eval()
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, folder: str) -> None:
        """Write the release layout: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (Haar entries included,
        so the published code loads it too). Files appear only when complete."""
        os.makedirs(folder, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        haar = haar_entries(True, self.config.temporal("l1"), self.config.temporal("l2"))
        dtype = next(iter(state.values())).dtype
        state.update({k: v.to(dtype) for k, v in haar.items()})
        weights = os.path.join(folder, WEIGHTS_NAME)
        save_safetensors_atomic(state, weights)
        cfg_path = os.path.join(folder, CONFIG_NAME)
        write_json_atomic(self.config.to_dict(), cfg_path)


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
    NaN propagates to, and one device sync."""
    low, high = torch.aminmax(x)
    low, high = torch.stack([low, high]).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{what} holds NaN or infinite values")
    if limit is not None and (low < -limit or high > limit):
        raise ValueError(f"{what} must be in [-1, 1], but its values span [{low:.4g}, {high:.4g}]: scale it "
                         f"(x / 127.5 - 1 for 0..255 pixels)")
