"""One long video decoded in time slices, each exactly equal to the same frames of a one-process decode.

Why it is exact: with ``norm_type="layernorm"`` every decoder layer is causal in time with a finite kernel, so the
frames of latent frame ``k`` depend only on latent frames ``[k - back, k + ahead]`` (:func:`decoder_reach`;
``ahead`` is 1 with trilinear temporal upsampling, which interpolates towards the next frame, else 0). A slice that
owns latent frames ``[s, e)`` starts a fresh stream ``back`` frames earlier (the *halo*: decoded, then discarded)
and ends ``ahead`` frames later; from latent ``s`` on, its frames equal those of the whole-video decode.

A fresh stream started at latent frame ``a > 0`` treats ``a`` as a first frame (one video frame, replicated causal
padding, the temporal upsampling's and inverse wavelet's first-frame rules), but every one of these rules only
drops or changes frames at its start: its output is the whole decode's frames ``f*a, f*a + 1, ...`` (f: temporal
compression), wrong in the halo and exact after it. GroupNorm statistics span every frame: not splittable.

    parts = plan_time_split(vae.config, num_latent=latents.shape[2], world=4)
    frames = decode_time_slice(vae, latents, parts[rank])        # (B, 3, n, H, W): frames parts[rank].frames

Video frames per latent frame: latent 0 gives frame 0, latent ``k >= 1`` gives frames ``1 + f(k-1) .. f*k``
(:func:`video_frame`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, List, Optional, Tuple

import torch

from wfvae.models.encoder_decoder import level_is_temporal, temporal_compression

CONV_HISTORY = 2
"""Frames of history of one causal (kernel 3) convolution."""
BLOCK_HISTORY = 2 * CONV_HISTORY
"""Frames of history of a ``ResnetBlock3D`` (two causal convolutions; the shortcut has kernel 1)."""


def check_splittable(cfg) -> None:
    """ValueError unless the decoder is causal in time (``norm_type="layernorm"``)."""
    if cfg.norm_type != "layernorm":
        raise ValueError(f"a {cfg.norm_type} WF-VAE cannot be split in time exactly: its norm statistics span every "
                         f"frame (only layernorm models, as released, can); decode it in one process")


def decoder_reach(cfg) -> Tuple[int, int]:
    """``(back, ahead)``: the frames of latent frame ``k`` depend on latent frames ``[k - back, k + ahead]`` only,
    from the decoder's layout in the config ``cfg`` (a :class:`WFVAEConfig` or ``vae.config``).

    Walks the decoder (``wfvae/models/encoder_decoder.py``, :class:`Decoder`) along each path from the latents to
    the video and tracks, for a stream started fresh at latent frame ``a``, the first frame index (at that stage's
    own frame rate) that is already exact: a causal convolution adds its ``kernel_t - 1`` frames of history, a
    temporal x2 upsampling maps ``e`` to ``2e`` (trilinear: frame ``j`` mixes inputs ``j // 2`` and ``j // 2 + 1``)
    or ``2e - 1`` (nearest), an inverse 3D wavelet maps ``e`` to ``2e - 1``. ``back`` is the number of latent
    frames between ``a`` and the first latent frame whose video frames are all exact; ``ahead`` comes from the
    last latent frame that the last video frame of a latent frame reads.
    """
    nres, nconn = cfg.decoder_num_resblocks, cfg.connect_res_layer_num
    l1, l2 = level_is_temporal(cfg, "l1"), level_is_temporal(cfg, "l2")
    trilinear = cfg.t_interpolation == "trilinear"
    f = temporal_compression(cfg)

    def up(e: int, temporal: bool) -> int:  # Upsample3D (temporal x2, then a causal conv) or Upsample2D (per frame)
        return (2 * e if trilinear else 2 * e - 1) + CONV_HISTORY if temporal else e

    def inverse(e: int, temporal: bool) -> int:  # inverse Haar wavelet (3D: 2 frames per coefficient frame)
        return 2 * e - 1 if temporal else e

    a = 1  # any start > 0 gives the same difference
    mid = a + CONV_HISTORY + 2 * BLOCK_HISTORY                       # conv_in, mid (2 blocks, attention per frame)
    l2_flow = inverse(mid + nconn * BLOCK_HISTORY, l2)               # connect_l2, inverse_wavelet_transform_l2
    h = up(mid + nres * BLOCK_HISTORY, l2) + BLOCK_HISTORY           # up2
    l1_flow = inverse(max(h + nconn * BLOCK_HISTORY, l2_flow), l1)   # connect_l1 + add_l2, inverse wavelet l1
    h = up(h + nres * BLOCK_HISTORY, l1) + BLOCK_HISTORY + 2 * BLOCK_HISTORY  # up1, layer
    first_exact = inverse(max(h, l1_flow), True)                     # add_l1, inverse_wavelet_transform_out
    back = math.ceil((first_exact - 1) / f) + 1 - a                  # latent k starts at video frame 1 + f(k-1)

    def read_up(i: int, temporal: bool) -> int:  # last input frame that output frame i of an upsampling reads
        return (i // 2 + 1 if trilinear else -(-i // 2)) if temporal else i

    def read_inverse(i: int, temporal: bool) -> int:
        return -(-i // 2) if temporal else i

    k = 2 * back + 2  # any latent frame away from the ends
    i = read_inverse(f * k, True)  # the last video frame of latent k, at the rate of the main path's output
    flow = read_inverse(i, l1)
    at_l2 = max(read_up(i, l1), flow)
    ahead = max(read_up(at_l2, l2), read_inverse(flow, l2)) - k
    return back, ahead


def video_frame(latent: int, f: int) -> int:
    """The first video frame of latent frame ``latent`` (also the frame count of latents ``[0, latent)``)."""
    return 0 if latent == 0 else 1 + f * (latent - 1)


@dataclasses.dataclass(frozen=True)
class TimeSlice:
    """One process's share: it owns latent frames ``latents = (s, e)``, i.e. video frames ``frames``, and decodes
    latent frames ``decoded = (a, b)`` (``a = max(0, s - halo)``, ``b = min(T, e + ahead)``), of which the video
    frames before ``frames[0]`` are warm-up and after ``frames[1]`` look-ahead."""

    rank: int
    latents: Tuple[int, int]
    frames: Tuple[int, int]
    decoded: Tuple[int, int]
    temporal_compression: int

    @property
    def first_decoded_frame(self) -> int:
        """The video frame of the whole decode that the fresh stream's first frame stands for (``f * a``)."""
        return self.temporal_compression * self.decoded[0]

    @property
    def num_frames(self) -> int:
        return self.frames[1] - self.frames[0]


def split_latents(num_latent: int, world: int, halo: int = 0) -> List[Tuple[int, int]]:
    """``world`` consecutive non-empty latent ranges covering ``[0, num_latent)`` such that every process decodes
    about as many latent frames: the first range, which needs no warm-up, is ``halo`` frames longer than the others
    (as far as they keep one frame each), which differ by at most one."""
    if world < 1:
        raise ValueError(f"the number of processes must be >= 1, got {world}")
    if world > num_latent:
        raise ValueError(f"{world} processes for {num_latent} latent frames: each process needs at least one; use at "
                         f"most {num_latent} processes")
    if world == 1:
        return [(0, num_latent)]
    first = min(num_latent - (world - 1), -(-(num_latent + (world - 1) * halo) // world))
    rest = num_latent - first
    bounds = [0] + [first + rest * r // (world - 1) for r in range(world)]
    return list(zip(bounds[:-1], bounds[1:]))


def plan_time_split(cfg, num_latent: int, world: Optional[int] = None,
                    ranges: Optional[List[Tuple[int, int]]] = None, halo: Optional[int] = None) -> List[TimeSlice]:
    """The slices of a time split of ``num_latent`` latent frames: ``world`` of them balanced by
    :func:`split_latents`, or explicit consecutive ``ranges`` ``[(0, e0), (e0, e1), ..., (., num_latent)]``.
    ``halo`` (default: :func:`decoder_reach`'s ``back``, the smallest exact one) is how many latent frames before
    its own a slice decodes and discards; a smaller one
    is accepted (for measurements) but its slices are not exact. ValueError for a GroupNorm model, an empty range
    or more processes than latent frames."""
    check_splittable(cfg)
    if (world is None) == (ranges is None):
        raise ValueError("give either world (a balanced split) or ranges (explicit latent ranges)")
    back, ahead = decoder_reach(cfg)
    halo = back if halo is None else halo
    if halo < 1:
        raise ValueError(f"halo must be >= 1 latent frame (a fresh stream's first frames stand for video frames "
                         f"f*a onwards), got {halo}")
    if ranges is None:
        ranges = split_latents(num_latent, world, halo)
    ranges = [(int(s), int(e)) for s, e in ranges]
    starts = [0] + [e for _, e in ranges[:-1]]
    if [s for s, _ in ranges] != starts or ranges[-1][1] != num_latent or any(e <= s for s, e in ranges):
        raise ValueError(f"latent ranges {ranges} must be non-empty and cover [0, {num_latent}) in order")
    f = temporal_compression(cfg)
    return [TimeSlice(rank, (s, e), (video_frame(s, f), video_frame(e, f)),
                      (max(0, s - halo), min(num_latent, e + ahead)), f)
            for rank, (s, e) in enumerate(ranges)]


def iter_time_slice(vae, latents: torch.Tensor, part: TimeSlice, latent_chunk: int = 4, tile: Optional[int] = None,
                    tile_overlap: Optional[int] = None) -> Iterator[torch.Tensor]:
    """The video frames of ``part`` as they are decoded: (B, 3, t_i, H, W) pieces whose concatenation is frames
    ``part.frames`` of ``vae.decode(latents)``, latents (B, C, T, h, w). Decodes ``part.decoded`` with
    :meth:`WFVAE.decode_stream` ``latent_chunk`` frames at a time (memory bounded by the chunk)."""
    check_splittable(vae.config)
    a, b = part.decoded
    if b > latents.shape[2]:
        raise ValueError(f"the slice decodes latent frames [{a}, {b}) but there are {latents.shape[2]}")
    chunks = (latents[:, :, i:min(i + latent_chunk, b)] for i in range(a, b, latent_chunk))
    frame, (first, end) = part.first_decoded_frame, part.frames
    for piece in vae.decode_stream(chunks, tile, tile_overlap):
        lo, hi = max(first, frame), min(end, frame + piece.shape[2])
        if hi > lo:
            yield piece[:, :, lo - frame:hi - frame]
        frame += piece.shape[2]
        if frame >= end:
            break


def decode_time_slice(vae, latents: torch.Tensor, part: TimeSlice, **options) -> torch.Tensor:
    """(B, 3, part.num_frames, H, W): frames ``part.frames`` of the whole decode (:func:`iter_time_slice`)."""
    return torch.cat(list(iter_time_slice(vae, latents, part, **options)), dim=2)
