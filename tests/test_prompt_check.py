"""The prompt-following evaluation loop, with stand-in "models" that render the synthetic clips directly."""
import numpy as np
import pytest
import torch

from opensora.synthetic.prompt_check import evaluate, format_report
from opensora.synthetic.shapes import MOTIONS, eval_prompts, make_spec, render_clip
from wfvae.io.frames import to_tensor


class RenderingPipe:
    """Answers each prompt with a rendered clip of the colour/motion ``pick(prompt)`` chooses; records the kwargs."""

    def __init__(self, pick):
        self.pick, self.calls, self.defaults = pick, [], {"num_frames": 9, "height": 48, "width": 48}

    def __call__(self, prompts, generator=None, output_type="np", **kwargs):
        self.calls.append(kwargs)
        rng = np.random.default_rng(0)
        clips = []
        for prompt in prompts:
            colour, motion = self.pick(prompt)
            spec = make_spec(colour, "circle", motion, rng)
            clips.append(to_tensor(render_clip(spec, kwargs["num_frames"], kwargs["height"])))
        assert output_type == "pt"
        frames = (torch.stack(clips).permute(0, 2, 1, 3, 4) + 1) / 2  # (B, T, 3, H, W) in [0, 1], as the pipeline
        return type("Output", (), {"frames": frames})()


def test_a_faithful_model_scores_100_and_a_stubborn_one_does_not():
    prompts = eval_prompts(12)
    truth = {p: (c, m) for p, c, m in prompts}
    good = RenderingPipe(lambda p: truth[p])
    report = evaluate(good, prompts, batch_size=5, progress=False, num_inference_steps=3)
    assert report["accuracy"] == 1.0 and report["num_prompts"] == 12
    assert good.calls[0]["num_inference_steps"] == 3 and good.calls[0]["num_frames"] == 9  # defaults + overrides
    assert len(good.calls) == 3  # batches of 5, 5, 2

    stubborn = RenderingPipe(lambda p: ("red", "left"))
    report = evaluate(stubborn, prompts, progress=False)
    expected_colour = np.mean([c == "red" for _, c, _ in prompts])
    expected_motion = np.mean([m == "left" for _, _, m in prompts])
    assert report["colour_accuracy"] == pytest.approx(expected_colour)
    assert report["motion_accuracy"] == pytest.approx(expected_motion)
    assert report["accuracy"] < 0.5
    text = format_report(report)
    assert "both" in text and "artefacts: ghost share" in text and text.count("\n") == 12 + 2


def test_colour_right_motion_wrong_is_not_counted():
    prompts = [(p, c, m) for p, c, m in eval_prompts(36) if m in ("up", "down")][:4]
    flip = {"up": "down", "down": "up"}
    report = evaluate(RenderingPipe(lambda p: next((c, flip[m]) for q, c, m in prompts if q == p)), prompts,
                      progress=False, keep_videos=True)
    assert report["colour_accuracy"] == 1.0 and report["motion_accuracy"] == 0.0 and report["accuracy"] == 0.0
    assert report["rows"][0]["video"].shape == (9, 48, 48, 3)
    assert set(MOTIONS) >= {r["got_motion"] for r in report["rows"]}


def test_vae_ceiling_runs_the_checker_on_reconstructions():
    from conftest import make_tiny_vae
    from opensora.synthetic.prompt_check import vae_ceiling

    class Identity:  # a perfect "VAE": the ceiling is the checker's own accuracy on clean renders
        device, dtype = torch.device("cpu"), torch.float32

        def encode(self, x):
            return type("E", (), {"latent_dist": type("P", (), {"mean": x})()})()

        def decode(self, z):
            return type("D", (), {"sample": z})()

    assert vae_ceiling(Identity(), 9, 48, per_triple=1)["accuracy"] == 1.0
    random_vae = vae_ceiling(make_tiny_vae().eval(), 5, 32, per_triple=1)  # a random VAE loses the object
    assert random_vae["num_clips"] == 18 and random_vae["accuracy"] < 0.5


class BagOfWordsPipe:
    """A stand-in pipeline: captions become one-hot word vectors; the "denoiser" adds a projection of the words it
    is allowed to ``read`` (colour, shape or motion vocabulary) to its latents."""

    def __init__(self, read):
        from opensora.synthetic.shapes import COLOURS, MOTION_PHRASES, SHAPES

        groups = {"colour": set(COLOURS), "shape": {n for ns in SHAPES.values() for n in ns},
                  "motion": {w for ps in MOTION_PHRASES.values() for p in ps for w in p.split()}}
        self.vocab = sorted(set().union(*groups.values()))
        weight = torch.randn(4, len(self.vocab), generator=torch.Generator().manual_seed(0))
        keep = torch.tensor([w in set().union(*(groups[g] for g in read)) for w in self.vocab])
        self.transformer = self.Denoiser(weight * keep)
        self.defaults, self.device, self.dtype = {"num_frames": 5, "height": 16, "width": 16}, "cpu", torch.float32

    class Denoiser(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

        def forward(self, x, t, encoder_hidden_states, encoder_attention_mask, return_dict=True):
            words = encoder_hidden_states[:, 0].sum(1)                                   # (B, V)
            return (x + (words @ self.weight.T)[:, :, None, None, None] * (1 + t[:, None, None, None, None] / 1000),)

    def latent_shape(self, batch, num_frames, height, width):
        return batch, 4, 1 + (num_frames - 1) // 4, height // 8, width // 8

    def encode_text(self, texts):
        rows = [[self.vocab.index(w) for w in text.split() if w in self.vocab] for text in texts]
        length = max(len(r) for r in rows)
        embeds, mask = torch.zeros(len(texts), length, len(self.vocab)), torch.zeros(len(texts), length)
        for i, r in enumerate(rows):
            embeds[i, torch.arange(len(r)), r] = 1
            mask[i, :len(r)] = 1
        return embeds, mask


@pytest.mark.parametrize("read", [("colour",), ("motion",), ("shape", "motion")])
def test_caption_sensitivity_sees_exactly_the_words_a_model_reads(read):
    from opensora.synthetic.prompt_check import caption_sensitivity

    result = caption_sensitivity(BagOfWordsPipe(read), timesteps=(100, 900), num_captions=6)
    assert set(result) == {100, 900}
    for t, row in result.items():
        assert set(row) == {"colour", "shape", "motion"}
        for attribute, rms in row.items():
            assert (rms > 0.05) if attribute in read else (rms == 0.0), (t, attribute, rms)
    assert result[900][read[0]] > result[100][read[0]]   # the stand-in's dependence grows with t
