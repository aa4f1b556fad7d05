"""Sampling with condition controllers: frame selection, condition encoding, wrappers in the T2V pipeline."""
import os
import shutil

import pytest
import torch

from conftest import DATA, make_tiny_vae
from opensora.condition_pipeline import (ConditionError, InpaintConditioned, attach_controller, build_image_condition,
                                         control_frame_mask, encode_image_condition, read_control)
from opensora.control import canny
from opensora.masks import MaskType
from opensora.models import OpenSoraInpaint, OpenSoraT2V, StructureController
from opensora.pipeline import OpenSoraPipeline
from opensora.schedulers import make_scheduler
from opensora.text import TextEncoder
from wfvae.video_io import VideoWriter, write_image

TEXT_WIDTH = 16
MODEL = dict(num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24, in_channels=4, out_channels=4,
             caption_channels=TEXT_WIDTH, num_layers=3, sparse_n=2, dense_blocks=(0, 2))
CONTROLLER = dict(num_layers=1, latent_channels=4, downsampler_channels=(4, 4, 4, 4))


def perturbed(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def make_t2v(seed=0):
    torch.manual_seed(seed)
    return perturbed(OpenSoraT2V(**MODEL), seed)


def make_inpaint(seed=0):
    torch.manual_seed(seed)
    return perturbed(OpenSoraInpaint(**MODEL, vae_scale_factor_t=4), seed)


def make_text_encoder_folder(folder, seed=0):
    """A tiny random T5 encoder (D = 16) with the shipped test tokenizer (tests/data/tiny_text)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=256, d_model=TEXT_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(folder)
    tokenizer = os.path.join(DATA, "tiny_text")
    for name in os.listdir(tokenizer):
        if name.endswith(".json"):
            shutil.copy(os.path.join(tokenizer, name), folder)
    return str(folder)


def clip(frames, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, frames, size, size, generator=g) * 2 - 1


def write_video(path, video, fps=8):
    with VideoWriter(path, fps=fps, lossless=True) as writer:
        writer.write(video)
    return str(path)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    return TextEncoder.from_pretrained(make_text_encoder_folder(tmp_path_factory.mktemp("te")), max_length=8)


@pytest.fixture(scope="module")
def vae():
    return make_tiny_vae()


# ---------------------------------------------------------------------------------------------- frame selection
def test_default_frame_selection():
    one = build_image_condition([clip(1)], False, 9)
    assert one.mask_type is MaskType.i2v and one.indices == [0]
    assert one.frame_mask.tolist() == [0] + [1] * 8
    assert torch.equal(one.video[:, 0], clip(1)[:, 0]) and (one.video[:, 1:] == -1).all()
    two = build_image_condition([clip(1, seed=1), clip(1, seed=2)], False, 9)
    assert two.mask_type is MaskType.transition and two.indices == [0, 8]
    assert torch.equal(two.video[:, 8], clip(1, seed=2)[:, 0])
    video = clip(9)
    cont = build_image_condition([video], True, 9)
    assert cont.mask_type is MaskType.continuation and cont.indices == [0, 1, 2, 3, 4]
    assert torch.equal(cont.video[:, :5], video[:, :5])
    assert build_image_condition([video], True, 17).indices == list(range(9))  # 17 frames: first 9 kept
    assert build_image_condition([], False, 9, size=(32, 32)).mask_type is MaskType.t2iv


def test_explicit_frames_and_mask_types():
    three = [clip(1, seed=i) for i in range(3)]
    cond = build_image_condition(three, False, 9, cond_frames=[0, 4, -1])
    assert cond.mask_type is MaskType.random_temporal and cond.indices == [0, 4, 8]
    assert torch.equal(cond.video[:, 4], three[1][:, 0])
    with pytest.raises(ConditionError, match="--cond-frames"):
        build_image_condition(three, False, 9)
    with pytest.raises(ConditionError, match="outside"):
        build_image_condition([clip(1)], False, 9, cond_frames=[9])
    with pytest.raises(ConditionError, match="one index per image"):
        build_image_condition([clip(1)], False, 9, mask_type="transition")
    with pytest.raises(ConditionError, match="repeat"):
        build_image_condition(three[:2], False, 9, cond_frames=[0, -9])
    with pytest.raises(ConditionError, match="unknown mask type"):
        build_image_condition([clip(1)], False, 9, mask_type="sideways")
    video = clip(9)
    assert build_image_condition([video], True, 9, mask_type="clear").frame_mask.sum() == 0
    assert build_image_condition([video], True, 9, mask_type="i2v").indices == [0]
    picked = build_image_condition([video], True, 9, mask_type="random_temporal",
                                   generator=torch.Generator().manual_seed(0)).indices
    assert len(picked) in (4, 5)
    with pytest.raises(ConditionError, match="has 5 frames"):
        build_image_condition([clip(5)], True, 9, mask_type="transition")


def test_control_frame_mask():
    assert control_frame_mask(5, None).tolist() == [1, 1, 1, 1, 1]
    assert control_frame_mask(5, [0, -1]).tolist() == [1, 0, 0, 0, 1]
    with pytest.raises(ConditionError):
        control_frame_mask(5, [5])


# ---------------------------------------------------------------------------------------------- encoding
def test_encode_image_condition(vae):
    cond = build_image_condition([clip(1)], False, 9)
    masked, mask = encode_image_condition(vae, cond)
    assert masked.shape == (1, 4, 3, 4, 4) and mask.shape == (1, 4, 3, 4, 4)
    assert (mask[:, :, 0] == 0).all() and (mask[:, :, 1:] == 1).all()
    expected = vae.scale_latents(vae.encode(cond.video[None]).mode())  # generated frames are black (-1)
    assert torch.allclose(masked, expected, atol=1e-6)
    noisy, _ = encode_image_condition(vae, cond, noise_strength=0.5, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy[:, :, 0], masked[:, :, 0])


# ---------------------------------------------------------------------------------------------- wrappers in the pipeline
def run(pipe, seed=0):
    return pipe("a cat", num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=4.0,
                generator=torch.Generator().manual_seed(seed), output_type="latents", progress=False)


def test_fresh_inpaint_model_samples_like_t2v(vae, text_encoder):
    """from_t2v + any image condition samples exactly what the text-to-video model samples (zero projections)."""
    t2v = make_t2v()
    expected = run(OpenSoraPipeline(t2v, vae, text_encoder, make_scheduler()))
    masked, mask = encode_image_condition(vae, build_image_condition([clip(1)], False, 9))
    model = InpaintConditioned(OpenSoraInpaint.from_t2v(t2v), masked, mask)
    got = run(OpenSoraPipeline(model, vae, text_encoder, make_scheduler()))
    assert torch.equal(got, expected)


def test_inpaint_and_controller_in_pipeline(vae, text_encoder):
    inpaint = make_inpaint()
    masked, mask = encode_image_condition(vae, build_image_condition([clip(9)], True, 9))
    conditioned = run(OpenSoraPipeline(InpaintConditioned(inpaint, masked, mask), vae, text_encoder,
                                       make_scheduler()))
    other_mask = build_image_condition([clip(1, seed=5)], False, 9)
    masked2, mask2 = encode_image_condition(vae, other_mask)
    assert not torch.equal(conditioned, run(OpenSoraPipeline(InpaintConditioned(inpaint, masked2, mask2), vae,
                                                             text_encoder, make_scheduler())))
    # a fresh structure controller on top changes nothing; a trained one (random projectors) does
    controller = StructureController.for_base(inpaint, **CONTROLLER)
    control = canny(clip(9))
    model = InpaintConditioned(attach_controller(inpaint, controller, control), masked, mask)
    assert torch.equal(run(OpenSoraPipeline(model, vae, text_encoder, make_scheduler())), conditioned)
    with torch.no_grad():
        for p in controller.projectors.parameters():
            p.normal_(0, 0.1)
    assert not torch.equal(run(OpenSoraPipeline(model, vae, text_encoder, make_scheduler())), conditioned)


def test_read_control(tmp_path):
    video = torch.zeros(3, 5, 40, 48)
    video[:, :, 10:30, 12:36] = 1
    path = write_video(tmp_path / "src.mp4", video * 2 - 1)
    control, mask = read_control(path, "canny", 5, 32, 32)
    assert control.shape == (3, 5, 32, 32) and mask.tolist() == [1] * 5
    assert (control > 0).any()
    control, mask = read_control(path, "canny", 9, 32, 32, control_frames=[0, 4])  # later frames repeat the last
    assert control.shape == (3, 9, 32, 32) and mask.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ConditionError, match="has 5 frames, 9 needed"):
        read_control(path, "canny", 9, 32, 32)
    still = tmp_path / "depth.png"
    write_image(still, video[:, :1] * 2 - 1)
    depth, _ = read_control(str(still), "depth", 1, 32, 32)
    assert depth.min() == -1 and depth.max() == 1
