"""WF-VAE parity with the published implementation, loading layouts, block-wise inference and tiling."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA, SHARED, make_tiny_vae
from wfvae import WFVAE, WFVAEConfig, crop_video, pad_video
from wfvae.models.causal import StreamCache
from wfvae.inference.tiling import TileGrid

TINY = os.path.join(DATA, "wfvae_tiny")
TOL = 1e-5


def _check_parity(vae, io):
    with torch.no_grad():
        post = vae.encode(io["video"]).latent_dist
        rec = vae.decode(io["latent_mean"]).sample
    assert (post.mean - io["latent_mean"]).abs().max() <= TOL
    assert (post.logvar - io["latent_logvar"]).abs().max() <= TOL
    assert (rec - io["reconstruction"]).abs().max() <= TOL


def test_fixture_parity_release_layout():
    _check_parity(WFVAE.from_pretrained(TINY), load_file(os.path.join(TINY, "io.safetensors")))


def test_fixture_parity_osp_layout_shared():
    folder = os.path.join(SHARED, "wfvae_tiny_osp_layout")
    if not os.path.isdir(folder):
        pytest.skip("../shared/fixtures not present")
    _check_parity(WFVAE.from_pretrained(folder), load_file(os.path.join(folder, "io.safetensors")))


def _osp_state(state):
    out = {}
    for k, v in state.items():
        if k.startswith(("encoder.wavelet_transform_in.", "decoder.inverse_wavelet_transform_out.")):
            continue
        out[k.replace("wavelet_transform_l", "wavelet_tranform_l")] = v
    return out


def test_osp_layout_and_ckpt_layouts(tmp_path):
    state = load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors"))
    io = load_file(os.path.join(TINY, "io.safetensors"))
    osp = tmp_path / "osp"
    osp.mkdir()
    shutil.copy(os.path.join(TINY, "config.json"), osp / "config.json")
    save_file(_osp_state(state), str(osp / "diffusion_pytorch_model.safetensors"))
    _check_parity(WFVAE.from_pretrained(str(osp)), io)

    trainable = {k: v for k, v in state.items() if "wavelet" not in k}
    junk = {k: torch.zeros_like(v) for k, v in trainable.items()}
    ema_ckpt = tmp_path / "ema.ckpt"
    torch.save({"ema_state_dict": {"module." + k: v for k, v in trainable.items()},
                "state_dict": {"gen_model": junk, "dics_model": {}}}, ema_ckpt)
    _check_parity(WFVAE.from_pretrained(str(ema_ckpt), config=os.path.join(TINY, "config.json")), io)

    gen_ckpt = tmp_path / "gen.ckpt"
    torch.save({"ema_state_dict": {}, "state_dict": {"gen_model": {"module." + k: v for k, v in state.items()}}},
               gen_ckpt)
    with open(os.path.join(TINY, "config.json")) as fh:
        config = json.load(fh)
    _check_parity(WFVAE.from_pretrained(str(gen_ckpt), config=config), io)


def test_strict_loading_names_tensors(tmp_path):
    state = load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors"))
    shutil.copy(os.path.join(TINY, "config.json"), tmp_path / "config.json")
    bad = dict(state)
    del bad["decoder.conv_in.conv.bias"]
    bad["decoder.extra.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match=r"decoder\.conv_in\.conv\.bias.*decoder\.extra\.weight"):
        WFVAE.from_pretrained(str(tmp_path))
    bad = dict(state)
    bad["encoder.wavelet_transform_in.h_conv.conv.weight"] = bad["encoder.wavelet_transform_in.h_conv.conv.weight"] * 2
    save_file(bad, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="Haar"):
        WFVAE.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WFVAE.from_pretrained(str(tmp_path / "nowhere"))


def test_save_pretrained_round_trip_writes_release_layout(tmp_path, tiny_vae):
    tiny_vae.save_pretrained(str(tmp_path / "m"))
    saved = load_file(str(tmp_path / "m" / "diffusion_pytorch_model.safetensors"))
    release = load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors"))
    assert {k for k in release if "wavelet" in k} <= set(saved)  # Haar entries are written like the release
    loaded = WFVAE.from_pretrained(str(tmp_path / "m"))
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x).latent_dist.mean).sample,
                           tiny_vae.decode(tiny_vae.encode(x).latent_dist.mean).sample)
    assert not [p for p in os.listdir(tmp_path / "m") if p.endswith(".tmp")]


def test_scale_shift_placeholder_broadcast_and_mismatch():
    cfg = WFVAEConfig(latent_dim=16, norm_type="layernorm")  # published 4-entry placeholders
    assert torch.equal(cfg.latent_stat("scale"), torch.full((16,), 0.18215))
    with pytest.raises(ValueError, match="4 different values"):
        WFVAEConfig(latent_dim=16, scale=[1.0, 2.0, 3.0, 4.0])
    vae = make_tiny_vae(latent_dim=4, scale=[1.0, 2.0, 3.0, 4.0], shift=[0.5] * 4)
    z = torch.randn(1, 4, 2, 3, 3)
    torch.testing.assert_close(vae.unscale_latents(vae.scale_latents(z)), z)
    torch.testing.assert_close(vae.scale_latents(z)[:, 1], (z[:, 1] - 0.5) * 2.0)


@pytest.mark.parametrize("frames", [1, 5, 21, 37, 53])
def test_chunked_equals_whole(tiny_vae, frames):
    torch.manual_seed(frames)
    x = torch.rand(1, 3, frames, 16, 24) * 2 - 1
    with torch.no_grad():
        whole = tiny_vae.encode(x).latent_dist
        rec = tiny_vae.decode(whole.mean).sample
        assert rec.shape == x.shape
        for k in (1, 2, 3, 4, 7, 16):
            assert (tiny_vae.encode(x, latent_chunk=k).latent_dist.mean - whole.mean).abs().max() <= TOL, k
            assert (tiny_vae.decode(whole.mean, latent_chunk=k).sample - rec).abs().max() <= TOL, k


@pytest.mark.parametrize("overrides", [
    dict(t_interpolation="nearest"),
    dict(l1_dowmsample_block="Spatial2xTime2x3DDownsample", l1_downsample_wavelet="HaarWaveletTransform3D",
         l1_upsample_block="Spatial2xTime2x3DUpsample", l1_upsample_wavelet="InverseHaarWaveletTransform3D"),
    dict(use_attention=False, connect_res_layer_num=2, encoder_num_resblocks=1, decoder_num_resblocks=3),
])
def test_other_architectures_chunk_exactly(overrides):
    vae = make_tiny_vae(seed=3, **overrides)
    f = vae.temporal_compression
    x = torch.rand(2, 3, 1 + 5 * f, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(x).latent_dist
        assert whole.mean.shape == (2, 4, 6, 2, 2)
        rec = vae.decode(whole.mean).sample
        assert rec.shape == x.shape
        for k in (1, 2, 4):
            assert (vae.encode(x, latent_chunk=k).latent_dist.mean - whole.mean).abs().max() <= TOL
            assert (vae.decode(whole.mean, latent_chunk=k).sample - rec).abs().max() <= TOL


def test_decoder_state_does_not_grow_with_length(tiny_vae):
    z = torch.randn(1, 4, 65, 2, 2)  # 257 frames
    cache, sizes, frames = StreamCache(), [], 0
    with torch.no_grad():
        for i in range(0, 65, 4):
            cache.last = i + 4 >= 65
            frames += tiny_vae.decoder(z[:, :, i:i + 4], cache)[0].shape[2]
            sizes.append(cache.nbytes())
    assert frames == 257
    assert max(sizes[1:]) == min(sizes[1:-1]) and max(sizes) <= 2 * sizes[1]


def test_stream_api_any_chunking(tiny_vae):
    x = torch.rand(1, 3, 21, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = tiny_vae.encode(x).latent_dist
        enc = list(tiny_vae.encode_stream([x[:, :, :9], x[:, :, 9:13], x[:, :, 13:21]]))
        assert (torch.cat(enc, dim=2)[:, :4] - whole.mean).abs().max() <= TOL
        dec = list(tiny_vae.decode_stream([whole.mean[:, :, :1], whole.mean[:, :, 1:4], whole.mean[:, :, 4:]]))
        assert (torch.cat(dec, dim=2) - tiny_vae.decode(whole.mean).sample).abs().max() <= TOL
        with pytest.raises(ValueError, match="first chunk"):
            list(tiny_vae.encode_stream([x[:, :, :4]]))


def test_tiling_single_tile_exact_and_combines_with_chunks(tiny_vae):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 9, 64, 96) * 2 - 1
    with torch.no_grad():
        ref = tiny_vae.encode(x).latent_dist.mean
        assert torch.equal(tiny_vae.encode(x, tile=96).latent_dist.mean, ref)
        rec = tiny_vae.decode(ref).sample
        tiled = tiny_vae.decode(ref, tile=32, tile_overlap=16).sample
        assert tiled.shape == rec.shape
        assert (tiny_vae.decode(ref, tile=32, tile_overlap=16, latent_chunk=1).sample - tiled).abs().max() <= TOL
        enc_tiled = tiny_vae.encode(x, tile=32, tile_overlap=16).latent_dist.mean
        assert enc_tiled.shape == ref.shape
        enc_tiled_chunked = tiny_vae.encode(x, tile=32, tile_overlap=16, latent_chunk=1).latent_dist.mean
        assert (enc_tiled_chunked - enc_tiled).abs().max() <= TOL


@pytest.mark.parametrize("overlap", [8, 16, 24])
def test_tile_blend_is_seamless(overlap):
    """Tiles whose outputs disagree by a constant per tile blend into a ramp, never a step."""
    grid = TileGrid.for_latents((7, 13), 32, overlap, 8)
    z = torch.zeros(1, 1, 1, 7, 13)
    up = lambda x, j: torch.nn.functional.interpolate(x, scale_factor=(1, 8, 8)) + float(j)
    out = grid.run(z, up, out_scale=8)[0, 0, 0]
    assert out.shape == (56, 104)
    steps = max((out[:, 1:] - out[:, :-1]).abs().max(), (out[1:] - out[:-1]).abs().max())
    max_offset = len(grid) - 1
    assert steps <= max_offset / (overlap + 1) + 1e-5  # a hard cut would step by >= 1
    hard = TileGrid.for_latents((7, 13), 32, 0, 8).run(z, up, out_scale=8)[0, 0, 0]
    assert (hard[:, 1:] - hard[:, :-1]).abs().max() >= 1
    exact = grid.run(torch.randn(1, 2, 3, 7, 13), lambda x, j: x * 2, out_scale=1)  # consistent tiles: exact
    assert exact.shape == (1, 2, 3, 7, 13)


def test_pad_and_crop_any_shape():
    x = torch.rand(1, 3, 7, 30, 17)
    padded, size = pad_video(x)
    assert padded.shape == (1, 3, 9, 32, 24)
    assert torch.equal(padded[:, :, 8, :30, :17], x[:, :, 6])
    assert torch.equal(padded[:, :, :7, 31, :17], x[:, :, :, 29])
    assert torch.equal(padded[:, :, :7, :30, 23], x[:, :, :, :, 16])
    assert torch.equal(crop_video(padded, size), x)


def test_bad_inputs(tiny_vae):
    with pytest.raises(ValueError, match="1 \\+ 4n"):
        tiny_vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="latent_chunk"):
        tiny_vae.decode(torch.zeros(1, 4, 2, 2, 2), latent_chunk=0)
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_vae.decode(torch.zeros(1, 4, 2, 4, 4), tile=20)
    with pytest.raises(ValueError, match="norm_type"):
        WFVAE(norm_type="batchnorm")
    with pytest.raises(ValueError, match="unknown WF-VAE config keys: bogus"):
        WFVAEConfig.from_dict({"bogus": 1})


def test_posterior_sampling_is_seeded(tiny_vae):
    post = tiny_vae.encode(torch.zeros(1, 3, 5, 16, 16)).latent_dist
    a = post.sample(generator=torch.Generator().manual_seed(1))
    b = post.sample(generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, post.mode())
    assert post.kl().shape == post.mean.shape


def test_bf16_close_to_fp32():
    vae = WFVAE.from_pretrained(TINY)
    io = load_file(os.path.join(TINY, "io.safetensors"))
    with torch.no_grad():
        ref = vae.decode(io["latent_mean"]).sample
        low = vae.to(torch.bfloat16).decode(io["latent_mean"].bfloat16()).sample.float()
    assert (low - ref).norm() / ref.norm() <= 2e-2
