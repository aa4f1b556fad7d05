"""OpenSoraPipeline on the CPU with tiny random models: shapes, guidance, determinism, templates, callbacks, checks.

The builders at the top are shared with tests/test_sample_cli.py.
"""
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import make_tiny_vae
from opensora.models import OpenSoraT2V
from opensora.pipelines.text_to_video import OpenSoraPipeline, load_text_encoder, rescale_guidance
from opensora.pipelines.schedulers import NEGATIVE_PROMPT, POSITIVE_PROMPT_TEMPLATE, SCHEDULERS, make_scheduler

TOKENIZER = os.path.join(os.path.dirname(__file__), "data", "tiny_text")
TEXT_WIDTH = 16
SMALL = dict(num_frames=5, height=32, width=32, num_inference_steps=2)  # latents (B, 4, 2, 4, 4)
RAW = {"max_length": 12, "raw_prompt": True, "negative_prompt": NEGATIVE_PROMPT}


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
def text_parts(tmp_path_factory):
    """(tokenizer, encoder) of a tiny random T5."""
    return load_text_encoder(make_text_encoder_folder(tmp_path_factory.mktemp("te")))


def make_pipe(text_parts, transformer=None, sampling=RAW, **kw):
    tokenizer, encoder = text_parts
    pipe = OpenSoraPipeline(tokenizer, encoder, transformer or make_transformer(), make_tiny_vae(), make_scheduler(),
                            sampling=sampling, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(text_parts):
    return make_pipe(text_parts)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def latents_of(pipe, prompt, **kw):
    return pipe(prompt, output_type="latent", **{**SMALL, **kw}).frames


class Recorder(torch.nn.Module):
    """Wraps a denoiser and records the batch sizes and captions of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, []

    @property
    def dtype(self):
        return self.model.dtype

    @property
    def device(self):
        return self.model.device

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask=None, **kw):
        self.calls.append((hidden_states.shape[0], timestep.clone(), encoder_hidden_states.clone(),
                           encoder_attention_mask.clone()))
        return self.model(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, **kw)


def test_shapes_and_decoding(pipe):
    prompts = ["a cat", "a dog runs"]
    frames = pipe(prompts, num_videos_per_prompt=2, generator=_gen(3), **SMALL).frames
    assert frames.shape == (4, 5, 32, 32, 3) and frames.dtype == np.float32
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0
    latents = latents_of(pipe, prompts, num_videos_per_prompt=2, generator=_gen(3))
    assert latents.shape == (4, 4, 2, 4, 4) and latents.dtype == torch.float32
    video = pipe.decode_latents(latents)  # (B, 3, T, H, W) in [-1, 1]
    np.testing.assert_allclose(frames, (video.permute(0, 2, 3, 4, 1).numpy() + 1) / 2, atol=1e-6)
    # the VAE sees z / scale + shift (the release's WF-VAE wrapper): decoding by hand gives the same frames
    vae = pipe.vae
    scale = vae.latent_stat("scale").view(1, -1, 1, 1, 1)
    shift = vae.latent_stat("shift").view(1, -1, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(latents[:1] / scale + shift).sample.clamp(-1, 1), video[:1])
    pt = pipe("a cat", generator=_gen(), output_type="pt", **SMALL).frames
    assert pt.shape == (1, 5, 3, 32, 32) and 0 <= float(pt.min()) and float(pt.max()) <= 1
    pil = pipe("a cat", generator=_gen(), output_type="pil", **SMALL).frames
    assert len(pil) == 1 and len(pil[0]) == 5 and pil[0][0].size == (32, 32)
    image = pipe("a cat", generator=_gen(), return_dict=False, **{**SMALL, "num_frames": 1})[0]
    assert image.shape == (1, 1, 32, 32, 3)


def test_same_seed_same_video_different_seed_differs(text_parts):
    pipe = make_pipe(text_parts)  # a fresh scheduler
    a = latents_of(pipe, "a cat", generator=_gen(1))
    b = latents_of(pipe, "a cat", generator=_gen(1))
    c = latents_of(pipe, "a cat", generator=_gen(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # starting noise passed explicitly = the noise the generator draws (the generator then drives the steps)
    gen = _gen(1)
    noise = torch.randn(1, 4, 2, 4, 4, generator=gen)
    assert torch.equal(a, latents_of(pipe, "a cat", latents=noise, generator=gen))


def test_guidance_batches_negative_then_positive(text_parts):
    rec = Recorder(make_transformer())
    pipe = make_pipe(text_parts, rec)
    one = {**SMALL, "num_inference_steps": 1}
    guided = pipe(["a cat", "a dog"], num_videos_per_prompt=2, generator=_gen(), output_type="latent",
                  guidance_scale=7.5, **one).frames
    batch, timestep, embeds, mask = rec.calls[-1]
    assert batch == 8 and embeds.shape[:2] == (8, 1) and mask.shape[:2] == (8, 1)
    neg, neg_mask = pipe.encode_text([NEGATIVE_PROMPT])
    pos, pos_mask = pipe.encode_text(["a cat", "a dog"])
    torch.testing.assert_close(embeds[:4, 0], neg.expand(4, -1, -1))  # uncond half: the release negative prompt
    torch.testing.assert_close(embeds[4:, 0], pos.repeat_interleave(2, dim=0))  # cond half, prompt-major
    assert timestep.tolist() == [999.0] * 8
    unguided = pipe(["a cat", "a dog"], num_videos_per_prompt=2, generator=_gen(), output_type="latent",
                    guidance_scale=1.0, **one).frames
    assert rec.calls[-1][0] == 4
    assert not torch.allclose(guided, unguided)
    other_negative = pipe(["a cat", "a dog"], negative_prompt="blurry", num_videos_per_prompt=2, generator=_gen(),
                          output_type="latent", guidance_scale=7.5, **one).frames
    assert not torch.allclose(guided, other_negative)  # the uncond path is used
    # precomputed embeddings give the same result as the prompts they came from
    from_embeds = pipe(prompt_embeds=pos, negative_prompt_embeds=neg.expand(2, -1, -1), prompt_attention_mask=pos_mask,
                       negative_prompt_attention_mask=neg_mask.expand(2, -1), num_videos_per_prompt=2,
                       generator=_gen(), output_type="latent", guidance_scale=7.5, **one).frames
    torch.testing.assert_close(from_embeds, guided)


def test_template_applied_by_the_pipeline_unless_raw(text_parts):
    rec = Recorder(make_transformer())
    pipe = make_pipe(text_parts, rec, sampling={"max_length": 12})  # release settings: template on
    pipe("a cat", generator=_gen(), output_type="latent", guidance_scale=1.0, **{**SMALL, "num_inference_steps": 1})
    wrapped, _ = pipe.encode_text([POSITIVE_PROMPT_TEMPLATE.format("a cat")])
    torch.testing.assert_close(rec.calls[-1][2][:, 0], wrapped)
    pipe("a cat", generator=_gen(), output_type="latent", guidance_scale=1.0, raw_prompt=True,
         **{**SMALL, "num_inference_steps": 1})
    torch.testing.assert_close(rec.calls[-1][2][:, 0], pipe.encode_text(["a cat"])[0])
    assert pipe.prompt_texts(["x"]) == [POSITIVE_PROMPT_TEMPLATE.format("x")]


def test_guidance_rescale():
    torch.manual_seed(0)
    cond, guided = torch.randn(2, 4, 2, 3, 3), 5 * torch.randn(2, 4, 2, 3, 3)
    full = rescale_guidance(guided, cond, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3, 4)), cond.std(dim=(1, 2, 3, 4)))
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.0), guided)


def test_callback_on_step_end_and_schedulers(pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, sorted(tensors)))
        return {"latents": tensors["latents"] * 0} if i == 2 else {}

    out = latents_of(pipe, "a cat", generator=_gen(), callback_on_step_end=callback,
                     callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], num_inference_steps=3)
    assert seen == [(i, ["latents", "prompt_embeds"]) for i in range(3)] and not out.any()
    assert pipe.num_timesteps == 3
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        latents_of(pipe, "a cat", callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])
    original = pipe.scheduler
    try:
        for name in SCHEDULERS:
            pipe.scheduler = make_scheduler(name)
            assert torch.isfinite(latents_of(pipe, "a cat", generator=_gen())).all(), name
    finally:
        pipe.scheduler = original


def test_settings_fill_unset_arguments(text_parts):
    pipe = make_pipe(text_parts, sampling={**RAW, "num_frames": 1, "height": 16, "width": 48, "steps": 1})
    assert pipe("a cat", generator=_gen()).frames.shape == (1, 1, 16, 48, 3)
    assert pipe.defaults["num_inference_steps"] == 1 and pipe.settings["fps"] == 18.0  # the release's
    assert pipe("a cat", generator=_gen(), num_frames=5, height=32).frames.shape == (1, 5, 32, 48, 3)
    with pytest.raises(ValueError, match="sampling steps must be int"):
        make_pipe(text_parts, sampling={"steps": "4"})


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=6), "num_frames must be 4n"),
    (dict(height=40), "height must be a positive multiple of 16"),
    (dict(width=8), "width must be a positive multiple of 16"),
    (dict(output_type="video"), "output_type"),
    (dict(latents=torch.zeros(1, 4, 3, 4, 4)), "latents must have shape"),
    (dict(num_videos_per_prompt=0), "num_videos_per_prompt"),
])
def test_bad_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe("a cat", **{**SMALL, **kwargs})
    with pytest.raises(ValueError, match="non-empty"):
        pipe(["a cat", " "], **SMALL)
    with pytest.raises(ValueError, match="negative prompts"):
        pipe(["a", "b"], negative_prompt=["x"], **SMALL)
    with pytest.raises(ValueError, match="prompt or prompt_embeds"):
        pipe(**SMALL)


def test_mismatched_components_are_refused(text_parts):
    with pytest.raises(ValueError, match="latent_dim"):
        make_pipe(text_parts, make_transformer(in_channels=8, out_channels=8))
    with pytest.raises(ValueError, match="captions"):
        make_pipe(text_parts, make_transformer(caption_channels=32))
