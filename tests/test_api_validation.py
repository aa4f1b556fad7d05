"""The Python API rejects bad input with one exception whose message names the problem (issue 18).

Two tables: the tensor API of WF-VAE (encode / decode / streams / latent scaling / padding), and the loaders
(``WFVAE.from_pretrained``, ``OpenSoraT2V.from_pretrained``, ``OpenSoraInpaint.from_pretrained``, ``load_denoiser``,
``StructureController.from_pretrained``, ``TextEncoder.from_pretrained``) on damaged folders built in ``tmp_path``
from the tiny fixtures. Every row asserts the exception type and a fragment of the message; loader rows also assert
that the first line names the offending file or folder.
"""
import argparse
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from conftest import DATA, make_tiny_vae
from opensora.models import OpenSoraInpaint, OpenSoraT2V, StructureController, load_denoiser
from opensora.models.checkpoint import INDEX_NAME, WEIGHTS_NAME, write_weights
from opensora.text.encoders import TextEncoder
from wfvae import WFVAE, crop_video, pad_video

WFVAE_TINY = os.path.join(DATA, "wfvae_tiny")
T2V_TINY = os.path.join(DATA, "opensora_t2v_tiny")
INPAINT_TINY = os.path.join(DATA, "opensora_inpaint_tiny")
TOKENIZER = os.path.join(DATA, "tiny_text")


@pytest.fixture(scope="module")
def vae():
    return make_tiny_vae()  # latent_dim 4


def video(t=5, h=16, w=16, b=1, c=3, dtype=torch.float32):
    return (torch.rand(b, c, t, h, w) * 2 - 1).to(dtype)


def with_value(x, value, index=(0, 0, -1, 3, 5)):
    x = x.clone()
    x[index] = value
    return x


def latents(t=2, h=2, w=2, c=4, b=1):
    return torch.randn(b, c, t, h, w)


nan, inf = float("nan"), float("inf")

# (id, call(vae), exception type, message fragment)
TENSOR_CASES = [
    ("encode-nan", lambda m: m.encode(with_value(video(), nan)), ValueError, "video holds NaN or infinite"),
    ("encode-inf", lambda m: m.encode(with_value(video(), inf)), ValueError, "video holds NaN or infinite"),
    ("encode-neg-inf", lambda m: m.encode(with_value(video(), -inf)), ValueError, "video holds NaN or infinite"),
    ("encode-nan-bf16-model-input", lambda m: m.encode(with_value(video(dtype=torch.bfloat16), nan)), ValueError,
     "NaN or infinite"),
    ("encode-uint8", lambda m: m.encode(torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8)), ValueError,
     "video must be a floating tensor in [-1, 1]; got torch.uint8: convert with x.float() / 127.5 - 1"),
    ("encode-int64", lambda m: m.encode(torch.zeros(1, 3, 5, 16, 16, dtype=torch.int64)), ValueError,
     "got torch.int64"),
    ("encode-bool", lambda m: m.encode(torch.zeros(1, 3, 5, 16, 16, dtype=torch.bool)), ValueError,
     "got torch.bool: convert with x.float() * 2 - 1"),
    ("encode-0-255-floats", lambda m: m.encode(video() * 127.5 + 127.5), ValueError,
     "must be in [-1, 1], but its values span"),
    ("encode-dark-0-255-floats", lambda m: m.encode(with_value(torch.zeros(1, 3, 5, 16, 16), 17.0)), ValueError,
     "values span [0, 17]"),
    ("encode-numpy", lambda m: m.encode(video().numpy()), ValueError, "video must be a torch.Tensor (B, 3, T, H, W)"),
    ("encode-rank4", lambda m: m.encode(video()[0]), ValueError, "video must be (B, 3, T, H, W)"),
    ("encode-4-channels", lambda m: m.encode(video(c=4)), ValueError, "(B, 3, T, H, W) with 3 RGB channels"),
    ("encode-T0", lambda m: m.encode(video(t=0)), ValueError, "has an empty dimension"),
    ("encode-H0", lambda m: m.encode(video(h=0)), ValueError, "has an empty dimension"),
    ("encode-B0", lambda m: m.encode(video(b=0)), ValueError, "has an empty dimension"),
    ("encode-T6", lambda m: m.encode(video(t=6)), ValueError, "need 1 + 4n frames"),
    ("encode-H12", lambda m: m.encode(video(h=12)), ValueError, "sizes divisible by 8"),
    ("encode-H4-too-small", lambda m: m.encode(video(h=4, w=4)), ValueError, "sizes divisible by 8"),
    ("encode-chunk-bool", lambda m: m.encode(video(), latent_chunk=True), ValueError, "latent_chunk must be"),
    ("encode-chunk-float", lambda m: m.encode(video(), latent_chunk=1.5), ValueError, "latent_chunk must be"),
    ("encode-nan-in-second-chunk", lambda m: m.encode(with_value(video(t=9), nan, (0, 1, 3, 0, 0)), latent_chunk=1),
     ValueError, "video chunk 1 holds NaN"),
    ("encode-tile-float", lambda m: m.encode(video(), tile=16.0), ValueError, "tile must be an integer"),
    ("encode-tile-str", lambda m: m.encode(video(), tile="16"), ValueError, "tile must be an integer"),
    ("encode-stream-int-chunk", lambda m: list(m.encode_stream([video(t=1), torch.zeros(1, 3, 4, 16, 16,
                                                                                         dtype=torch.uint8)])),
     ValueError, "video chunk 1 must be a floating tensor"),
    ("encode-stream-empty-chunk", lambda m: list(m.encode_stream([video(t=1), video(t=0)])), ValueError,
     "empty dimension"),
    ("encode-stream-nan", lambda m: list(m.encode_stream([video(t=1), with_value(video(t=4), nan)])), ValueError,
     "video chunk 1 holds NaN"),
    ("decode-nan", lambda m: m.decode(with_value(latents(), nan, (0, 1, 1, 1, 1))), ValueError,
     "latents holds NaN or infinite"),
    ("decode-inf", lambda m: m.decode(with_value(latents(), inf, (0, 1, 1, 1, 1))), ValueError,
     "latents holds NaN or infinite"),
    ("decode-int64", lambda m: m.decode(torch.zeros(1, 4, 2, 2, 2, dtype=torch.int64)), ValueError,
     "latents must be a floating tensor (B, 4, t, h, w), got torch.int64"),
    ("decode-bool", lambda m: m.decode(torch.zeros(1, 4, 2, 2, 2, dtype=torch.bool)), ValueError,
     "must be a floating tensor"),
    ("decode-channels", lambda m: m.decode(latents(c=8)), ValueError, "latents must be (B, 4, t, h, w)"),
    ("decode-rank4", lambda m: m.decode(latents()[0]), ValueError, "latents must be (B, 4, t, h, w)"),
    ("decode-t0", lambda m: m.decode(latents(t=0)), ValueError, "has an empty dimension"),
    ("decode-list", lambda m: m.decode([[1.0]]), ValueError, "latents must be a torch.Tensor"),
    ("decode-nan-in-second-chunk", lambda m: m.decode(with_value(latents(t=3), nan, (0, 0, 2, 0, 0)), latent_chunk=2),
     ValueError, "latent chunk 1 holds NaN"),
    ("decode-stream-channels", lambda m: list(m.decode_stream([latents(c=16)])), ValueError,
     "latents must be (B, 4, t, h, w)"),
    ("decode-stream-second-chunk-channels", lambda m: list(m.decode_stream([latents(), latents(c=3)])), ValueError,
     "latent chunk 1 must be (B, 4, t, h, w)"),
    ("scale-channels", lambda m: m.scale_latents(latents(c=16)), ValueError, "latents must be (B, 4, ...)"),
    ("unscale-channels", lambda m: m.unscale_latents(latents(c=16)), ValueError, "latents must be (B, 4, ...)"),
    ("scale-rank1", lambda m: m.scale_latents(torch.zeros(4)), ValueError, "latents must be (B, 4, ...)"),
    ("scale-int", lambda m: m.scale_latents(torch.zeros(1, 4, 2, dtype=torch.int64)), ValueError,
     "must be a floating tensor"),
    ("pad-T0", lambda m: pad_video(video(t=0)), ValueError, "video (B, C, T, H, W) has an empty dimension"),
    ("pad-rank4", lambda m: pad_video(video()[0]), ValueError, "video must be (B, C, T, H, W)"),
    ("pad-not-tensor", lambda m: pad_video([1, 2]), ValueError, "video must be a torch.Tensor"),
    ("pad-spatial-0", lambda m: pad_video(video(), spatial=0), ValueError, "spatial must be a positive integer"),
    ("crop-larger", lambda m: crop_video(video(), (9, 16, 16)), ValueError, "it is smaller"),
    ("crop-bad-size", lambda m: crop_video(video(), (5, 16)), ValueError, "size must be the (T, H, W)"),
]


@pytest.mark.parametrize("call, exc, fragment", [c[1:] for c in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES])
def test_tensor_api_rejects(vae, call, exc, fragment):
    with pytest.raises(exc) as err:
        call(vae)
    assert fragment in str(err.value).splitlines()[0]


def test_valid_edge_inputs_still_work_and_are_not_changed(vae):
    x = video(t=1, h=8, w=8)  # the smallest valid video: one frame of 8x8
    before = x.clone()
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert z.shape == (1, 4, 1, 1, 1)
        assert torch.equal(x, before)
        assert vae.decode(z).sample.shape == (1, 3, 1, 8, 8)
        for beyond in (video() * 1.3, video() + torch.randn(1, 3, 5, 16, 16) * 2):  # resampling overshoot,
            assert torch.isfinite(vae.encode(beyond).latent_dist.mode()).all()     # condition noise: accepted
        y = video(t=9)
        torch.testing.assert_close(vae.encode(y, latent_chunk=1).latent_dist.mode(), vae.encode(y).latent_dist.mode(),
                                   atol=1e-5, rtol=0)
    padded, size = pad_video(video(t=2, h=10, w=9))
    assert padded.shape == (1, 3, 5, 16, 16) and size == (2, 10, 9)
    assert vae.scale_latents(torch.zeros(2, 4)).shape == (2, 4)  # (B, C) latents are fine


# ---------------------------------------------------------------------------------------------- damaged files
def load_file(path):
    """The tensors of a safetensors file, in memory (not mapped: the file is rewritten in place below)."""
    with open(path, "rb") as fh:
        return load_bytes(fh.read())


def _first_float(state):
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1 and "wavelet" not in k)


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def zero_fill(path):
    size = os.path.getsize(path)
    open(path, "wb").write(bytes(size))


def pickle_it(path):
    torch.save(load_file(path), path)


def empty(path):
    open(path, "wb").close()


def garbage(path):
    open(path, "wb").write(b"this is not a weights file\n" * 100)


def nan_weight(path):
    state = load_file(path)
    key = _first_float(state)
    state[key] = state[key].clone().view(-1).index_fill(0, torch.tensor([1]), nan).view(state[key].shape)
    save_file(state, path, metadata={"format": "pt"})


def inf_weight(path):
    state = load_file(path)
    key = _first_float(state)
    state[key] = torch.full_like(state[key], -inf)
    save_file(state, path, metadata={"format": "pt"})


def remove(path):
    os.remove(path)


# (id, corrupt(path), exception, message fragment)
WEIGHT_DAMAGE = [
    ("truncated", truncate, ValueError, "truncated or not a safetensors file"),
    ("zero-filled", zero_fill, ValueError, "truncated or not a safetensors file"),
    ("pickled", pickle_it, ValueError, "truncated or not a safetensors file"),
    ("empty", empty, ValueError, "the file is empty"),
    ("garbage", garbage, ValueError, "truncated or not a safetensors file"),
    ("nan", nan_weight, ValueError, "holds NaN or infinite values"),
    ("inf", inf_weight, ValueError, "holds NaN or infinite values"),
    ("absent", remove, FileNotFoundError, ""),
]


def bad_json(text):
    def corrupt(path):
        open(path, "w").write(text)
    return corrupt


def edit_json(**changes):
    def corrupt(path):
        values = json.load(open(path))
        for key, value in changes.items():
            if value is KeyError:
                del values[key]
            else:
                values[key] = value
        open(path, "w").write(json.dumps(values))
    return corrupt


def binary(path):
    open(path, "wb").write(b"\xff\xfe\x00\x81" * 10)


# (id, corrupt(config path), exception, message fragment) for the WF-VAE
WFVAE_CONFIG_DAMAGE = [
    ("not-json", bad_json("{latent_dim: 8"), ValueError, "not valid JSON"),
    ("json-list", bad_json("[1, 2]"), ValueError, "must hold a JSON object {...}, found a JSON list"),
    ("json-number", bad_json("8"), ValueError, "found a JSON number"),
    ("empty", bad_json(""), ValueError, "the file is empty"),
    ("binary", binary, ValueError, "not a JSON text file"),
    ("str-int", edit_json(latent_dim="8"), ValueError, 'latent_dim must be an integer, got "8"'),
    ("float-int", edit_json(base_channels=16.5), ValueError, "base_channels must be an integer, got 16.5"),
    ("bool-int", edit_json(base_channels=True), ValueError, "base_channels must be an integer, got true"),
    ("str-bool", edit_json(use_attention="yes"), ValueError, "use_attention must be true/false"),
    ("nan-float", edit_json(dropout=nan), ValueError, "dropout must be a finite number"),
    ("list-str", edit_json(scale=["a"]), ValueError, "scale must be"),
    ("zero-width", edit_json(latent_dim=0), ValueError, "latent_dim must be >= 1"),
    ("bad-interp", edit_json(t_interpolation="cubic"), ValueError, "t_interpolation must be"),
    ("unknown-key", edit_json(bogus=1), ValueError, "unknown WF-VAE config keys: bogus"),
    ("missing-key", edit_json(base_channels=KeyError), ValueError, "do not match the config"),
    ("absent", remove, FileNotFoundError, "WF-VAE config not found"),
]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _assert_first_line(err, fragment, names):
    line = str(err.value).splitlines()[0]
    assert fragment in line
    assert names in line, f"{names!r} not named in {line!r}"


@pytest.mark.parametrize("corrupt, exc, fragment", [c[1:] for c in WEIGHT_DAMAGE], ids=[c[0] for c in WEIGHT_DAMAGE])
def test_wfvae_damaged_weights(tmp_path, corrupt, exc, fragment):
    folder = _copy(WFVAE_TINY, tmp_path / "vae")
    corrupt(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    with pytest.raises(exc) as err:
        WFVAE.from_pretrained(folder)
    _assert_first_line(err, fragment, os.path.join(folder, "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("corrupt, exc, fragment", [c[1:] for c in WFVAE_CONFIG_DAMAGE],
                         ids=[c[0] for c in WFVAE_CONFIG_DAMAGE])
def test_wfvae_damaged_config(tmp_path, corrupt, exc, fragment):
    folder = _copy(WFVAE_TINY, tmp_path / "vae")
    corrupt(os.path.join(folder, "config.json"))
    with pytest.raises(exc) as err:
        WFVAE.from_pretrained(folder)
    names = "diffusion_pytorch_model.safetensors" if fragment == "do not match the config" else "config.json"
    _assert_first_line(err, fragment, os.path.join(folder, names))


def _ckpt(content):
    def write(path):
        torch.save(content, path)
    return write


def _ckpt_nan(path):
    state = load_file(os.path.join(WFVAE_TINY, "diffusion_pytorch_model.safetensors"))
    state[_first_float(state)] = torch.full_like(state[_first_float(state)], nan)
    torch.save({"ema_state_dict": state}, path)


CKPT_DAMAGE = [
    ("list-pickle", _ckpt([1, 2, 3]), "does not hold a state dict (found a list)"),
    ("no-tensors", _ckpt({"state_dict": {"gen_model": {"a": 1}}}), "does not hold a state dict of tensors"),
    ("empty-dict", _ckpt({}), "does not hold a state dict of tensors"),
    ("object-pickle", _ckpt({"state_dict": argparse.Namespace(a=1)}), "pass allow_pickle=True"),
    ("empty-file", empty, "the file is empty"),
    ("garbage", garbage, "not a torch checkpoint or damaged"),
    ("safetensors-named-ckpt", lambda p: shutil.copy(os.path.join(WFVAE_TINY, WEIGHTS_NAME), p),
     "not a torch checkpoint or damaged"),
    ("nan-ema", _ckpt_nan, "holds NaN or infinite values"),
]


@pytest.mark.parametrize("write, fragment", [c[1:] for c in CKPT_DAMAGE], ids=[c[0] for c in CKPT_DAMAGE])
def test_wfvae_damaged_training_checkpoint(tmp_path, write, fragment):
    path = str(tmp_path / "model.ckpt")
    write(path)
    with pytest.raises(ValueError) as err:
        WFVAE.from_pretrained(path, config=os.path.join(WFVAE_TINY, "config.json"))
    _assert_first_line(err, fragment, path)


def test_wfvae_mis_shaped_tensor_is_a_value_error(tmp_path):
    folder = _copy(WFVAE_TINY, tmp_path / "vae")
    weights = os.path.join(folder, WEIGHTS_NAME)
    state = load_file(weights)
    state["decoder.conv_in.conv.bias"] = torch.zeros(3)
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): \['decoder\.conv_in\.conv\.bias: checkpoint"):
        WFVAE.from_pretrained(folder)
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
        WFVAE.from_pretrained(WFVAE_TINY, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------- denoisers
@pytest.fixture(scope="module")
def controller_folder(tmp_path_factory):
    from opensora.models import OpenSoraT2VConfig

    torch.manual_seed(0)
    base = OpenSoraT2V(OpenSoraT2VConfig(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                                         num_layers=2, cross_attention_dim=24, caption_channels=16))
    controller = StructureController.for_base(base, num_layers=1, latent_channels=4, downsampler_channels=(4, 8, 8, 8))
    folder = str(tmp_path_factory.mktemp("controller"))
    controller.save_pretrained(folder)
    return folder


LOADERS = {
    "t2v": (T2V_TINY, OpenSoraT2V.from_pretrained),
    "inpaint": (INPAINT_TINY, OpenSoraInpaint.from_pretrained),
    "load_denoiser": (T2V_TINY, load_denoiser),
    "controller": (None, StructureController.from_pretrained),
}


def _loader_source(name, controller_folder):
    src, load = LOADERS[name]
    return (src or controller_folder), load


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("corrupt, exc, fragment", [c[1:] for c in WEIGHT_DAMAGE], ids=[c[0] for c in WEIGHT_DAMAGE])
def test_denoiser_damaged_weights(tmp_path, controller_folder, loader, corrupt, exc, fragment):
    src, load = _loader_source(loader, controller_folder)
    folder = _copy(src, tmp_path / "model")
    corrupt(os.path.join(folder, WEIGHTS_NAME))
    with pytest.raises(exc) as err:
        load(folder)
    _assert_first_line(err, fragment, folder)
    if exc is ValueError:
        assert os.path.join(folder, WEIGHTS_NAME) in str(err.value)


DENOISER_CONFIG_DAMAGE = [
    ("not-json", bad_json('{"num_layers": 32,'), ValueError, "not valid JSON"),
    ("json-list", bad_json("[]"), ValueError, "found a JSON list"),
    ("empty", bad_json("  \n"), ValueError, "the file is empty"),
    ("binary", binary, ValueError, "not a JSON text file"),
    ("str-int", edit_json(num_attention_heads="2"), ValueError, 'num_attention_heads must be an integer, got "2"'),
    ("float-int", edit_json(patch_size=2.5), ValueError, "patch_size must be an integer, got 2.5"),
    ("bool-int", edit_json(num_attention_heads=True), ValueError, "num_attention_heads must be an integer"),
    ("nan-float", edit_json(norm_eps=nan), ValueError, "norm_eps must be a finite number"),
    ("null-bool", edit_json(attention_bias=None), ValueError, "attention_bias must be true/false, got null"),
    ("unknown-key", edit_json(not_a_key=1), ValueError, "not_a_key"),
    ("missing-key", edit_json(attention_head_dim=KeyError), ValueError, ""),
]


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("corrupt, exc, fragment", [c[1:] for c in DENOISER_CONFIG_DAMAGE],
                         ids=[c[0] for c in DENOISER_CONFIG_DAMAGE])
def test_denoiser_damaged_config(tmp_path, controller_folder, loader, corrupt, exc, fragment):
    src, load = _loader_source(loader, controller_folder)
    folder = _copy(src, tmp_path / "model")
    corrupt(os.path.join(folder, "config.json"))
    with pytest.raises(exc) as err:
        load(folder)
    _assert_first_line(err, fragment, folder)


def test_denoiser_sharded_index_and_dtype_problems(tmp_path):
    folder = _copy(T2V_TINY, tmp_path / "model")
    weights = os.path.join(folder, WEIGHTS_NAME)
    state = load_file(weights)
    os.remove(weights)
    write_weights(state, folder, max_shard_size=2_000_000)  # shards + index
    assert isinstance(OpenSoraT2V.from_pretrained(folder), OpenSoraT2V)
    index = os.path.join(folder, INDEX_NAME)
    shard = sorted(f for f in os.listdir(folder) if f.startswith("diffusion_pytorch_model-"))[0]
    cases = [
        (lambda: open(index, "w").write("{"), ValueError, "not valid JSON"),
        (lambda: open(index, "w").write('{"metadata": {}}'), ValueError, 'under "weight_map"'),
        (lambda: open(index, "w").write('{"weight_map": {"a": "../../etc/passwd"}}'), ValueError, "weight_map"),
    ]
    good = open(index).read()
    for corrupt, exc, fragment in cases:
        corrupt()
        with pytest.raises(exc, match=fragment) as err:
            OpenSoraT2V.from_pretrained(folder)
        assert index in str(err.value).splitlines()[0]
        open(index, "w").write(good)
    truncate(os.path.join(folder, shard))
    with pytest.raises(ValueError, match="truncated or not a safetensors file") as err:
        OpenSoraT2V.from_pretrained(folder)
    assert shard in str(err.value)
    os.remove(os.path.join(folder, shard))
    with pytest.raises(FileNotFoundError, match="shard listed in"):
        OpenSoraT2V.from_pretrained(folder)

    big = _copy(T2V_TINY, tmp_path / "big")  # a weight that float16 cannot hold
    state = load_file(os.path.join(big, WEIGHTS_NAME))
    state["proj_out.bias"] = torch.full_like(state["proj_out.bias"], 1e6)
    save_file(state, os.path.join(big, WEIGHTS_NAME))
    with pytest.raises(ValueError, match="proj_out.bias overflows torch.float16"):
        OpenSoraT2V.from_pretrained(big, dtype=torch.float16)
    assert OpenSoraT2V.from_pretrained(big, dtype=torch.float32).proj_out.bias.max() == 1e6
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
        OpenSoraT2V.from_pretrained(T2V_TINY, dtype="bf16")


def test_load_denoiser_class_name_problems(tmp_path):
    folder = _copy(T2V_TINY, tmp_path / "model")
    edit_json(_class_name=["x"])(os.path.join(folder, "config.json"))
    with pytest.raises(ValueError, match="_class_name must be a string"):
        load_denoiser(folder)
    edit_json(_class_name="SomethingElse")(os.path.join(folder, "config.json"))
    with pytest.raises(ValueError, match="SomethingElse"):
        load_denoiser(folder)


def test_published_fixtures_load_unchanged():
    """Private keys (``_class_name``, ``_diffusers_version``) keep loading; the parity tests check the outputs."""
    assert WFVAE.from_pretrained(WFVAE_TINY).config.latent_dim == 8
    assert isinstance(load_denoiser(INPAINT_TINY), OpenSoraInpaint)
    assert type(load_denoiser(T2V_TINY)) is OpenSoraT2V


def test_release_style_sample_sizes_load(tmp_path):
    """The release training script records ``sample_size_h/w`` as ``[h, w]`` lists (the model ignores them)."""
    folder = tmp_path / "t2v"
    shutil.copytree(T2V_TINY, folder)
    config = json.load(open(folder / "config.json"))
    config.update(sample_size_h=[80, 80], sample_size_w=[80, 80], sample_size_t=24)
    json.dump(config, open(folder / "config.json", "w"))
    assert type(load_denoiser(str(folder))) is OpenSoraT2V


# ---------------------------------------------------------------------------------------------- text encoder
@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=256, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0)
    folder = tmp_path_factory.mktemp("t5")
    transformers.T5EncoderModel(config).save_pretrained(str(folder))
    for name in os.listdir(TOKENIZER):
        if name.endswith(".json"):
            shutil.copy(os.path.join(TOKENIZER, name), folder)
    return str(folder)


def _drop_tensor(path):
    state = load_file(path)
    del state[sorted(state)[-1]]
    save_file(state, path, metadata={"format": "pt"})


TEXT_DAMAGE = [
    ("weights-truncated", "model.safetensors", truncate, "cannot load the text encoder weights from"),
    ("weights-garbage", "model.safetensors", garbage, "cannot load the text encoder weights from"),
    ("weights-nan", "model.safetensors", nan_weight, "holds NaN or infinite values"),
    ("weights-missing-tensor", "model.safetensors", _drop_tensor, "do not match its config.json"),
    ("config-not-json", "config.json", bad_json("{"), "not valid JSON"),
    ("config-list", "config.json", bad_json("[]"), "found a JSON list"),
    ("config-model-type", "config.json", edit_json(model_type=5), "model_type must be a string"),
    ("tokenizer-garbage", "tokenizer.json", garbage, "cannot load the tokenizer from"),
]


@pytest.mark.parametrize("name, corrupt, fragment", [c[1:] for c in TEXT_DAMAGE], ids=[c[0] for c in TEXT_DAMAGE])
def test_text_encoder_damaged_files(tmp_path, t5_folder, name, corrupt, fragment):
    folder = _copy(t5_folder, tmp_path / "t5")
    corrupt(os.path.join(folder, name))
    with pytest.raises(ValueError) as err:
        TextEncoder.from_pretrained(folder, max_length=8)
    _assert_first_line(err, fragment, folder)
