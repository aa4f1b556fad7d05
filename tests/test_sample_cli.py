"""``opensora-sample`` end to end on tiny random models: files, latents round trip, refiner, bad inputs."""
import json
import os
import runpy
import shutil

import pytest
import torch

import opensora.cli.sample as cli
from opensora.text.refiner import PromptRefiner
from opensora.pipelines.schedulers import POSITIVE_PROMPT_TEMPLATE
from test_pipeline import make_pipeline_folder
from test_text_encoder import make_refiner_folder
from wfvae.io.video import VideoReader, read_video

ROOT = os.path.join(os.path.dirname(__file__), "..")
FAST = ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--max-length", "12", "--quiet",
        "--device", "cpu"]



@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_pipeline_folder(tmp_path_factory.mktemp("pipeline"))


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mp4_per_prompt_and_latents_round_trip(models, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat playing the piano\n\n  a red car at night  \n")
    out, lat = tmp_path / "videos", tmp_path / "z.safetensors"
    code, stdout, err = _run(["--prompt-file", str(prompts), "--model", models, "--output", str(out), "--fps", "12",
                              "--seed", "7", "--save-latents", str(lat)] + FAST, capsys)
    assert code == 0, err
    names = sorted(os.listdir(out))
    assert names == ["000-a-cat-playing-the-piano.mp4", "001-a-red-car-at-night.mp4"]
    for name in names:
        r = VideoReader(str(out / name))
        assert (r.num_frames, r.size, r.fps) == (5, (32, 32), 12.0)
    assert stdout.count(".mp4: 5 frames 32x32 @ 12 fps") == 2

    latents, meta = cli.load_latents(str(lat))
    assert latents.shape == (2, 4, 2, 4, 4)
    assert json.loads(meta["prompts"]) == ["a cat playing the piano", "a red car at night"]
    assert json.loads(meta["seeds"]) == [7, 8]
    assert "high quality, high aesthetic, a red car at night" in json.loads(meta["text_prompts"])[1]
    assert (meta["num_frames"], meta["height"], meta["width"], float(meta["fps"])) == ("5", "32", "32", 12.0)
    assert meta["scheduler"] == "euler_ancestral" and meta["steps"] == "2"

    again = tmp_path / "decoded"
    code, _, err = _run(["--from-latents", str(lat), "--output", str(again), "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(again)) == names
    for name in names:  # same latents, same decoder, same encoder settings: the same frames
        assert torch.equal(read_video(str(out / name)), read_video(str(again / name)))

    # the same seed samples the same video again; another seed does not
    code, _, _ = _run(["--prompt", "a cat playing the piano", "--model", models, "--output",
                       str(tmp_path / "same.mp4"), "--fps", "12", "--seed", "7"] + FAST, capsys)
    assert code == 0 and torch.equal(read_video(str(tmp_path / "same.mp4")), read_video(str(out / names[0])))
    code, _, _ = _run(["--prompt", "a cat playing the piano", "--model", models, "--output",
                       str(tmp_path / "other.mp4"), "--fps", "12", "--seed", "8"] + FAST, capsys)
    assert code == 0 and not torch.equal(read_video(str(tmp_path / "other.mp4")), read_video(str(out / names[0])))


def test_png_for_one_frame_refined_prompt_offload(models, tmp_path, capsys):
    refiner = make_refiner_folder(tmp_path / "lm")
    png = tmp_path / "still.png"
    args = ["--prompt", "a dog", "--model", models, "--output", str(png), "--refine-prompt", refiner,
            "--refine-max-new-tokens", "4", "--save-latents", str(tmp_path / "z.safetensors"), "--cpu-offload",
            "--vae-latent-chunk", "1"]
    code, stdout, err = _run(args + FAST[2:] + ["--frames", "1"], capsys)
    assert code == 0, err
    assert "refined: 'a dog' -> " in err and str(png) in stdout
    from PIL import Image

    assert Image.open(png).size == (32, 32)
    _, meta = cli.load_latents(str(tmp_path / "z.safetensors"))
    refined = PromptRefiner.from_pretrained(refiner, max_new_tokens=4).refine("a dog")
    assert json.loads(meta["prompts"]) == ["a dog"]
    assert json.loads(meta["text_prompts"]) == [POSITIVE_PROMPT_TEMPLATE.format(refined)]  # refined, then wrapped


def test_latents_are_saved_before_decoding(models, tmp_path, capsys, monkeypatch):
    from wfvae import WFVAE

    def broken(self, *args, **kwargs):
        raise ValueError("decoder exploded")

    monkeypatch.setattr(WFVAE, "decode_stream", broken)  # the VAE decoding the command runs
    out, lat = tmp_path / "videos", tmp_path / "z.safetensors"
    code, _, err = _run(["--prompt", "a cat", "--model", models, "--output", str(out), "--num-samples", "2",
                         "--save-latents", str(lat)] + FAST, capsys)
    assert code == 2 and err.strip() == "error: decoder exploded"
    assert not out.exists() or not os.listdir(out)
    latents, meta = cli.load_latents(str(lat))
    assert latents.shape == (2, 4, 2, 4, 4) and meta["num_samples"] == "2"
    assert [n for n in os.listdir(tmp_path) if n != "z.safetensors" and n != "videos"] == []  # no temp files


def _variant(models, tmp_path, part, **changes):
    """A copy of the pipeline folder whose ``part`` config.json has ``changes`` (weights untouched)."""
    folder = tmp_path / "variant"
    shutil.copytree(models, folder)
    path = folder / part / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("case", ["frames", "no_model", "empty_file", "channels", "caption", "size", "scheduler",
                                  "image_frames", "no_prompt", "from_latents_vae"])
def test_bad_input_one_error_line_exit_2_no_file(models, tmp_path, capsys, case):
    out = tmp_path / "out"
    base = ["--prompt", "a cat", "--model", models, "--output", str(out)] + FAST
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    argv, expected = {
        "frames": (base + ["--frames", "6"], "--frames must be 4n + 1"),
        "no_model": (base + ["--model", str(tmp_path / "missing")], "model folder not found"),
        "empty_file": (["--prompt-file", str(empty), "--model", models, "--output", str(out)] + FAST, "no prompts"),
        "channels": (base + ["--model", "CHANNELS"], "takes 8 latent channels but the VAE"),
        "caption": (base + ["--model", "CAPTION"], "expects 32-wide text embeddings"),
        "size": (base + ["--height", "40"], "multiples of 16"),
        "scheduler": (base + ["--scheduler", "plms"], "invalid choice: 'plms'"),
        "image_frames": (base + ["--output", str(tmp_path / "x.png")], "is an image but --frames is 5"),
        "no_prompt": (["--model", models, "--output", str(out)] + FAST, "give --prompt"),
        "from_latents_vae": (None, "different VAE"),
    }[case]
    if case == "channels":
        argv[-1] = _variant(models, tmp_path, "transformer", in_channels=8, out_channels=8)
    if case == "caption":
        argv[-1] = _variant(models, tmp_path, "transformer", caption_channels=32)
    if case == "from_latents_vae":
        lat = tmp_path / "z.safetensors"
        assert _run(base + ["--save-latents", str(lat), "--output", str(tmp_path / "first")], capsys)[0] == 0
        other = _variant(models, tmp_path, "vae", scale=[0.5] * 4)
        argv = ["--from-latents", str(lat), "--vae", os.path.join(other, "vae"), "--output", str(out), "--quiet"]
    code, stdout, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not out.exists() and not os.path.exists(tmp_path / "x.png") and stdout == ""


def test_output_names(tmp_path):
    v = str(tmp_path / "v")
    assert cli.output_paths(v + ".mp4", ["a", "b"], 2, 5) == [[v + "-000-s0.mp4", v + "-000-s1.mp4"],
                                                              [v + "-001-s0.mp4", v + "-001-s1.mp4"]]
    with pytest.raises(cli.UsageError, match="output folder does not exist"):
        cli.output_paths(str(tmp_path / "missing" / "v.mp4"), ["a"], 1, 5)
    assert cli.output_paths("dir", ["A cat, on a mat!"], 1, 1) == [[os.path.join("dir", "000-a-cat-on-a-mat.png")]]
    assert cli.output_paths("dir", ["???"], 1, 5) == [[os.path.join("dir", "000-prompt.mp4")]]


def test_tools_script_is_the_cli():
    namespace = runpy.run_path(os.path.join(ROOT, "tools", "sample_t2v.py"), run_name="not_main")
    assert namespace["main"] is cli.main
