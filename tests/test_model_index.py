"""model_index.json (shared parts, package-held text encoders, sampling defaults), the pipeline loader, the CLI
defaults it drives, caption dropout on cached features and the latent-cache command."""
import json
import os

import pytest
import torch

from conftest import DATA, make_tiny_vae
import opensora.cli.sample as cli
from opensora.pipelines.defaults import is_diffusers_index, part_folder, read_index, resolve_location, sampling_defaults
from opensora.pipelines.text_to_video import OpenSoraPipeline
from opensora.training.denoiser import DenoiserTraining
from opensora.training.offline import main as training_main
from test_pipeline import make_text_encoder_folder, make_transformer
from wfvae.io.video import VideoReader

ROOT = os.path.join(os.path.dirname(__file__), "..")
SAMPLING = {"num_frames": 5, "height": 32, "width": 48, "steps": 2, "guidance": 3.0, "fps": 6, "max_length": 12,
            "negative_prompt": "", "raw_prompt": True}


@pytest.fixture(scope="module")
def shared_model(tmp_path_factory):
    """models/t2v (transformer/ + model_index.json) with its VAE and text encoder in sibling folders."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_vae().save_pretrained(str(root / "vae-elsewhere"))
    make_text_encoder_folder(str(root / "text-elsewhere"))
    make_transformer().save_pretrained(str(root / "t2v" / "transformer"))
    index = {"transformer": "transformer", "vae": "../vae-elsewhere", "text_encoder": "../text-elsewhere",
             "sampling": SAMPLING}
    (root / "t2v" / "model_index.json").write_text(json.dumps(index))
    return str(root / "t2v")


def test_parts_from_index_subfolders_and_packages(shared_model, tmp_path):
    assert part_folder(shared_model, "vae") == os.path.normpath(os.path.join(shared_model, "..", "vae-elsewhere"))
    assert part_folder(shared_model, "transformer") == os.path.join(shared_model, "transformer")
    (tmp_path / "vae").mkdir()
    assert part_folder(str(tmp_path), "vae") == str(tmp_path / "vae")  # no index: the subfolder
    assert part_folder(str(tmp_path), "text_encoder") is None and read_index(str(tmp_path)) == {}
    json_dir = os.path.dirname(json.__file__)
    index = {"text_encoder": {"python_package": "json", "subfolder": ""}}
    assert os.path.samefile(part_folder(str(tmp_path), "text_encoder", index), json_dir)
    assert os.path.samefile(resolve_location("package:json"), json_dir)
    assert resolve_location("some/folder") == "some/folder"
    with pytest.raises(FileNotFoundError, match="pip install no-such-pkg"):
        part_folder(str(tmp_path), "text_encoder", {"text_encoder": {"python_package": "no_such_pkg"}})
    with pytest.raises(ValueError, match="a path or an object"):
        part_folder(str(tmp_path), "vae", {"vae": 3})


def test_sampling_defaults_are_type_checked(tmp_path):
    assert sampling_defaults(str(tmp_path)) == {}
    (tmp_path / "model_index.json").write_text(json.dumps({"sampling": {"steps": 4, "guidance": 2}}))
    assert sampling_defaults(str(tmp_path)) == {"steps": 4, "guidance": 2.0}
    for bad, match in [({"steps": "4"}, "steps must be int"), ({"stepz": 4}, "unknown sampling key"),
                       ({"raw_prompt": 1}, "raw_prompt must be bool"), ({"steps": True}, "steps must be int")]:
        (tmp_path / "model_index.json").write_text(json.dumps({"sampling": bad}))
        with pytest.raises(ValueError, match=match):
            sampling_defaults(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        read_index(str(tmp_path))


def test_pipeline_from_pretrained_uses_the_index(shared_model):
    pipe = OpenSoraPipeline.from_pretrained(shared_model)
    assert pipe.settings["max_length"] == 12 and pipe.settings["fps"] == 6.0
    assert pipe.defaults == {"num_frames": 5, "height": 32, "width": 48, "num_inference_steps": 2,
                             "guidance_scale": 3.0, "negative_prompt": ""}
    frames = pipe("a red ball", generator=torch.Generator().manual_seed(0)).frames  # the settings fill the rest
    assert frames.shape == (1, 5, 32, 48, 3)
    assert pipe.encode_text(["a red ball"])[0].shape == (1, 12, 16)


def test_diffusers_index_parts_and_text_encoder_location(shared_model, tmp_path):
    """A diffusers index: parts in subfolders, the text encoder at ``text_encoder_location`` (relative or in a
    package); part_folder and the CLI follow it."""
    index = {"_class_name": "OpenSoraPipeline", "vae": ["wfvae", "WFVAE"], "text_encoder": [None, None],
             "text_encoder_location": "../text-elsewhere"}
    assert is_diffusers_index(index) and not is_diffusers_index(read_index(shared_model))
    assert part_folder(shared_model, "text_encoder", index) == os.path.normpath(
        os.path.join(shared_model, "..", "text-elsewhere"))
    assert part_folder(shared_model, "vae", index) is None  # no vae/ subfolder there
    assert os.path.samefile(part_folder(str(tmp_path), "text_encoder", {"text_encoder_location": "package:json"}),
                            os.path.dirname(json.__file__))


def test_cli_takes_the_model_defaults_and_flags_win(shared_model, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    assert cli.main(["--prompt", "a red ball", "--model", shared_model, "--output", str(out), "--quiet",
                     "--device", "cpu", "--save-latents", str(tmp_path / "z.safetensors")]) == 0
    r = VideoReader(str(out))
    assert (r.num_frames, r.size, r.fps) == (5, (32, 48), 6.0)
    _, meta = cli.load_latents(str(tmp_path / "z.safetensors"))
    assert json.loads(meta["text_prompts"]) == ["a red ball"]  # raw_prompt from the index: no template
    assert meta["negative_prompt"] == "" and meta["steps"] == "2" and meta["guidance"] == "3.0"
    out2 = tmp_path / "b.mp4"
    assert cli.main(["--prompt", "a red ball", "--model", shared_model, "--output", str(out2), "--quiet",
                     "--device", "cpu", "--frames", "9", "--height", "16", "--width", "16"]) == 0
    r = VideoReader(str(out2))
    assert (r.num_frames, r.size) == (9, (16, 16))
    capsys.readouterr()


def test_cli_bad_index_is_one_line_exit_2(tmp_path, capsys):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"sampling": {"steps": "many"}}))
    code = cli.main(["--prompt", "x", "--model", str(model), "--output", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "steps must be int" in err and err.count("\n") == 1
    (model / "model_index.json").write_text(json.dumps({"text_encoder": {"python_package": "no_such_pkg"}}))
    code = cli.main(["--prompt", "x", "--model", str(model), "--output", str(tmp_path / "o.mp4")])
    assert code == 2 and "pip install" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.mp4")


CONFIG = dict(num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24, in_channels=8, out_channels=8,
              num_layers=1, caption_channels=16, sparse1d=False)


def test_cached_caption_dropout_swaps_in_the_empty_caption(tmp_path):
    text = make_text_encoder_folder(str(tmp_path / "text"))
    module = DenoiserTraining(model_config=CONFIG, text_encoder=text, max_text_length=12, ema_decay=None,
                              cached_caption_dropout=0.5)
    null, null_mask = module.null_caption(12)
    assert null.shape == (1, 12, 16) and null_mask.sum() >= 1
    embeds = torch.randn(64, 12, 16) + 10
    batch = {"text_embeds": embeds, "text_mask": torch.ones(64, 12)}
    torch.manual_seed(0)
    out, mask = module.train().captions_of(batch, 64)
    dropped = (out == null).flatten(1).all(1)
    kept = (out == embeds).flatten(1).all(1)
    assert bool((dropped | kept).all()) and 16 < int(dropped.sum()) < 48
    assert torch.equal(mask[dropped], null_mask.expand(int(dropped.sum()), -1).to(mask.dtype))
    out, _ = module.eval().captions_of(batch, 64)  # never in validation
    assert torch.equal(out, embeds)
    with pytest.raises(ValueError, match="needs a text_encoder"):
        DenoiserTraining(model_config=CONFIG, ema_decay=None, cached_caption_dropout=0.1)


def test_cache_command_writes_every_sample(tmp_path, capsys):
    text = make_text_encoder_folder(str(tmp_path / "text"))
    config = {"model": {"class_path": "opensora.training.DenoiserTraining",
                        "init_args": {"model_config": CONFIG, "vae": os.path.join(DATA, "wfvae_tiny"),
                                      "text_encoder": text, "max_text_length": 12, "ema_decay": 0.9,
                                      "cached_caption_dropout": 0.1}},
              "data": {"class_path": "opensora.data.OpenSoraDataModule",
                       "init_args": {"data": os.path.join(ROOT, "configs", "opensora", "tiny_data.json"),
                                     "cache": str(tmp_path / "ignored"), "num_frames": 5, "fps": 8, "max_tokens": 8,
                                     "min_tokens": 4, "batch_size": 1, "caption_dropout": 0.5}}}
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    assert training_main(["cache", "--config", str(path), str(tmp_path / "cache")]) == 0
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 2 and "2 cached samples" in capsys.readouterr().out
    from safetensors.torch import load_file

    item = load_file(str(tmp_path / "cache" / files[0]))
    assert item["latents"].shape[0] == 8 and item["text_embeds"].shape == (12, 16)
    assert item["text_mask"].sum() > 2  # a real caption (no dropout while caching)
    # one item per caption: the first entry has two captions, the second one; latents shared
    assert training_main(["cache", "--config", str(path), str(tmp_path / "all"), "--all-captions"]) == 0
    items = [load_file(str(p)) for p in sorted((tmp_path / "all").iterdir())]
    assert len(items) == 3
    by_shape = {}
    for it in items:
        by_shape.setdefault(tuple(it["latents"].shape), []).append(it)
    pair = next(v for v in by_shape.values() if len(v) == 2)
    assert torch.equal(pair[0]["latents"], pair[1]["latents"])
    assert not torch.equal(pair[0]["text_embeds"], pair[1]["text_embeds"])
    assert training_main(["cache", "--config", str(tmp_path / "missing.yaml"), str(tmp_path / "c2")]) == 2


def test_eval_prompts_cli_sensitivity_only_and_bad_input(shared_model, tmp_path, capsys):
    from tools.eval_prompts import main as eval_main

    out = tmp_path / "report.json"
    assert eval_main([shared_model, "--num", "0", "--sensitivity", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "caption sensitivity" in printed and "t=700" in printed and "motion" in printed
    report = json.loads(out.read_text())
    assert report["rows"] == [] and set(report["caption_sensitivity"]) == {"300", "700", "900"}
    assert all(v >= 0 for row in report["caption_sensitivity"].values() for v in row.values())
    for argv, match in [([shared_model, "--num", "0"], "--num 0 samples nothing"),
                        ([str(tmp_path / "nope")], "model folder not found"),
                        ([shared_model, "--num", "-1"], "--num must be >= 0")]:
        assert eval_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and match in err and err.count("\n") == 1
