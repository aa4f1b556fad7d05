"""One video decoded in time slices (wfvae/inference/time_split.py) equals the same frames of the whole decode; the
derived receptive field is the true one (NaN probe) and the smallest exact halo; ``wfvae decode`` under a launch of
several processes refuses what cannot be split, with one ``error:`` line. The real 2-process decode is in
tests/test_multiprocess.py."""
import itertools
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import DATA, make_tiny_vae
from wfvae import WFVAE
from wfvae.cli import main
from wfvae.inference.frame_relay import FrameSpool
from wfvae.inference.time_split import (decode_time_slice, decoder_reach, plan_time_split, split_latents,
                                        video_frame)
from wfvae.io.frames import to_tensor, to_uint8
from wfvae.io.latents_file import latents_metadata
from wfvae.models.presets import WFVAE_L_16CHN, WFVAE_S_8CHN

MODEL = os.path.join(DATA, "wfvae_tiny")
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "assets", "models", "wfvae-tiny")
LEVEL_3D = dict(l1_dowmsample_block="Spatial2xTime2x3DDownsample", l1_downsample_wavelet="HaarWaveletTransform3D",
                l1_upsample_block="Spatial2xTime2x3DUpsample", l1_upsample_wavelet="InverseHaarWaveletTransform3D")


def probed_reach(vae, num_latent=100):
    """``(back, ahead)`` measured: NaN in latent frame j of a whole decode marks exactly the video frames that depend
    on it; they belong to latent frames ``[j - ahead, j + back]``."""
    f, j = vae.temporal_compression, num_latent // 2
    z = torch.randn(1, vae.config.latent_dim, num_latent, 1, 1)
    z[:, :, j] = float("nan")
    with torch.no_grad():
        out = vae.decoder(z)[0]  # the decoder itself: WFVAE.decode refuses NaN latents
    nan = torch.isnan(out).flatten(3).any(-1).any(1)[0].nonzero().flatten().tolist()
    owner = [0 if i == 0 else (i - 1) // f + 1 for i in (nan[0], nan[-1])]
    return owner[1] - j, j - owner[0]


@pytest.mark.parametrize("tint,nres,nconn,l1", [
    *itertools.product(["trilinear", "nearest"], [1, 2], [1], [False, True]), ("trilinear", 1, 9, False)])
def test_derived_reach_is_the_decoders_dependency(tint, nres, nconn, l1):
    """The reach derived from the config equals the dependency the decoder really has, for either upsampling, 4x
    and 8x temporal compression, and an energy-flow branch longer than the main path (9 connect blocks)."""
    cfg = dict(t_interpolation=tint, decoder_num_resblocks=nres, connect_res_layer_num=nconn, base_channels=4,
               encoder_energy_flow_hidden_size=4, decoder_energy_flow_hidden_size=4, **(LEVEL_3D if l1 else {}))
    vae = make_tiny_vae(**cfg)
    assert decoder_reach(vae.config) == probed_reach(vae)


def test_reach_of_the_released_and_shipped_models():
    """32 latent frames back (128 video frames), 1 ahead (trilinear), for WF-VAE-L/S and the shipped tiny VAE."""
    shipped = WFVAE.from_config(WFVAE.load_config(SHIPPED))
    for cfg in (WFVAE_L_16CHN, WFVAE_S_8CHN, shipped.config):
        assert decoder_reach(cfg) == (32, 1)
    assert probed_reach(shipped, num_latent=80) == (32, 1)


@pytest.fixture(scope="module")
def whole():
    """The test model, 46 latent frames at 1x2 (181 frames of 8x16), and their one-process decode."""
    vae = WFVAE.from_pretrained(MODEL)
    z = torch.randn(1, vae.config.latent_dim, 46, 1, 2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return vae, z, vae.decode(z).sample


@pytest.mark.parametrize("split", [{"world": 2}, {"ranges": [(0, 34), (34, 46)]},
                                   {"ranges": [(0, 1), (1, 40), (40, 42), (42, 46)]}])
def test_slices_equal_the_whole_decode(whole, split):
    """The balanced split (latents 0..38 and 39..45), uneven ones, slices of one latent frame, warm-ups starting at
    latent 0 and later (2, 7, 8, 10): each slice is its frames of the whole decode, and the slices tile the video."""
    vae, z, video = whole
    parts = plan_time_split(vae.config, z.shape[2], halo=None, **split)
    assert parts[0].frames[0] == 0 and parts[-1].frames[1] == video.shape[2]
    assert all(p.frames[1] == q.frames[0] for p, q in zip(parts, parts[1:]))
    for part in parts:
        out = decode_time_slice(vae, z, part, latent_chunk=3)
        assert out.shape[2] == part.num_frames
        assert (out - video[:, :, part.frames[0]:part.frames[1]]).abs().max() <= 1e-5, part
    assert [p.decoded[0] for p in parts[1:]] == [max(0, p.latents[0] - 32) for p in parts[1:]]
    assert [p.decoded[1] for p in parts] == [min(46, p.latents[1] + 1) for p in parts]
    if "world" in split:
        assert [p.latents for p in parts] == [(0, 39), (39, 46)]


def test_a_short_halo_is_not_exact(whole):
    """The halo is needed: with 8 latent frames of warm-up instead of 32 the slice's first frames are wrong; with 32
    they are right (the same slice, so the test can fail)."""
    vae, z, video = whole
    for halo, close in ((8, False), (32, True)):
        part = plan_time_split(vae.config, z.shape[2], ranges=[(0, 34), (34, 46)], halo=halo)[1]
        diff = (decode_time_slice(vae, z, part) - video[:, :, part.frames[0]:part.frames[1]]).abs()
        assert (diff.max() <= 1e-5) == close, (halo, diff.max())


def test_frame_bookkeeping_and_refusals():
    assert [video_frame(k, 4) for k in (0, 1, 2, 10)] == [0, 1, 5, 37]
    assert split_latents(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_latents(68, 2, halo=32) == [(0, 50), (50, 68)]  # both decode 50 latent frames
    assert split_latents(46, 3, halo=32) == [(0, 37), (37, 41), (41, 46)]  # 37 each (+1 look-ahead)
    assert split_latents(5, 3, halo=32) == [(0, 3), (3, 4), (4, 5)]  # every process keeps one frame
    with pytest.raises(ValueError, match="use at most 2 processes"):
        split_latents(2, 3)
    with pytest.raises(ValueError, match="groupnorm WF-VAE cannot be split in time"):
        plan_time_split(make_tiny_vae(base_channels=32, encoder_energy_flow_hidden_size=32,
                                      decoder_energy_flow_hidden_size=32, norm_type="groupnorm").config, 10, world=2)
    with pytest.raises(ValueError, match="cover"):
        plan_time_split(WFVAE_L_16CHN, 10, ranges=[(0, 4), (5, 10)])


def test_spool_round_trip_is_exact(tmp_path):
    """Frames spooled as uint8 and turned back into floats are written as the same uint8 frames."""
    frames = torch.rand(3, 37, 6, 10) * 2.2 - 1.1
    with FrameSpool() as spool:
        for i in range(0, 37, 10):
            spool.write(to_uint8(frames[:, i:i + 10]))
        back = np.concatenate([to_uint8(to_tensor(part)) for part in spool.read(16)])
    assert np.array_equal(back, to_uint8(frames))


def _latents_file(folder, vae, num_latent):
    path = str(folder / "z.safetensors")
    z = torch.randn(1, vae.config.latent_dim, num_latent, 1, 1)
    save_file({"latents": z}, path, metadata=latents_metadata(vae, 4 * num_latent - 3, 8, 8, 8.0))
    return path


@pytest.mark.parametrize("case", ["groupnorm", "processes"])
def test_split_decode_refusals_are_one_error_line(tmp_path, capsys, monkeypatch, case):
    """Under a 3-process launch (RANK/WORLD_SIZE as torchrun sets them), a GroupNorm model or more processes than
    latent frames: exit code 2, one ``error:`` line, no output, before any process group is needed."""
    if case == "groupnorm":
        vae = make_tiny_vae(base_channels=32, encoder_energy_flow_hidden_size=32,
                            decoder_energy_flow_hidden_size=32, norm_type="groupnorm")
        model = str(tmp_path / "gn")
        vae.save_pretrained(model)
        latents, message = _latents_file(tmp_path, vae, 6), "groupnorm WF-VAE cannot be split in time exactly"
    else:
        model = MODEL
        latents, message = _latents_file(tmp_path, WFVAE.from_pretrained(MODEL), 2), "use at most 2 processes"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    out = tmp_path / "out.mp4"
    assert main(["decode", latents, str(out), "--model", model, "--device", "cpu", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()
