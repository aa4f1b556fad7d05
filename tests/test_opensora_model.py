"""OpenSoraT2V: parity with the published v1.3.1 outputs, loading/saving, other configurations, dtypes, gradients."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA
from opensora.models import OpenSoraT2V, OpenSoraT2VConfig
from opensora.models.attention import sdpa_attention, xformers_attention, xformers_available

TINY = os.path.join(DATA, "opensora_t2v_tiny")
TOL = 1e-5


@pytest.fixture(scope="module")
def io():
    return load_file(os.path.join(TINY, "io.safetensors"))


@pytest.fixture(scope="module")
def model():
    return OpenSoraT2V.from_pretrained(TINY)


def inputs(io, case):
    return (io[f"{case}.hidden_states"], io[f"{case}.timestep"], io[f"{case}.encoder_hidden_states"],
            io[f"{case}.encoder_attention_mask"])


def small_model(seed=0, **fields):
    cfg = dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, num_layers=6,
               cross_attention_dim=24, caption_channels=16, patch_size=2, patch_size_t=1, sparse1d=True, sparse_n=2)
    cfg.update(fields)
    torch.manual_seed(seed)
    return OpenSoraT2V(OpenSoraT2VConfig(**cfg)).eval()


def small_inputs(model, batch=2, frames=3, size=6, text=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    x = torch.randn(batch, c.in_channels, frames, size, size, generator=g)
    text_states = torch.randn(batch, 1, text, c.caption_channels, generator=g)
    mask = torch.ones(batch, 1, text)
    mask[0, :, text // 2:] = 0
    return x, torch.tensor([10.0, 700.0][:batch]), text_states, mask


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("case", ["video", "image"])
def test_fixture_parity(model, io, case):
    with torch.no_grad():
        out = model(*inputs(io, case)).sample
    assert out.shape == io[f"{case}.output"].shape
    assert (out - io[f"{case}.output"]).abs().max().item() <= TOL


def test_fixture_parity_other_input_forms(model, io):
    """All-ones latent mask == None; (B, L) text mask and (B, L, D) text states are accepted."""
    x, t, text, mask = inputs(io, "video")
    with torch.no_grad():
        out = model(x, t, text[:, 0], mask[:, 0], attention_mask=torch.ones(x.shape[0], *x.shape[2:])).sample
    assert (out - io["video.output"]).abs().max().item() <= TOL


def test_no_mask_is_passed_when_none_is_needed(model, io):
    """Full-attention blocks with nothing to mask call the backend without a mask (flash kernels possible)."""
    calls = []

    def recording(q, k, v, bias=None):
        calls.append(bias is None)
        return sdpa_attention(q, k, v, bias)

    x, t, text, _ = inputs(io, "image")  # 16 tokens: no Skiparse padding
    try:
        model.set_attention_backend(recording)
        with torch.no_grad():
            model(x, t, text, torch.ones(2, 1, text.shape[2]))
    finally:
        model.set_attention_backend(sdpa_attention)
    assert len(calls) == 2 * model.config.num_layers and all(calls)


# ---------------------------------------------------------------------------------------------- load / save
@pytest.mark.parametrize("max_shard_size", ["10GB", 1_000_000])
def test_save_load_round_trip(model, io, tmp_path, max_shard_size):
    folder = str(tmp_path / "model")
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    files = sorted(os.listdir(folder))
    assert not [f for f in files if f.endswith(".tmp")]
    with open(os.path.join(folder, "config.json")) as fh:
        cfg = json.load(fh)
    assert cfg["_class_name"] == "OpenSoraT2V_v1_3"
    with open(os.path.join(TINY, "config.json")) as fh:
        published = json.load(fh)
    assert {k: v for k, v in cfg.items() if not k.startswith("_")} == \
        {k: v for k, v in published.items() if not k.startswith("_")}
    if max_shard_size == "10GB":
        assert "diffusion_pytorch_model.safetensors" in files
    else:
        assert "diffusion_pytorch_model.safetensors.index.json" in files
        assert "diffusion_pytorch_model.safetensors" not in files
        shards = [f for f in files if f.startswith("diffusion_pytorch_model-")]
        assert len(shards) >= 5  # ~5 MB of weights in 1 MB shards
    loaded = OpenSoraT2V.from_pretrained(folder)
    x, t, text, mask = inputs(io, "video")
    with torch.no_grad():
        assert torch.equal(loaded(x, t, text, mask).sample, model(x, t, text, mask).sample)


def test_resave_switches_layout(model, tmp_path):
    folder = str(tmp_path / "model")
    model.save_pretrained(folder, max_shard_size="1MB")
    model.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_from_pretrained_dtype():
    bf16 = OpenSoraT2V.from_pretrained(TINY, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def _copy_with_state(tmp_path, edit):
    folder = tmp_path / "edited"
    folder.mkdir()
    shutil.copy(os.path.join(TINY, "config.json"), folder / "config.json")
    state = load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors"))
    edit(state)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    return str(folder)


def test_strict_loading_names_bad_keys(tmp_path):
    def edit(state):
        del state["transformer_blocks.3.attn1.to_q.weight"]
        state["transformer_blocks.3.attn1.extra.weight"] = torch.zeros(1)
        state["proj_out.bias"] = torch.zeros(7)

    with pytest.raises(ValueError) as err:
        OpenSoraT2V.from_pretrained(_copy_with_state(tmp_path, edit))
    msg = str(err.value)
    assert "transformer_blocks.3.attn1.to_q.weight" in msg
    assert "transformer_blocks.3.attn1.extra.weight" in msg
    assert "proj_out.bias" in msg


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        OpenSoraT2V.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        OpenSoraT2V.from_pretrained(str(tmp_path / "empty"))
    shutil.copy(os.path.join(TINY, "config.json"), tmp_path / "empty" / "config.json")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        OpenSoraT2V.from_pretrained(str(tmp_path / "empty"))


def test_config_keys():
    with open(os.path.join(TINY, "config.json")) as fh:
        published = json.load(fh)
    cfg = OpenSoraT2VConfig.from_dict(published)  # _class_name, _diffusers_version tolerated
    assert cfg.hidden_size == 48 and cfg.sparse_n == 4
    with pytest.raises(ValueError, match="not_a_key"):
        OpenSoraT2VConfig.from_dict({**published, "not_a_key": 1})


def test_release_size():
    """The released OpenSoraT2V_v1_3-2B/122 (the config defaults) has 2.77B parameters."""
    with torch.device("meta"):
        big = OpenSoraT2V()
    assert round(sum(p.numel() for p in big.parameters()) / 1e9, 2) == 2.77


# ---------------------------------------------------------------------------------------------- other models
@pytest.mark.parametrize("fields, batch, frames, size", [
    (dict(sparse1d=False, num_layers=3), 1, 3, 6),
    (dict(num_attention_heads=3, attention_head_dim=18, cross_attention_dim=54, patch_size=1, sparse_n=3,
          num_layers=5, out_channels=6), 2, 2, 5),  # 50 tokens, k = 3: padded to 54
    (dict(sparse_n=4, num_layers=7, dense_blocks=(0, -1), activation_fn="geglu"), 1, 1, 10),  # image, 25 tokens
    (dict(patch_size_t=2, num_layers=4, sparse_n=2, activation_fn="gelu", norm_elementwise_affine=True), 2, 4, 4),
])
def test_other_configurations(fields, batch, frames, size):
    model = small_model(**fields)
    x, t, text, mask = small_inputs(model, batch, frames, size)
    with torch.no_grad():
        out = model(x, t, text, mask).sample
    assert out.shape == (batch, model.config.output_channels, frames, size, size)
    assert torch.isfinite(out).all()


def test_odd_token_counts_every_ratio():
    for ratio in (1, 2, 3, 4, 5):
        model = small_model(sparse_n=ratio, num_layers=4, dense_blocks=())
        x, t, text, mask = small_inputs(model, 2, 1, 14)  # 49 tokens
        with torch.no_grad():
            assert torch.isfinite(model(x, t, text, mask).sample).all()


def test_latent_mask_hides_padded_frames():
    """With full attention, masked (padding) frames do not change the real frames' outputs."""
    model = small_model(sparse1d=False, num_layers=3)
    x, t, text, mask = small_inputs(model, 2, 3, 6)
    padded = torch.cat([x, torch.randn(2, 4, 2, 6, 6)], dim=2)
    latent_mask = torch.ones(2, 5, 6, 6)
    latent_mask[:, 3:] = 0
    with torch.no_grad():
        ref = model(x, t, text, mask).sample
        out = model(padded, t, text, mask, attention_mask=latent_mask).sample[:, :, :3]
    assert (out - ref).abs().max() < 1e-5


def test_bf16_close_to_fp32(io):
    fp32 = OpenSoraT2V.from_pretrained(TINY)
    bf16 = OpenSoraT2V.from_pretrained(TINY, dtype=torch.bfloat16)
    x, t, text, mask = inputs(io, "video")
    with torch.no_grad():
        ref = fp32(x, t, text, mask).sample
        out = bf16(x.bfloat16(), t, text.bfloat16(), mask).sample
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref).norm() / ref.norm()).item() <= 2e-2


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_flow(checkpointing):
    model = small_model(num_layers=5, sparse_n=2).train()
    model.enable_gradient_checkpointing(checkpointing)
    x, t, text, mask = small_inputs(model, 2, 3, 6)
    model(x, t, text, mask).sample.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_checkpointing_gives_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = small_model(num_layers=4).train()
        model.enable_gradient_checkpointing(checkpointing)
        x, t, text, mask = small_inputs(model)
        model(x, t, text, mask).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_latent_size():
    model = small_model()
    x, t, text, mask = small_inputs(model, 1, 1, 5)
    with pytest.raises(ValueError, match="patch size"):
        model(x, t, text, mask)


@pytest.mark.skipif(not xformers_available(), reason="xformers not installed")
def test_xformers_backend_matches_sdpa(model, io):  # pragma: no cover - needs xformers
    x, t, text, mask = inputs(io, "video")
    model.set_attention_backend(xformers_attention)
    try:
        with torch.no_grad():
            out = model(x, t, text, mask).sample
    finally:
        model.set_attention_backend(sdpa_attention)
    assert (out - io["video.output"]).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------- pooled text
def test_pooled_text_starts_as_the_plain_model_and_round_trips(tmp_path):
    """pooled_text adds a zero-initialised branch: same outputs as the plain model at first; saved and reloaded."""
    plain = small_model(seed=3)
    pooled = small_model(seed=3, pooled_text=True)
    missing, unexpected = pooled.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("pooled_caption.") for k in missing)
    x, t, text, mask = small_inputs(plain)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x, t, text, mask).sample, plain(x, t, text, mask).sample)
        torch.nn.init.normal_(pooled.pooled_caption.linear_2.weight, std=0.5)
        changed = pooled(x, t, text, mask).sample
    assert (changed - plain(x, t, text, mask).sample).abs().max() > 1e-3
    pooled.save_pretrained(str(tmp_path / "m"))
    with open(tmp_path / "m" / "config.json") as fh:
        assert json.load(fh)["pooled_text"] is True
    assert "pooled_text" not in plain.config.to_dict()  # published keys only when off
    again = OpenSoraT2V.from_pretrained(str(tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, text, mask).sample, changed)


def test_pooled_text_ignores_padded_tokens():
    model = small_model(seed=4, pooled_text=True)
    torch.nn.init.normal_(model.pooled_caption.linear_2.weight, std=0.5)
    x, t, text, mask = small_inputs(model)
    edited = text.clone()
    edited[0, :, -1] += 5.0  # a padded token of sample 0 (mask 0 there)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, edited, mask).sample[0], model(x, t, text, mask).sample[0])
        edited[0, :, 0] += 5.0  # a real token
        assert (model(x, t, edited, mask).sample[0] - model(x, t, text, mask).sample[0]).abs().max() > 1e-4
