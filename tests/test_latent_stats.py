"""Latent statistics of a WF-VAE and the scale/shift they give its config."""
import json
import os

import torch

from conftest import make_tiny_vae
from wfvae import WFVAE
from wfvae.evaluation.latent_stats import latent_statistics, write_latent_stats
from wfvae.io.video import VideoWriter

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_statistics_normalise_the_latents(tmp_path):
    vae = make_tiny_vae().eval()
    torch.manual_seed(0)
    clips = [torch.rand(3, 5, 16, 16) * 2 - 1 for _ in range(3)]
    mean, std = latent_statistics(vae, clips)
    with torch.no_grad():
        z = torch.cat([vae.encode(c[None]).latent_dist.mean for c in clips])
    assert torch.allclose(mean, z.transpose(0, 1).flatten(1).mean(1), atol=1e-5)
    assert torch.allclose(std, z.transpose(0, 1).flatten(1).std(1, unbiased=False), atol=1e-5)
    vae.save_pretrained(str(tmp_path / "vae"))
    write_latent_stats(str(tmp_path / "vae"), mean, std)
    loaded = WFVAE.from_pretrained(str(tmp_path / "vae"))
    scaled = loaded.scale_latents(z).transpose(0, 1).flatten(1)
    assert torch.allclose(scaled.mean(1), torch.zeros(len(mean)), atol=1e-3)
    assert torch.allclose(scaled.std(1, unbiased=False), torch.ones(len(mean)), atol=1e-3)
    assert torch.allclose(loaded.unscale_latents(loaded.scale_latents(z)), z, atol=1e-5)


def test_tool_writes_config_and_rejects_bad_input(tmp_path, capsys):
    from tools.latent_stats import main

    make_tiny_vae().save_pretrained(str(tmp_path / "vae"))
    with VideoWriter(str(tmp_path / "a.mp4"), fps=8) as w:
        w.write(torch.rand(3, 5, 16, 16) * 2 - 1)
    assert main([str(tmp_path / "vae"), str(tmp_path / "a.mp4"), "--frames", "5", "--write"]) == 0
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert len(config["scale"]) == config["latent_dim"] and len(config["shift"]) == config["latent_dim"]
    assert "shift and scale written" in capsys.readouterr().out
    assert main([str(tmp_path / "vae"), str(tmp_path / "a.mp4"), "--frames", "6"]) == 2
    assert main([str(tmp_path / "nothing"), str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "Traceback" not in err
