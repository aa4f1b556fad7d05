"""OpenSoraInpaint: parity with the published v1.3.1 I2V outputs, initialisation from text-to-video, loading/saving."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA
from opensora.models import OpenSoraInpaint, OpenSoraInpaintConfig, OpenSoraT2V, load_denoiser
from opensora.models.inpaint import read_class_name



TINY = os.path.join(DATA, "opensora_inpaint_tiny")
T2V = os.path.join(DATA, "opensora_t2v_tiny")
TOL = 1e-5


@pytest.fixture(scope="module")
def io():
    return load_file(os.path.join(TINY, "io.safetensors"))


@pytest.fixture(scope="module")
def model():
    return OpenSoraInpaint.from_pretrained(TINY)


def call(model, io, hidden_states=None):
    with torch.no_grad():
        return model(io["video.hidden_states"] if hidden_states is None else hidden_states, io["video.timestep"],
                     io["video.encoder_hidden_states"], io["video.encoder_attention_mask"]).sample


def test_fixture_parity(model, io):
    out = call(model, io)
    assert out.shape == io["video.output"].shape == (2, 8, 3, 8, 8)
    assert (out - io["video.output"]).abs().max().item() <= TOL


def test_condition_streams_matter(model, io):
    """The trained projections are non-zero: changing the masked latent or the mask changes the output."""
    x = io["video.hidden_states"].clone()
    x[:, 8:16] = 0
    assert (call(model, io, x) - io["video.output"]).abs().max().item() > 1e-3
    x = io["video.hidden_states"].clone()
    x[:, 16:] = 1 - x[:, 16:]
    assert (call(model, io, x) - io["video.output"]).abs().max().item() > 1e-3


def test_wrong_channel_count_raises(model, io):
    with pytest.raises(ValueError, match="20 input channels"):
        call(model, io, io["video.hidden_states"][:, :8])


def test_config_and_keys_match_release(model):
    with open(os.path.join(TINY, "config.json")) as fh:
        published = json.load(fh)
    ours = model.config.to_dict()
    assert ours["_class_name"] == published["_class_name"] == "OpenSoraInpaint_v1_3"
    assert {k: v for k, v in ours.items() if not k.startswith("_")} == \
        {k: v for k, v in published.items() if not k.startswith("_")}
    released = set(load_file(os.path.join(TINY, "diffusion_pytorch_model.safetensors")))
    assert set(model.state_dict()) == released


def test_save_load_roundtrip(model, io, tmp_path):
    model.save_pretrained(str(tmp_path))
    assert read_class_name(str(tmp_path)) == "OpenSoraInpaint_v1_3"
    again = load_denoiser(str(tmp_path))
    assert type(again) is OpenSoraInpaint
    assert torch.equal(call(again, io), call(model, io))
    assert type(load_denoiser(T2V)) is OpenSoraT2V


def test_t2v_loader_rejects_inpaint_folder():
    with pytest.raises(ValueError, match="vae_scale_factor_t"):
        OpenSoraT2V.from_pretrained(TINY)


def test_from_t2v_equals_t2v_on_noisy_latent(io):
    """A fresh controller from text-to-video weights ignores the conditions and reproduces the T2V model."""
    t2v = OpenSoraT2V.from_pretrained(T2V)
    torch.manual_seed(0)
    inpaint = OpenSoraInpaint.from_t2v(T2V)
    assert inpaint.config == OpenSoraInpaintConfig.from_t2v(t2v.config, 4)
    assert torch.equal(inpaint.pos_embed_masked_hidden_states[0].proj.weight, t2v.pos_embed.proj.weight)
    assert not inpaint.pos_embed_masked_hidden_states[1].weight.any()
    assert not inpaint.pos_embed_mask[1].weight.any()
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 8, 3, 8, 8, generator=g)
    masked = torch.randn(2, 8, 3, 8, 8, generator=g)
    mask = (torch.rand(2, 4, 3, 8, 8, generator=g) > 0.5).float()
    t, text, text_mask = io["video.timestep"], io["video.encoder_hidden_states"], io["video.encoder_attention_mask"]
    with torch.no_grad():
        expected = t2v(noisy, t, text, text_mask).sample
        got = inpaint(torch.cat([noisy, masked, mask], dim=1), t, text, text_mask).sample
    assert (got - expected).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="text-to-video"):
        OpenSoraInpaint.from_t2v(inpaint)


def test_gradients_reach_condition_projections(io):
    """From zero, the projections get gradients (training can open them)."""
    inpaint = OpenSoraInpaint.from_t2v(OpenSoraT2V.from_pretrained(T2V)).train()
    out = inpaint(io["video.hidden_states"], io["video.timestep"], io["video.encoder_hidden_states"],
                  io["video.encoder_attention_mask"]).sample
    out.square().mean().backward()
    assert inpaint.pos_embed_masked_hidden_states[1].weight.grad.abs().sum() > 0
    assert inpaint.pos_embed_mask[1].weight.grad.abs().sum() > 0


def test_to_t2v_is_the_model_without_a_condition(io):
    """Trained (opened) condition streams: with a zero masked latent and an all-ones mask the controller is exactly
    the folded text-to-video model; with any other condition it is not."""
    inpaint = OpenSoraInpaint.from_t2v(T2V)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in inpaint.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    t2v = inpaint.to_t2v()
    assert type(t2v) is OpenSoraT2V and not t2v.training
    noisy = torch.randn(2, 8, 3, 8, 8, generator=g)
    t, text, text_mask = io["video.timestep"], io["video.encoder_hidden_states"], io["video.encoder_attention_mask"]
    nothing = torch.cat([noisy, torch.zeros_like(noisy), torch.ones(2, 4, 3, 8, 8)], dim=1)
    kept = nothing.clone()
    kept[:, 8:16, :1] = torch.randn(2, 8, 1, 8, 8, generator=g)
    kept[:, 16:, :1] = 0
    with torch.no_grad():
        expected = inpaint(nothing, t, text, text_mask).sample
        got = t2v(noisy, t, text, text_mask).sample
        other = inpaint(kept, t, text, text_mask).sample
    assert (got - expected).abs().max().item() < 1e-5
    assert (other - expected).abs().max().item() > 1e-2
    # the folded model saves and loads as a plain text-to-video model
    half = inpaint.to(torch.bfloat16).to_t2v()
    assert half.pos_embed.proj.bias.dtype == torch.bfloat16
