"""Fast sampling (issue 20): the evaluation counter, the presets (pipeline and CLI), guidance on a subset of steps,
and what a step cache skips, on a tiny random model (3 blocks, the middle one Skiparse)."""
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

import opensora.cli.sample as cli
from opensora.pipelines.defaults import check_sampling
from opensora.pipelines.presets import (PRESET_NAMES, PRESETS, EvaluationCounter, evaluations_per_video, guided_steps,
                                        resolve_preset)
from opensora.pipelines.schedulers import scheduler_name
from test_pipeline import RAW, make_pipe, make_pipeline_folder, text_parts  # noqa: F401  (fixture)

SMALL = dict(num_frames=5, height=32, width=32)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe(text_parts):  # noqa: F811
    return make_pipe(text_parts, sampling={**RAW, "steps": 6, "guidance": 4.0})


def _sample(pipe, prompts=("a cat", "a dog"), **kw):
    """(latents, evaluations per video, block evaluations per video, denoiser calls)."""
    with EvaluationCounter(pipe.transformer) as counter:
        out = pipe(list(prompts), generator=_gen(), output_type="latent", **SMALL, **kw).frames
    per = counter.per_video(len(prompts))
    return out, per["evaluations"], per["block_evaluations"], counter.calls


def test_counter_counts_batched_cfg_and_guidance_interval(pipe):
    # guided on every step: 2 evaluations per video and step, in ONE batched call per step
    _, evals, blocks, calls = _sample(pipe, num_inference_steps=5)
    assert (evals, blocks, calls) == (10, 10, 5)
    # unguided: 1 per step
    _, evals, _, calls = _sample(pipe, num_inference_steps=5, guidance_scale=1.0)
    assert (evals, calls) == (5, 5)
    # guidance on the first 40% of 5 steps (steps 0, 1), or skipping the first 40% (steps 2, 3, 4)
    assert guided_steps(5, (0.0, 0.4)) == [True, True, False, False, False]
    assert guided_steps(5, (0.4, 1.0)) == [False, False, True, True, True]
    for interval, expected in (((0.0, 0.4), 7), ((0.4, 1.0), 8)):
        _, evals, _, calls = _sample(pipe, num_inference_steps=5, guidance_interval=interval)
        assert evals == expected == evaluations_per_video(5, 4.0, interval) and calls == 5
    with pytest.raises(ValueError, match="guidance_interval"):
        pipe("a cat", guidance_interval=(0.6, 0.2), **SMALL)


def test_guidance_interval_changes_only_the_unguided_steps(pipe):
    full, *_ = _sample(pipe, num_inference_steps=4, preset="balanced")
    same, *_ = _sample(pipe, num_inference_steps=4, preset="balanced", guidance_interval=(0.0, 1.0))
    late, *_ = _sample(pipe, num_inference_steps=4, preset="balanced", guidance_interval=(0.0, 0.5))
    assert torch.equal(full, same) and not torch.allclose(full, late)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_each_preset_runs_with_its_cost_and_is_deterministic_where_its_solver_is(pipe, name):
    values = PRESETS[name]
    steps = values.get("num_inference_steps", 6)
    out, evals, _, calls = _sample(pipe, preset=name)
    assert out.shape == (2, 4, 2, 4, 4) and torch.isfinite(out).all()
    assert calls == steps and evals == evaluations_per_video(steps, 4.0, values.get("guidance_interval"))
    assert scheduler_name(pipe.scheduler) == "euler_ancestral"  # the pipeline's own scheduler is left alone
    again, *_ = _sample(pipe, preset=name)
    assert torch.equal(out, again)  # same generator: identical outputs run to run (every preset)
    if name != "quality":  # deterministic solvers: the generator only draws the initial noise
        other, *_ = _sample(pipe, preset=name, latents=torch.randn(2, 4, 2, 4, 4, generator=_gen()))
        assert torch.equal(out, other)


def test_quality_is_the_folder_behaviour_and_explicit_arguments_win(pipe, text_parts):  # noqa: F811
    plain, evals, _, _ = _sample(pipe)
    quality, *_ = _sample(pipe, preset="quality")
    assert torch.equal(plain, quality) and evals == 12  # the folder's 6 steps, guided
    fast = PRESETS["fast"]
    _, evals, _, calls = _sample(pipe, preset="fast", num_inference_steps=3)
    assert calls == 3 and evals == evaluations_per_video(3, 4.0, fast.get("guidance_interval"))
    _, evals, _, _ = _sample(pipe, preset="fast", guidance_scale=1.0)
    assert evals == fast["num_inference_steps"]
    _, evals, _, _ = _sample(pipe, preset="fast", guidance_interval=(0.0, 0.5))
    assert evals == fast["num_inference_steps"] * 3 // 2
    # a folder naming its default preset; an explicit preset still wins
    folder_fast = make_pipe(text_parts, transformer=pipe.transformer, sampling={**RAW, "steps": 6, "guidance": 4.0,
                                                                                "preset": "fast"})
    by_folder, *_ = _sample(folder_fast)
    by_name, *_ = _sample(pipe, preset="fast")
    assert torch.equal(by_folder, by_name)
    assert torch.equal(_sample(folder_fast, preset="quality")[0], plain)


def test_bad_preset_names(pipe):
    with pytest.raises(ValueError, match="unknown preset 'turbo'; choose one of quality, balanced, fast"):
        pipe("a cat", preset="turbo", **SMALL)
    with pytest.raises(ValueError, match="sampling unknown preset 'turbo'"):
        check_sampling({"preset": "turbo"})
    with pytest.raises(ValueError, match="preset must be str"):
        check_sampling({"preset": 3})
    # an explicit scheduler takes none of the preset's solver options
    assert resolve_preset("fast", scheduler="ddim")["scheduler_options"] == {}
    assert resolve_preset("fast")["scheduler_options"] == PRESETS["fast"].get("scheduler_options", {})


def test_first_block_cache_reuses_the_later_blocks(pipe):
    """Threshold 0: nothing is reused, outputs are the uncached ones. A huge threshold: after the first step only
    the first block computes (the cached residual of the others is reused), for both CFG rows of every video."""
    steps, blocks = 4, len(pipe.transformer.transformer_blocks)
    ref, evals, block_evals, _ = _sample(pipe, num_inference_steps=steps, preset="balanced")
    assert block_evals == evals == 2 * steps
    model = pipe.transformer
    try:
        model.enable_cache(FirstBlockCacheConfig(threshold=0.0))
        exact, _, block_evals, _ = _sample(pipe, num_inference_steps=steps, preset="balanced")
        assert torch.equal(exact, ref) and block_evals == 2 * steps
        model.disable_cache()
        model.enable_cache(FirstBlockCacheConfig(threshold=1e9))
        cached, evals, block_evals, _ = _sample(pipe, num_inference_steps=steps, preset="balanced")
        assert evals == 2 * steps  # the denoiser is still called every step ...
        assert block_evals == pytest.approx(2 * (1 + (steps - 1) / blocks))  # ... but only block 0 runs after step 0
        assert not torch.equal(cached, ref)
    finally:
        model.disable_cache()


def test_cli_preset(tmp_path, capsys):
    models = make_pipeline_folder(tmp_path / "m")
    capsys.readouterr()  # the folder's save progress bars
    base = ["--prompt", "a cat", "--model", models, "--frames", "5", "--height", "32", "--width", "32",
            "--max-length", "12", "--quiet", "--device", "cpu"]
    assert cli.main(base + ["--preset", "turbo", "--output", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "invalid choice: 'turbo'" in err[0]
    lat = tmp_path / "z.safetensors"
    assert cli.main(base + ["--preset", "fast", "--steps", "3", "--output", str(tmp_path / "a.mp4"),
                            "--save-latents", str(lat)]) == 0
    _, meta = cli.load_latents(str(lat))
    assert (meta["preset"], meta["steps"], meta["scheduler"]) == ("fast", "3", PRESETS["fast"]["scheduler"])
