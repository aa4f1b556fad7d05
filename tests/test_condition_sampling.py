"""Sampling with condition controllers: frame selection, condition encoding, wrappers in the T2V pipeline."""
import os
import shutil

import pytest
import torch

from conftest import DATA, make_tiny_vae
from opensora.pipelines.conditions import (ConditionError, OpenSoraControlPipeline, OpenSoraImageToVideoPipeline,
                                         build_image_condition, control_frame_mask, encode_image_condition,
                                         read_control)
from opensora.pipelines.control_signals import canny
from opensora.pipelines.masks import MaskType
from opensora.models import OpenSoraInpaint, OpenSoraT2V, StructureController
from opensora.pipelines.text_to_video import OpenSoraPipeline, load_text_encoder
from opensora.pipelines.schedulers import make_scheduler
from wfvae.io.video import VideoWriter, write_image



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
    """(tokenizer, encoder) of a tiny random T5."""
    return load_text_encoder(make_text_encoder_folder(tmp_path_factory.mktemp("te")))


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
    expected = vae.scale_latents(vae.encode(cond.video[None]).latent_dist.mode())  # generated frames are black (-1)
    assert torch.allclose(masked, expected, atol=1e-6)
    noisy, _ = encode_image_condition(vae, cond, noise_strength=0.5, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy[:, :, 0], masked[:, :, 0])


# ------------------------------------------------------------------------------------------ condition pipelines
def make(cls, model, vae, text_encoder, **kw):
    pipe = cls(*text_encoder, model, vae, make_scheduler(), sampling={"max_length": 8, "raw_prompt": True}, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed=0, **conditions):
    return pipe("a cat", num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=4.0,
                generator=torch.Generator().manual_seed(seed), output_type="latent", **conditions).frames


def test_fresh_inpaint_model_samples_like_t2v(vae, text_encoder):
    """from_t2v + any image condition samples exactly what the text-to-video model samples (zero projections)."""
    t2v = make_t2v()
    expected = run(make(OpenSoraPipeline, t2v, vae, text_encoder))
    got = run(make(OpenSoraImageToVideoPipeline, OpenSoraInpaint.from_t2v(t2v), vae, text_encoder), image=clip(1))
    assert torch.equal(got, expected)


def test_inpaint_and_controller_in_pipeline(vae, text_encoder):
    inpaint = make_inpaint()
    i2v = make(OpenSoraImageToVideoPipeline, inpaint, vae, text_encoder)
    video = clip(9)
    conditioned = run(i2v, video=video)
    assert i2v.image_condition.mask_type is MaskType.continuation
    assert not torch.equal(conditioned, run(i2v, image=clip(1, seed=5)))
    # a fresh structure controller on top changes nothing; a trained one (random projectors) does
    controller = StructureController.for_base(inpaint, **CONTROLLER)
    control = canny(clip(9))
    pipe = make(OpenSoraControlPipeline, inpaint, vae, text_encoder, controller=controller)
    assert torch.equal(run(pipe, video=video, control=control), conditioned)
    with torch.no_grad():
        for p in controller.projectors.parameters():
            p.normal_(0, 0.1)
    assert not torch.equal(run(pipe, video=video, control=control), conditioned)
    assert torch.equal(run(pipe, video=video), conditioned)  # no control: the base model
    with pytest.raises(ConditionError, match="control"):
        run(pipe, video=video, control=canny(clip(5)))
    with pytest.raises(ConditionError, match="image-condition model"):
        run(make(OpenSoraImageToVideoPipeline, make_t2v(), vae, text_encoder), image=clip(1))


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


# ---------------------------------------------------------------------------------------------- opensora-sample
@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, vae):
    """Folders: an image-condition model, a text-to-video model, a VAE, a text encoder, a structure controller,
    and condition media (a PNG, a second PNG, a 9-frame clip)."""
    root = tmp_path_factory.mktemp("cli")
    inpaint = make_inpaint()
    inpaint.save_pretrained(str(root / "inpaint"))
    make_t2v().save_pretrained(str(root / "t2v"))
    vae.save_pretrained(str(root / "vae"))
    make_text_encoder_folder(root / "text")
    controller = StructureController.for_base(inpaint, **CONTROLLER)
    with torch.no_grad():
        for p in controller.projectors.parameters():
            p.normal_(0, 0.1)
    controller.save_pretrained(str(root / "controller"))
    video = -torch.ones(3, 9, 40, 40)
    for t in range(9):
        video[:, t, 8:28, 6 + t:26 + t] = 1.0
    write_video(root / "clip.mp4", video)
    write_image(root / "first.png", video[:, :1])
    write_image(root / "last.png", video[:, -1:])
    return root


def sample(root, tmp_path, *extra, model="inpaint", output="out.mp4"):
    from opensora.cli.sample import main

    argv = ["--prompt", "a square", "--model", str(root / model), "--vae", str(root / "vae"), "--text-encoder",
            str(root / "text"), "--frames", "9", "--height", "32", "--width", "32", "--steps", "2", "--device",
            "cpu", "--quiet", "--max-length", "8", "--output", str(tmp_path / output), *map(str, extra)]
    return main(argv)


def read_frames(path):
    from wfvae.io.video import read_video

    return read_video(path)


@pytest.mark.parametrize("case", ["i2v", "transition", "continuation"])
def test_cli_image_conditions(cli_models, tmp_path, capsys, case):
    root = cli_models
    extra = {"i2v": ["--image", root / "first.png"],
             "transition": ["--image", root / "first.png", "--image", root / "last.png"],
             "continuation": ["--video", root / "clip.mp4", "--noise-strength", "0.01"]}[case]
    assert sample(root, tmp_path, *extra) == 0
    err = capsys.readouterr().err
    assert f"image condition: {case}" in err
    assert read_frames(tmp_path / "out.mp4").shape == (3, 9, 32, 32)


def test_cli_canny_control(cli_models, tmp_path, capsys):
    root = cli_models
    assert sample(root, tmp_path, "--image", root / "first.png", "--controller", root / "controller", "--control",
                  "canny", "--control-video", root / "clip.mp4", "--control-frames", "0,1,2,3,4",
                  "--control-strength", "0.5", "--save-control", tmp_path / "edges.mp4") == 0
    err = capsys.readouterr().err
    assert "structure control: canny on frames [0, 1, 2, 3, 4]" in err
    edges = read_frames(tmp_path / "edges.mp4")
    assert edges.shape == (3, 9, 32, 32) and (edges > 0.5).any() and (edges < -0.5).any()
    assert read_frames(tmp_path / "out.mp4").shape == (3, 9, 32, 32)


@pytest.mark.parametrize("extra, message", [
    (["--image", "{root}/first.png"], "need an image-condition model"),
    (["--control", "canny"], "needs --controller"),
])
def test_cli_errors_with_t2v_model(cli_models, tmp_path, capsys, extra, message):
    extra = [e.format(root=cli_models) for e in extra]
    assert sample(cli_models, tmp_path, *extra, model="t2v") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


@pytest.mark.parametrize("extra, message", [
    (["--image", "{root}/first.png", "--cond-frames", "12"], "outside the 9-frame output"),
    (["--image", "{root}/first.png", "--video", "{root}/clip.mp4"], "not both"),
    (["--controller", "{root}/controller", "--control", "canny", "--control-video", "{root}/first.png"],
     "has 1 frames, 9 needed"),
    (["--controller", "{root}/controller", "--control", "canny"], "--control-video"),
])
def test_cli_condition_errors(cli_models, tmp_path, capsys, extra, message):
    extra = [e.format(root=cli_models) for e in extra]
    assert sample(cli_models, tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "out.mp4").exists()
