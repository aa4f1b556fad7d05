"""Reconstruction metrics against hand computations and scikit-image; the evaluation protocol and CLI."""
import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from wfvae.evaluation.evaluate import Protocol, frechet_distance
from wfvae.evaluation.metrics import frame_psnr, frame_ssim, video_psnr, video_ssim
from wfvae.io.video import VideoWriter

DATA = os.path.join(os.path.dirname(__file__), "data")


def _from_uint8(a: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(a).permute(3, 0, 1, 2).unsqueeze(0).double().div(127.5).sub(1).float()


def test_psnr_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, 12, 10, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, size=a.shape), 0, 255).astype(np.uint8)
    got = frame_psnr(_from_uint8(a), _from_uint8(b))[0]
    for t in range(2):
        mse = np.mean(((a[t].astype(float) - b[t].astype(float)) / 255) ** 2)
        assert got[t].item() == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert video_psnr(_from_uint8(a), _from_uint8(b)).item() == pytest.approx(got.mean().item(), abs=1e-5)
    assert frame_psnr(_from_uint8(a), _from_uint8(a))[0, 0].item() == pytest.approx(100.0)  # MSE floor


@pytest.mark.parametrize("size", [(24, 30), (11, 11), (33, 97)])
def test_ssim_matches_skimage(size):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(2, *size, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.normal(0, 25, size=a.shape), 0, 255).astype(np.uint8)
    got = frame_ssim(_from_uint8(a), _from_uint8(b))[0]
    for t in range(2):
        ref = structural_similarity(a[t] / 255.0, b[t] / 255.0, channel_axis=-1, data_range=1.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert got[t].item() == pytest.approx(ref, abs=1e-5)
    assert video_ssim(_from_uint8(a), _from_uint8(a)).item() == pytest.approx(1.0)


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(x, x)) < 1e-6
    assert frechet_distance(x, x + 0.5) == pytest.approx(6 * 0.25, rel=1e-6)  # same covariance: |dmu|^2
    y = torch.randn(300, 6, generator=g, dtype=torch.float64) * 2  # N(0, 4I) vs about N(0, I): 6*(2-1)^2 = 6
    assert frechet_distance(x, y) == pytest.approx(6.0, rel=0.35)


def test_protocol_checks():
    Protocol(33, 256).check()
    for bad in (Protocol(32, 256), Protocol(33, 250), Protocol(33, 256, sample_rate=0)):
        with pytest.raises(ValueError):
            bad.check()


def test_eval_cli(tmp_path, capsys):
    from tools.eval_vae import main

    video = str(tmp_path / "clip.mp4")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 40), torch.linspace(-1, 1, 48), indexing="ij")
    clip = torch.stack([torch.stack([torch.sin(3 * xx + k / 3), yy, xx * yy]) for k in range(7)], dim=1)
    with VideoWriter(video, fps=10, lossless=True) as writer:
        writer.write(clip)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 40)
    model = os.path.join(DATA, "wfvae_tiny")
    out = str(tmp_path / "r.json")
    assert main([model, video, str(broken), "--frames", "5", "--size", "32", "--json", out]) == 0
    printed = capsys.readouterr().out
    assert "protocol: 5 frames" in printed and "PSNR" in printed and "skipped" in printed
    result = json.load(open(out))
    assert result["count"] == 1 and result["protocol"]["size"] == 32 and len(result["skipped"]) == 1
    row = result["videos"][0]
    assert set(row) == {"path", "psnr", "ssim", "frame_psnr"} and len(row["frame_psnr"]) == 5
    assert sum(row["frame_psnr"]) / 5 == pytest.approx(row["psnr"], abs=1e-3)
    assert not os.path.exists(out + ".tmp")
    assert result["mean"]["psnr"] == pytest.approx(result["videos"][0]["psnr"])
    for argv in ([model, video, "--frames", "6"], [str(tmp_path / "nomodel"), video], [model, video, "--fvd"],
                 [model, str(tmp_path / "missing.mp4")], [model, video, "--json", str(tmp_path / "no" / "r.json")],
                 [model, str(broken), "--frames", "5", "--size", "32"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


class _TinyI3D(torch.nn.Module):
    """Stands in for the TorchScript I3D (same call signature); RANDOM weights, so the FVD value means nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(6, 8)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = True,
                return_features: bool = True) -> torch.Tensor:
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)  # (N, 6)
        return self.proj(stats)


def test_eval_cli_fvd_end_to_end_through_a_torchscript_extractor(tmp_path, capsys):
    from tools.eval_vae import main
    from wfvae.evaluation.evaluate import frechet_distance, load_i3d

    i3d_path = str(tmp_path / "i3d.pt")
    with warnings.catch_warnings():  # the FVD detector format is TorchScript (deprecated in torch 2.14)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|save)` is deprecated", category=FutureWarning)
        torch.jit.save(torch.jit.script(_TinyI3D()), i3d_path)
    videos = []
    for k in range(3):
        path = str(tmp_path / f"v{k}.mp4")
        torch.manual_seed(k)
        with VideoWriter(path, fps=8, lossless=True) as writer:
            writer.write(torch.rand(3, 5, 32, 32) * 2 - 1)
        videos.append(path)
    out = str(tmp_path / "r.json")
    model = os.path.join(DATA, "wfvae_tiny")
    assert main([model, *videos, "--frames", "5", "--size", "32", "--fvd", "--i3d", i3d_path, "--json", out]) == 0
    assert "FVD over 3 videos" in capsys.readouterr().out
    fvd = json.load(open(out))["mean"]["fvd"]
    assert math.isfinite(fvd) and fvd >= 0
    with torch.no_grad():
        feats = load_i3d(i3d_path)(torch.rand(4, 3, 5, 32, 32))
    assert feats.shape == (4, 8) and frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-4)
