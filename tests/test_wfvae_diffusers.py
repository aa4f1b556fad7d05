"""WF-VAE as a diffusers model: outputs, tiling/slicing switches, gradients, loading options, low-memory loading,
config round trips (issue 19). Tiny models only; the memory test builds a ~200 MB weights file."""
import ctypes
import ctypes.util
import gc
import json
import os

import pytest
import torch
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from safetensors.torch import load_file, save_file

from conftest import DATA, make_tiny_vae
from wfvae import WFVAE, DiagonalGaussian
from wfvae.models.checkpoint import parameters_on_meta

TINY = os.path.join(DATA, "wfvae_tiny")


def _video(t=9, h=16, w=16, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_outputs_and_tuples(tiny_vae):
    x = _video()
    with torch.no_grad():
        out = tiny_vae.encode(x)
        assert isinstance(out, AutoencoderKLOutput) and isinstance(out.latent_dist, DiagonalGaussian)
        (post,) = tiny_vae.encode(x, return_dict=False)
        assert torch.equal(post.mean, out.latent_dist.mean) and torch.equal(post.logvar, out.latent_dist.logvar)
        assert post.mode().shape == (1, 4, 3, 2, 2)
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(post.sample(g1), post.sample(g2)) and not torch.equal(post.sample(), post.mode())
        dec = tiny_vae.decode(post.mode())
        assert isinstance(dec, BaseOutput) and dec.sample.shape == (1, 3, 9, 16, 16) and dec.commit_loss is None
        assert type(dec).__name__ == "DecoderOutput" and dec["sample"] is dec.sample  # diffusers' fields and access
        (video,) = tiny_vae.decode(post.mode(), return_dict=False)
        assert torch.equal(video, dec.sample)
        assert dec.sample.dtype == torch.float32 and not dec.sample.is_inference()


def test_decode_does_not_import_the_diffusers_model_zoo():
    """The first decode of a process used to import diffusers' DecoderOutput, i.e. every diffusers model (and peft,
    and transformers' models): 8-15 s on this CPU."""
    import subprocess
    import sys

    code = ("import sys, torch; sys.path.insert(0, 'tests'); from conftest import make_tiny_vae; "
            "vae = make_tiny_vae(); out = vae.decode(torch.zeros(1, vae.config.latent_dim, 2, 2, 2)); "
            "print(type(out).__name__, sorted(m for m in sys.modules if m.startswith(('diffusers.models.unets', "
            "'diffusers.models.autoencoders', 'peft'))))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["DecoderOutput", "[]"], out.stdout


def test_enable_tiling_and_slicing_set_defaults(tiny_vae):
    x = _video(t=5, h=48, w=48, b=2)
    with torch.no_grad():
        plain_z = tiny_vae.encode(x).latent_dist.mean
        tiled_z = tiny_vae.encode(x, tile=32, tile_overlap=16).latent_dist.mean
        tiled_rec = tiny_vae.decode(tiled_z, tile=32, tile_overlap=16).sample
        assert not torch.allclose(plain_z, tiled_z, atol=1e-4)  # tiling is an approximation: the switch is seen
        tiny_vae.enable_tiling(32, 16)
        assert torch.equal(tiny_vae.encode(x).latent_dist.mean, tiled_z)
        assert torch.equal(tiny_vae.decode(tiled_z).sample, tiled_rec)
        streamed = torch.cat(list(tiny_vae.encode_stream([x])), dim=2)[:, :4]
        assert torch.equal(streamed, tiled_z)  # the streams take the defaults too
        tiny_vae.disable_tiling()
        assert torch.equal(tiny_vae.encode(x).latent_dist.mean, plain_z)
        with pytest.raises(ValueError, match="tile"):
            tiny_vae.enable_tiling(20)

        batches = []
        hook = tiny_vae.encoder.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
        tiny_vae.enable_slicing()
        sliced_z = tiny_vae.encode(x).latent_dist.mean
        sliced_rec = tiny_vae.decode(plain_z).sample
        tiny_vae.disable_slicing()
        tiny_vae.encode(x)
        hook.remove()
        assert batches == [1, 1, 2]  # one sample at a time, then the whole batch
        torch.testing.assert_close(sliced_z, plain_z, atol=1e-5, rtol=0)
        torch.testing.assert_close(sliced_rec, tiny_vae.decode(plain_z).sample, atol=1e-5, rtol=0)


def _grads(vae, x, latent_chunk):
    vae.zero_grad()
    x = x.clone().requires_grad_(True)
    z = vae.encode(x, latent_chunk=latent_chunk).latent_dist.mode()
    rec = vae.decode(z, latent_chunk=latent_chunk).sample
    (rec.square().mean() + z.square().mean()).backward()
    return x.grad, {n: p.grad.clone() for n, p in vae.named_parameters()}


def test_encode_decode_backpropagate_whole_and_chunked():
    vae = make_tiny_vae()
    x = _video(t=9)
    gx, gw = _grads(vae, x, None)
    assert gx.abs().sum() > 0
    assert all(g.abs().sum() > 0 for n, g in gw.items() if n.startswith(("encoder.conv_out", "decoder.conv_out")))
    for k in (1, 2):  # the stream cache keeps the graph: chunked gradients are the whole-video gradients
        cx, cw = _grads(vae, x, k)
        torch.testing.assert_close(cx, gx, atol=1e-5, rtol=1e-4)
        for name in gw:
            torch.testing.assert_close(cw[name], gw[name], atol=1e-5, rtol=1e-4, msg=name)


def test_streams_run_under_inference_mode(tiny_vae):
    x = _video(t=9)
    params = list(tiny_vae.encode_stream([x[:, :, :5], x[:, :, 5:]]))
    frames = list(tiny_vae.decode_stream([params[0][:, :4]]))
    assert all(t.is_inference() for t in params + frames)
    assert not tiny_vae.encode(x).latent_dist.mean.is_inference()


def test_config_round_trip_and_keyword_construction(tiny_vae):
    again = WFVAE.from_config(tiny_vae.config)
    assert {k: v for k, v in again.config.items() if not k.startswith("_")} == \
        {k: v for k, v in tiny_vae.config.items() if not k.startswith("_")}
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in tiny_vae.state_dict().items()}
    assert tiny_vae.config.latent_dim == 4 and tiny_vae.temporal_compression == 4 and tiny_vae.spatial_compression == 8
    assert torch.equal(tiny_vae.latent_stat("scale"), torch.full((4,), 0.18215))
    with pytest.raises(TypeError, match="keywords"):
        WFVAE(dict(tiny_vae.config))
    with pytest.raises(ValueError, match="unknown WF-VAE config keys: bogus"):
        WFVAE(bogus=1)
    with pytest.raises(ValueError, match="latent_dim must be an integer"):
        WFVAE(latent_dim="8")


def test_save_pretrained_layout_and_diffusers_own_loader(tmp_path, tiny_vae):
    tiny_vae.save_pretrained(tmp_path, safe_serialization=True, variant=None)  # what DiffusionPipeline passes
    with open(tmp_path / "config.json") as fh:
        config = json.load(fh)
    assert config["_class_name"] == "WFVAEModel" and config["latent_dim"] == 4 and "_use_default_values" not in config
    assert any("wavelet" in k for k in load_file(str(tmp_path / "diffusion_pytorch_model.safetensors")))
    with pytest.raises(ValueError, match="safe_serialization"):
        tiny_vae.save_pretrained(tmp_path / "bin", safe_serialization=False)
    ours = WFVAE.from_pretrained(tmp_path)
    theirs = ModelMixin.from_pretrained.__func__(WFVAE, str(tmp_path))  # diffusers' generic loader
    assert isinstance(theirs, WFVAE) and not theirs.training
    x = _video(t=5)
    with torch.no_grad():
        expected = tiny_vae.encode(x).latent_dist.mean
        assert torch.equal(ours.encode(x).latent_dist.mean, expected)
        assert torch.equal(theirs.encode(x).latent_dist.mean, expected)


def test_from_pretrained_options(tmp_path):
    folder = tmp_path / "pipe" / "vae"
    WFVAE.from_pretrained(TINY).save_pretrained(folder)
    vae = WFVAE.from_pretrained(tmp_path / "pipe", subfolder="vae", torch_dtype=torch.bfloat16)
    assert {t.dtype for t in list(vae.parameters()) + list(vae.buffers())} == {torch.bfloat16}
    assert vae.dtype == torch.bfloat16 and not vae.training
    assert all(p.requires_grad and p.device.type == "cpu" for p in vae.parameters())  # nothing left on meta
    assert WFVAE.from_pretrained(TINY, dtype=torch.float16).dtype == torch.float16  # the old name still works
    # what diffusers' pipeline loader passes to every model
    pipeline_kwargs = dict(device_map=None, max_memory=None, offload_folder=None, offload_state_dict=None,
                           variant=None, use_safetensors=None, use_flashpack=False, low_cpu_mem_usage=True,
                           disable_mmap=False)
    assert WFVAE.from_pretrained(TINY, torch_dtype=None, **pipeline_kwargs).dtype == torch.float32
    with pytest.raises(ValueError, match="disagree"):
        WFVAE.from_pretrained(TINY, torch_dtype=torch.bfloat16, dtype=torch.float16)
    with pytest.raises(ValueError, match="variant='fp16' is not supported"):
        WFVAE.from_pretrained(TINY, variant="fp16")
    with pytest.raises(ValueError, match="unknown option"):
        WFVAE.from_pretrained(TINY, revision="main")
    with pytest.raises(ValueError, match="device_map"):
        WFVAE.from_pretrained(TINY, device_map={"": "cpu"})


def test_layerwise_casting_stores_float8_and_computes_in_float32():
    vae, ref = make_tiny_vae(), make_tiny_vae()
    vae.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert vae.decoder.conv_in.conv.weight.dtype == torch.float8_e4m3fn and vae.dtype == torch.float32
    x = _video(t=5)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        rec, expected = vae.decode(z).sample, ref.decode(ref.encode(x).latent_dist.mode()).sample
    assert rec.dtype == torch.float32 and torch.isfinite(rec).all()
    assert torch.corrcoef(torch.stack([rec.flatten(), expected.flatten()]))[0, 1] > 0.97  # float8 weights: close


def test_parameters_on_meta_builds_without_memory():
    with parameters_on_meta():
        vae = WFVAE(base_channels=32, latent_dim=4, norm_type="layernorm")
    assert all(p.is_meta for p in vae.parameters())
    assert all(not b.is_meta for b in vae.buffers())  # the Haar filters are real constants
    assert all(not p.is_meta for p in torch.nn.Linear(2, 2).parameters())  # the patch is gone afterwards


def _kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(fh.read().split(field + ":")[1].split()[0])


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_loading_holds_one_copy_of_the_weights(tmp_path):
    """Peak resident memory added by from_pretrained stays within 1.2x the weights (a model of ~200 MB; building
    the model first and reading the file second peaks at about 2x)."""
    config = dict(base_channels=80, latent_dim=16, encoder_energy_flow_hidden_size=80,
                  decoder_energy_flow_hidden_size=80, norm_type="layernorm", t_interpolation="trilinear")
    with parameters_on_meta():
        shapes = {k: v.shape for k, v in WFVAE(**config).state_dict().items()}
    save_file({k: torch.full(s, 0.01) for k, s in shapes.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with open(tmp_path / "config.json", "w") as fh:
        json.dump(config, fh)
    WFVAE.from_pretrained(TINY)  # first-use allocations happen here
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)  # freed memory leaves: it cannot hide new allocations
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets the peak resident size (VmHWM) to the current one
    before = _kib("VmRSS")
    vae = WFVAE.from_pretrained(tmp_path)
    peak = (_kib("VmHWM") - before) * 1024
    weights = sum(t.numel() * t.element_size() for t in vae.state_dict().values())
    assert weights > 150 * 2 ** 20
    assert peak <= 1.2 * weights, (peak / weights, weights)
