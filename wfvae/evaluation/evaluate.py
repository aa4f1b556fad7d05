"""Reconstruction evaluation of a WF-VAE on a set of videos under a fixed protocol.

Protocol (:class:`Protocol`, printed with every result): from each video, ``num_frames`` frames from frame
``start`` taken every ``sample_rate`` source frames; frames resized (antialiased bilinear on the 8-bit frames) so
that they cover ``size`` x ``size`` and centre-cropped to it; encoded to the posterior MEAN and decoded through the
block-wise path (``vae.encode(x, latent_chunk=k).latent_dist`` / ``vae.decode(z, latent_chunk=k).sample``); the
reconstruction is clamped to [-1, 1]. PSNR / SSIM (:mod:`wfvae.evaluation.metrics`, 8-bit frames, mean over frames) per
video
and their mean over videos; LPIPS (VGG, mean over frames) when its weights are available; FVD over the whole set when
an I3D feature extractor is given (:func:`frechet_distance`).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from wfvae.evaluation.metrics import frame_psnr, frame_ssim
from wfvae.inference import DEFAULT_LATENT_CHUNK
from wfvae.models.autoencoder import WFVAE
from wfvae.io.video import VideoReader, VideoReadError


@dataclass
class Protocol:
    """What is compared: see the module docstring."""

    num_frames: int = 33
    size: int = 256
    sample_rate: int = 1
    start: int = 0
    latent_chunk: int = DEFAULT_LATENT_CHUNK

    def check(self, vae: Optional[WFVAE] = None) -> None:
        f = vae.temporal_compression if vae is not None else 4
        s = vae.spatial_compression if vae is not None else 8
        if self.num_frames < 1 or (self.num_frames - 1) % f:
            raise ValueError(f"num_frames must be 1 + {f}n, got {self.num_frames}")
        if self.size < s or self.size % s:
            raise ValueError(f"size must be a positive multiple of {s}, got {self.size}")
        if self.sample_rate < 1 or self.start < 0 or self.latent_chunk < 1:
            raise ValueError("sample_rate and latent_chunk must be >= 1 and start >= 0")

    def describe(self) -> str:
        return (f"protocol: {self.num_frames} frames from frame {self.start}, every {self.sample_rate} source "
                f"frame(s), short side resized to {self.size} + centre crop {self.size}x{self.size}, posterior "
                f"mean, block-wise encode/decode with latent_chunk={self.latent_chunk}, 8-bit frames")


def read_clip(path: str, protocol: Protocol) -> torch.Tensor:
    """The protocol's clip of ``path``: (3, num_frames, size, size) in [-1, 1]; VideoReadError if unreadable or
    too short."""
    probe = VideoReader(path)
    need = protocol.start + (protocol.num_frames - 1) * protocol.sample_rate + 1
    if probe.source_num_frames < need:
        raise VideoReadError(f"{path} has {probe.source_num_frames} frames; the protocol needs {need}")
    fps = None
    if protocol.sample_rate > 1:
        if not probe.source_fps:
            raise VideoReadError(f"{path}: unknown frame rate, cannot take every {protocol.sample_rate} frames")
        fps = probe.source_fps / protocol.sample_rate
    probe.close()
    with VideoReader(path, start=protocol.start, num_frames=protocol.num_frames, fps=fps,
                     size=(protocol.size, protocol.size), resize_mode="crop") as reader:
        clip = reader.read()
    if clip.shape[1] != protocol.num_frames:
        raise VideoReadError(f"{path}: read {clip.shape[1]} frames, expected {protocol.num_frames}")
    return clip


@torch.no_grad()
def reconstruct(vae: WFVAE, clip: torch.Tensor, latent_chunk: int) -> torch.Tensor:
    """(3, T, H, W) -> clamped float32 reconstruction (3, T, H, W) through the block-wise path."""
    x = clip.unsqueeze(0).to(vae.device, vae.dtype)
    z = vae.encode(x, latent_chunk=latent_chunk).latent_dist.mode()
    return vae.decode(z, latent_chunk=latent_chunk).sample[0].float().clamp(-1, 1).cpu()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (float64; the trace of the square root from the
    eigenvalues of S_a S_b)."""
    a, b = feats_a.double(), feats_b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 videos per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = eig.sqrt().real.sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


def load_i3d(path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """An I3D feature extractor from a TorchScript file (the ``i3d_torchscript.pt`` used by StyleGAN-V / common FVD
    code): videos (N, 3, T, H, W) in [-1, 1] -> (N, 400) features, called as
    ``detector(x, rescale=False, resize=True, return_features=True)``."""
    with warnings.catch_warnings():  # the released detector exists only as TorchScript, deprecated in torch 2.14
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        detector = torch.jit.load(path, map_location="cpu").eval()

    def features(video: torch.Tensor) -> torch.Tensor:
        return detector(video, rescale=False, resize=True, return_features=True)

    return features


def evaluate(vae: WFVAE, paths: Sequence[str], protocol: Protocol, lpips: Optional[torch.nn.Module] = None,
             i3d: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             on_result: Optional[Callable[[dict], None]] = None) -> Dict:
    """Evaluate every path; returns ``{"protocol": {...}, "videos": [rows], "mean": {...}, "skipped": [...]}``.

    A row: ``{"path", "psnr", "ssim", "frame_psnr"[, "lpips"]}`` (``frame_psnr``: the T per-frame values whose
    mean is ``psnr``); unreadable or too-short videos go to ``skipped`` with the
    reason. ``mean`` averages each metric over the evaluated videos, and holds ``fvd`` when ``i3d`` is given.
    """
    protocol.check(vae)
    rows: List[dict] = []
    skipped: List[dict] = []
    real_feats, fake_feats = [], []
    for path in paths:
        try:
            clip = read_clip(path, protocol)
        except VideoReadError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            continue
        rec = reconstruct(vae, clip, protocol.latent_chunk)
        x, y = clip.unsqueeze(0), rec.unsqueeze(0)
        per_frame = frame_psnr(x, y)[0]
        row = {"path": path, "psnr": float(per_frame.mean()), "ssim": float(frame_ssim(x, y).mean()),
               "frame_psnr": [round(float(v), 3) for v in per_frame]}
        if lpips is not None:
            with torch.no_grad():
                dev = next(lpips.buffers()).device
                row["lpips"] = float(lpips.distance(clip.permute(1, 0, 2, 3).to(dev),
                                                    rec.permute(1, 0, 2, 3).to(dev)).mean())
        if i3d is not None:
            with torch.no_grad():
                real_feats.append(i3d(x).cpu())
                fake_feats.append(i3d(y).cpu())
        rows.append(row)
        if on_result is not None:
            on_result(row)
    keys = [k for k in ("psnr", "ssim", "lpips") if rows and k in rows[0]]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys} if rows else {}
    if i3d is not None and rows:
        mean["fvd"] = frechet_distance(torch.cat(real_feats), torch.cat(fake_feats))
    return {"protocol": dataclasses.asdict(protocol), "videos": rows, "mean": mean, "skipped": skipped,
            "count": len(rows)}


def format_table(result: Dict) -> str:
    """A fixed-width text table of :func:`evaluate`'s result (one row per video, then the mean)."""
    keys = [k for k in ("psnr", "ssim", "lpips") if k in result["mean"]]
    width = max([len("mean")] + [len(r["path"]) for r in result["videos"]])
    head = f"{'video':<{width}}  " + "  ".join(f"{k.upper():>8}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in result["videos"]:
        lines.append(f"{r['path']:<{width}}  " + "  ".join(f"{r[k]:8.4f}" for k in keys))
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{result['mean'][k]:8.4f}" for k in keys))
    if "fvd" in result["mean"]:
        lines.append(f"FVD over {result['count']} videos: {result['mean']['fvd']:.2f}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['path']}: {s['reason']}")
    return "\n".join(lines)

