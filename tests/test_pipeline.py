"""OpenSoraPipeline on the CPU with tiny random models: shapes, guidance, determinism, checks, offload.

The builders at the top are shared with tests/test_sample_cli.py.
"""
import os
import shutil

import pytest
import torch

from conftest import make_tiny_vae
from opensora.models import OpenSoraT2V
from opensora.pipeline import OpenSoraPipeline, decode_latents, rescale_guidance
from opensora.schedulers import NEGATIVE_PROMPT, SCHEDULERS, make_scheduler
from opensora.text import TextEncoder

TOKENIZER = os.path.join(os.path.dirname(__file__), "data", "tiny_text")
TEXT_WIDTH = 16
SMALL = dict(num_frames=5, height=32, width=32, num_inference_steps=2)  # latents (B, 4, 2, 4, 4)


def make_text_encoder_folder(folder, seed: int = 0) -> str:
    """A tiny random T5 encoder (D = 16) with the shipped test tokenizer, saved as a local model folder."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=256, d_model=TEXT_WIDTH, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(folder)
    for name in os.listdir(TOKENIZER):
        if name.endswith(".json"):
            shutil.copy(os.path.join(TOKENIZER, name), folder)
    return str(folder)


def make_transformer(seed: int = 0, **overrides) -> OpenSoraT2V:
    """A tiny random OpenSoraT2V: 4 latent channels, 16-wide captions, Skiparse k = 2 in the middle block."""
    fields = dict(num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24, in_channels=4,
                  out_channels=4, caption_channels=TEXT_WIDTH, num_layers=3, sparse_n=2, dense_blocks=(0, 2))
    fields.update(overrides)
    torch.manual_seed(seed)
    model = OpenSoraT2V(**fields).eval()
    with torch.no_grad():  # the zero-initialised output layers would make every prediction 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_pipeline_folder(folder) -> str:
    """``folder/{transformer,vae,text_encoder}``: the layout ``opensora-sample --model`` accepts."""
    make_transformer().save_pretrained(os.path.join(folder, "transformer"))
    make_tiny_vae().save_pretrained(os.path.join(folder, "vae"))
    make_text_encoder_folder(os.path.join(folder, "text_encoder"))
    return str(folder)



@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    return TextEncoder.from_pretrained(make_text_encoder_folder(tmp_path_factory.mktemp("te")), max_length=12)


@pytest.fixture(scope="module")
def pipe(text_encoder):
    return OpenSoraPipeline(make_transformer(), make_tiny_vae(), text_encoder, make_scheduler())


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Recorder(torch.nn.Module):
    """Wraps a denoiser and records the batch sizes and captions of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, []

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask=None, **kw):
        self.calls.append((hidden_states.shape[0], timestep.clone(), encoder_hidden_states.clone(),
                           encoder_attention_mask.clone()))
        return self.model(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, **kw)


def test_shapes_and_decoding(pipe):
    prompts = ["a cat", "a dog runs"]
    video = pipe(prompts, num_samples=2, generator=_gen(3), progress=False, **SMALL)
    assert video.shape == (4, 3, 5, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0
    latents = pipe(prompts, num_samples=2, generator=_gen(3), output_type="latents", progress=False, **SMALL)
    assert latents.shape == (4, 4, 2, 4, 4) and latents.dtype == torch.float32
    torch.testing.assert_close(pipe.decode(latents), video)
    # the VAE sees z / scale + shift (the release's WF-VAE wrapper): decoding by hand gives the same frames
    vae = pipe.vae
    scale = vae.config.latent_stat("scale").view(1, -1, 1, 1, 1)
    shift = vae.config.latent_stat("shift").view(1, -1, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(latents[:1] / scale + shift).clamp(-1, 1), video[:1])
    torch.testing.assert_close(decode_latents(vae, latents[:1], latent_chunk=1), video[:1], atol=1e-4, rtol=0)
    image = pipe("a cat", generator=_gen(), progress=False, **{**SMALL, "num_frames": 1})
    assert image.shape == (1, 3, 1, 32, 32)


def test_same_seed_same_video_different_seed_differs(text_encoder):
    pipe = OpenSoraPipeline(make_transformer(), make_tiny_vae(), text_encoder, make_scheduler())  # a fresh scheduler
    a = pipe("a cat", generator=_gen(1), output_type="latents", progress=False, **SMALL)
    b = pipe("a cat", generator=_gen(1), output_type="latents", progress=False, **SMALL)
    c = pipe("a cat", generator=_gen(2), output_type="latents", progress=False, **SMALL)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # starting noise passed explicitly = the noise the generator draws (the generator then drives the steps)
    gen = _gen(1)
    noise = torch.randn(1, 4, 2, 4, 4, generator=gen)
    d = pipe("a cat", latents=noise, generator=gen, output_type="latents", progress=False, **SMALL)
    assert torch.equal(a, d)


def test_guidance_batches_negative_then_positive(text_encoder):
    rec = Recorder(make_transformer())
    pipe = OpenSoraPipeline(rec, make_tiny_vae(), text_encoder, make_scheduler())
    guided = pipe(["a cat", "a dog"], num_samples=2, generator=_gen(), output_type="latents", progress=False,
                  guidance_scale=7.5, **{**SMALL, "num_inference_steps": 1})
    batch, timestep, embeds, mask = rec.calls[-1]
    assert batch == 8 and embeds.shape[:2] == (8, 1) and mask.shape[:2] == (8, 1)
    neg, _ = text_encoder.encode([NEGATIVE_PROMPT])
    pos, _ = text_encoder.encode(["a cat", "a dog"])
    torch.testing.assert_close(embeds[:4, 0], neg.expand(4, -1, -1))  # uncond half: the release negative prompt
    torch.testing.assert_close(embeds[4:, 0], pos.repeat_interleave(2, dim=0))  # cond half, prompt-major
    assert timestep.tolist() == [999.0] * 8
    unguided = pipe(["a cat", "a dog"], num_samples=2, generator=_gen(), output_type="latents", progress=False,
                    guidance_scale=1.0, **{**SMALL, "num_inference_steps": 1})
    assert rec.calls[-1][0] == 4
    assert not torch.allclose(guided, unguided)
    other_negative = pipe(["a cat", "a dog"], negative_prompt="blurry", num_samples=2, generator=_gen(),
                          output_type="latents", progress=False, **{**SMALL, "num_inference_steps": 1})
    assert not torch.allclose(guided, other_negative)  # the uncond path is used


def test_guidance_rescale():
    torch.manual_seed(0)
    cond, guided = torch.randn(2, 4, 2, 3, 3), 5 * torch.randn(2, 4, 2, 3, 3)
    full = rescale_guidance(guided, cond, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3, 4)), cond.std(dim=(1, 2, 3, 4)))
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.0), guided)


def test_callback_and_schedulers(pipe):
    seen = []
    pipe("a cat", generator=_gen(), output_type="latents", progress=False, callback=lambda i, t, z: seen.append(i),
         **{**SMALL, "num_inference_steps": 3})
    assert seen == [0, 1, 2]
    original = pipe.scheduler
    try:
        for name in SCHEDULERS:
            pipe.scheduler = make_scheduler(name)
            z = pipe("a cat", generator=_gen(), output_type="latents", progress=False, **SMALL)
            assert torch.isfinite(z).all(), name
    finally:
        pipe.scheduler = original


def test_cpu_offload_gives_the_same_result(text_encoder):
    pipe = OpenSoraPipeline(make_transformer(), make_tiny_vae(), text_encoder, make_scheduler())
    ref = pipe("a cat", generator=_gen(), progress=False, **SMALL)
    pipe.enable_cpu_offload("cpu")
    assert pipe.device == torch.device("cpu") and text_encoder.cpu_offload
    try:
        torch.testing.assert_close(pipe("a cat", generator=_gen(), progress=False, **SMALL), ref)
    finally:
        pipe.to("cpu")
    assert not text_encoder.cpu_offload


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=6), "num_frames must be 4n"),
    (dict(height=40), "height must be a positive multiple of 16"),
    (dict(width=8), "width must be a positive multiple of 16"),
    (dict(output_type="pil"), "output_type"),
    (dict(latents=torch.zeros(1, 4, 3, 4, 4)), "latents must have shape"),
])
def test_bad_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe("a cat", progress=False, **{**SMALL, **kwargs})
    with pytest.raises(ValueError, match="non-empty"):
        pipe(["a cat", " "], progress=False, **SMALL)
    with pytest.raises(ValueError, match="negative prompts"):
        pipe(["a", "b"], negative_prompt=["x"], progress=False, **SMALL)


def test_mismatched_components_are_refused(text_encoder):
    with pytest.raises(ValueError, match="latent_dim"):
        OpenSoraPipeline(make_transformer(in_channels=8, out_channels=8), make_tiny_vae(), text_encoder,
                         make_scheduler())
    with pytest.raises(ValueError, match="captions"):
        OpenSoraPipeline(make_transformer(caption_channels=32), make_tiny_vae(), text_encoder, make_scheduler())
