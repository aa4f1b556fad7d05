"""Videos beyond the model's window: chained continuation windows decoded as one causal stream."""
import os
import sys

import numpy as np
import pytest
import torch

from conftest import make_tiny_vae
from opensora.models import OpenSoraInpaint
from opensora.pipelines import OpenSoraImageToVideoPipeline, OpenSoraPipeline
from opensora.pipelines.long_video import ContinuationChain
from test_condition_sampling import make, make_inpaint, make_t2v, make_text_encoder_folder
from opensora.pipelines.text_to_video import load_text_encoder

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

CALL = dict(height=32, width=32, num_inference_steps=2, guidance_scale=3.0)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    text = load_text_encoder(make_text_encoder_folder(tmp_path_factory.mktemp("te")))
    vae = make_tiny_vae()
    cont = make(OpenSoraImageToVideoPipeline, make_inpaint(1), vae, text)
    first = make(OpenSoraPipeline, make_t2v(2), vae, text)
    return cont, first


def test_sizes_and_bad_settings(pipes):
    cont, first = pipes
    chain = ContinuationChain(cont, first, overlap=1, window_frames=9)  # 3 latent frames, 8 new frames per window
    assert chain.condition_frames() == 1
    assert [chain.num_windows(n) for n in (1, 9, 10, 17, 18, 25, 65)] == [1, 1, 2, 2, 3, 3, 8]
    assert ContinuationChain(cont, overlap=2, window_frames=17).condition_frames() == 5
    for bad in (dict(overlap=0), dict(overlap=3), dict(overlap=1.5), dict(window_frames=8),
                dict(noise_strength=float("nan")), dict(noise_strength=-1)):
        with pytest.raises(ValueError):
            ContinuationChain(cont, first, **{"overlap": 1, "window_frames": 9, **bad})
    with pytest.raises(TypeError, match="set by the chain"):
        next(chain.latents("a cat", 17, generator=torch.Generator()))


@pytest.mark.parametrize("num_frames,overlap", [(9, 1), (21, 1), (30, 2)])
def test_chain_is_one_seamless_stream(pipes, num_frames, overlap):
    cont, first = pipes
    chain = ContinuationChain(cont, first, overlap=overlap, window_frames=9)
    video = chain("a cat", num_frames, seed=3, **CALL)
    assert video.shape == (1, 3, num_frames, 32, 32) and torch.isfinite(video).all()
    # the streamed windows equal one decode of the chained latents (no seam where windows meet)
    windows = list(chain.latents("a cat", num_frames, seed=3, **CALL))
    assert len(windows) == chain.num_windows(num_frames)
    whole = torch.cat(list(chain.video_latents(iter(windows))), dim=2)
    expected = cont.vae.decode(whole).sample.clamp(-1, 1)[:, :, :num_frames]
    torch.testing.assert_close(video, expected, atol=1e-5, rtol=0)


def test_each_window_continues_the_last_frames_of_the_previous(pipes, monkeypatch):
    cont, first = pipes
    chain = ContinuationChain(cont, first, overlap=2, window_frames=9, noise_strength=0.1)
    seen = []
    real_call = OpenSoraImageToVideoPipeline.__call__

    def spy(self, prompt, **kw):
        seen.append({k: kw.get(k) for k in ("video", "cond_frames", "mask_type", "noise_strength")})
        return real_call(self, prompt, **kw)

    monkeypatch.setattr(OpenSoraImageToVideoPipeline, "__call__", spy)
    windows = list(chain.latents("a cat", 17, seed=0, **CALL))
    assert len(windows) == 3 and len(seen) == 2  # window 0 came from the text-to-video pipeline
    for prev, call in zip(windows, seen):
        assert call["mask_type"] == "continuation" and call["cond_frames"] == [0, 1, 2, 3, 4]
        assert call["noise_strength"] == 0.1
        # the last 5 frames of the whole window's decode: the real last frames, not the last 2 latent frames
        # decoded on their own (read as a video's start, they come out as earlier moments)
        torch.testing.assert_close(call["video"], cont.decode_latents(prev)[0][:, -5:])
        assert not torch.allclose(call["video"], cont.decode_latents(prev[:, :, -2:])[0], atol=1e-3)


def test_resume_from_saved_windows_gives_the_same_video(pipes):
    cont, first = pipes
    chain = ContinuationChain(cont, first, overlap=1, window_frames=9)
    saved = {}
    full = chain("a cat", 25, seed=5, on_window=lambda i, w: saved.__setitem__(i, w.clone()), **CALL)
    assert sorted(saved) == [0, 1, 2]
    sampled = []
    resumed = chain("a cat", 25, seed=5, done=[saved[0], saved[1]],
                    on_window=lambda i, w: sampled.append(i), **CALL)
    assert sampled == [2]  # only the missing window was sampled again
    assert torch.equal(resumed, full)


def test_without_a_text_to_video_pipeline_the_first_window_is_unconditioned(pipes):
    cont, _ = pipes
    chain = ContinuationChain(cont, overlap=1, window_frames=9)
    video = chain(["a cat", "a dog"], 13, seed=1, **CALL)
    assert video.shape == (2, 3, 13, 32, 32)
    assert not torch.equal(video[0], video[1])
    assert isinstance(cont.transformer, OpenSoraInpaint)


def test_continuation_travel_runs_the_continuation_model_alone(pipes):
    """The probe of ``tools/eval_long_video.py --continuation-probe``: one ratio per translation prompt (growing
    prompts skipped), finite, with the summary shares in [0, 1]."""
    from opensora.synthetic.long_check import continuation_travel

    cont, _ = pipes
    prompts = [("a red ball moving slowly right", "red", "right", "circle"),
               ("a blue box growing slowly", "blue", "grow", "square"),
               ("a green triangle moving slowly up", "green", "up", "triangle")]
    report = continuation_travel(cont, prompts, kept=1, seed=0, num_frames=9, **CALL)
    assert [r["motion"] for r in report["rows"]] == ["right", "up"]
    assert all(np.isfinite(r["ratio"]) for r in report["rows"])
    assert 0 <= report["static"] <= 1 and 0 <= report["wrong_way"] <= report["static"]
    with pytest.raises(ValueError, match="no prompt of a translation"):
        continuation_travel(cont, prompts[1:2], num_frames=9, **CALL)


def test_eval_long_video_refuses_bad_arguments(tmp_path, capsys):
    from eval_long_video import main

    model = tmp_path / "model"
    model.mkdir()
    assert main([str(model), "--continuation-probe", "--save-videos", str(tmp_path / "v")]) == 2
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(model), "--frames", "10"]) == 2
    err = capsys.readouterr().err
    assert "--continuation-probe makes none" in err and "model folder not found" in err and "4n + 1" in err
    assert not (tmp_path / "v").exists()
