"""``opensora-sample --frames N`` beyond the model's window: chained windows, resumable, bad input, domain note."""
import json
import os

import pytest
import torch
from safetensors import safe_open

import opensora.cli.sample as cli
from opensora.models import OpenSoraInpaint, OpenSoraT2V
from opensora.pipelines.long_video import ContinuationChain
from test_pipeline import make_pipeline_folder
from wfvae.io.video import read_video

FAST = ["--height", "32", "--width", "32", "--steps", "2", "--max-length", "12", "--quiet", "--device", "cpu",
        "--fps", "8"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    model = make_pipeline_folder(root / "t2v")
    cont = OpenSoraInpaint.from_t2v(OpenSoraT2V.from_pretrained(os.path.join(model, "transformer")))
    with torch.no_grad():  # open the zero-initialised condition projections: the condition then matters
        g = torch.Generator().manual_seed(0)
        for p in list(cont.pos_embed_masked_hidden_states[1].parameters()) + list(cont.pos_embed_mask[1].parameters()):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    cont.save_pretrained(str(root / "cont"))
    sampling = {"num_frames": 9, "continuation_model": "../cont", "overlap": 1,
                "domain": {"note": "this model only knows coloured shapes", "requires": [["red", "blue"],
                                                                                         ["ball", "square"]]}}
    with open(os.path.join(model, "model_index.json"), "w") as fh:
        json.dump({"sampling": sampling}, fh)
    return model, str(root / "cont")


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_frames_beyond_the_window_chain_and_resume(folders, tmp_path, capsys, monkeypatch):
    model, _ = folders
    out, lat = tmp_path / "long.mp4", tmp_path / "w.safetensors"
    argv = ["--prompt", "a red ball moving right", "--model", model, "--frames", "21", "--seed", "5"] + FAST
    code, stdout, err = _run(argv + ["--output", str(out), "--save-latents", str(lat)], capsys)
    assert code == 0, err
    assert "3 windows" in stdout and "21 frames" in stdout
    assert read_video(str(out)).shape == (3, 21, 32, 32)
    with safe_open(str(lat), "pt") as fh:
        names = sorted(fh.keys())
        windows = [fh.get_tensor(n) for n in names]
    assert names == ["p000_w000", "p000_w001", "p000_w002"]
    assert all(w.shape == (1, 4, 3, 4, 4) for w in windows)  # 9 frames = 3 latent frames of a window
    assert not torch.equal(windows[1], windows[2])

    # interrupted after two windows: no video, the two windows saved
    real = ContinuationChain._sample
    calls = []

    def stop_at_third(self, i, *args, **kwargs):
        calls.append(i)
        if i == 2:
            raise KeyboardInterrupt
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(ContinuationChain, "_sample", stop_at_third)
    part, lat2 = tmp_path / "part.mp4", tmp_path / "w2.safetensors"
    code, _, _ = _run(argv + ["--output", str(part), "--save-latents", str(lat2)], capsys)
    assert code != 0 and not part.exists()
    with safe_open(str(lat2), "pt") as fh:
        assert sorted(fh.keys()) == ["p000_w000", "p000_w001"]
    # the same command again: the saved windows are reused, only window 2 is sampled, the video is the same
    calls.clear()
    monkeypatch.setattr(ContinuationChain, "_sample", lambda self, i, *a, **k: (calls.append(i), real(self, i, *a, **k))[1])
    code, _, err = _run(argv + ["--output", str(part), "--save-latents", str(lat2)], capsys)
    assert code == 0, err
    assert calls == [2] and "resuming prompt 1 from 2 of 3 saved windows" in err
    assert torch.equal(read_video(str(part)), read_video(str(out)))

    # a windows file of another run is refused (nothing written), and --overwrite starts over
    code, _, err = _run(argv + ["--seed", "6", "--output", str(tmp_path / "x.mp4"), "--save-latents", str(lat2)],
                        capsys)
    assert code == 2 and "different run (differs in seed)" in err and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("extra,message", [
    (["--frames", "9", "--overlap", "1"], "--overlap is for --frames beyond the model's 9-frame window"),
    (["--frames", "21", "--num-samples", "2"], "--num-samples must be 1"),
    (["--frames", "21", "--continuation-model", "/nonexistent"], "continuation model folder not found"),
    (["--frames", "21", "--window-noise", "nan"], "--window-noise must be a finite number"),
    (["--frames", "21", "--overlap", "3"], "overlap must be an integer in [1, 2]"),
])
def test_bad_long_video_input_one_line_exit_2(folders, tmp_path, capsys, extra, message):
    model, _ = folders
    out = tmp_path / "bad.mp4"
    code, _, err = _run(["--prompt", "a red ball", "--model", model, "--output", str(out)] + FAST + extra, capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_without_a_continuation_model_frames_are_one_window(folders, tmp_path, capsys):
    model, _ = folders
    plain = tmp_path / "plain"   # the same parts with a 9-frame window and no continuation model
    plain.mkdir()
    for part in ("transformer", "vae", "text_encoder"):
        os.symlink(os.path.join(model, part), plain / part)
    (plain / "model_index.json").write_text(json.dumps({"sampling": {"num_frames": 9}}))
    out = tmp_path / "o.mp4"
    code, stdout, err = _run(["--prompt", "a red ball", "--model", str(plain), "--frames", "13",
                              "--output", str(out)] + FAST, capsys)
    assert code == 0, err
    assert "windows" not in stdout and read_video(str(out)).shape[1] == 13
    code, _, err = _run(["--prompt", "a red ball", "--model", str(plain), "--frames", "13", "--overlap", "1",
                         "--output", str(tmp_path / "p.mp4")] + FAST, capsys)
    assert code == 2 and "--overlap is for a chained long video: give --continuation-model DIR" in err


def test_domain_note_for_prompts_outside_the_training_domain(folders, tmp_path, capsys):
    model, _ = folders
    for prompt, noted in (("a cat playing the piano", True), ("a red car", True), ("A Blue square rising", False)):
        code, _, err = _run(["--prompt", prompt, "--model", model, "--frames", "5",
                             "--output", str(tmp_path / f"{noted}{len(prompt)}.mp4")] + FAST, capsys)
        assert code == 0, err
        assert ("note: this model only knows coloured shapes" in err) == noted, (prompt, err)
