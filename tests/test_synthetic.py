"""Synthetic text-to-video data (opensora.synthetic.shapes) and its dataset tool (tools/make_t2v_dataset.py)."""
import itertools
import json
import os
import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from opensora.synthetic.shapes import (BACKGROUNDS, COLOURS, EVAL_TEMPLATES, MOTION_PHRASES, MOTIONS, SHAPES,
                                TRAIN_TEMPLATES, all_triples, analyse_clip, background_image, caption, captions,
                                check, eval_prompts, heldout_triples, make_spec, object_alpha, random_spec,
                                render_clip, rgb_to_hsv, train_triples)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))


def degrade(video, rng, sigma=1.5, noise=8.0):
    """Spatial Gaussian blur and additive Gaussian noise (in 8-bit levels), as a crude VAE decoder stand-in."""
    out = gaussian_filter(video.astype(np.float32), sigma=(0, sigma, sigma, 0))
    out += rng.normal(0, noise, out.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- split
def test_split():
    held, train = heldout_triples(), train_triples()
    assert len(held) == 18 and len(train) == 90 and len(all_triples()) == 108
    assert not set(held) & set(train) and held == sorted(held)
    assert {(c, m) for c, _, m in train} == set(itertools.product(COLOURS, MOTIONS))
    assert {c for c, _, _ in held} == set(COLOURS) and {m for _, _, m in held} == set(MOTIONS)
    assert {s for _, s, _ in held} == set(SHAPES)
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(200)]
    assert {(s.colour, s.shape, s.motion) for s in specs} <= set(train)


# ----------------------------------------------------------------------------------------------- render
def test_render_shape_and_determinism():
    spec = make_spec("red", "triangle", "left", np.random.default_rng(0))
    video = render_clip(spec, 17, 96)
    assert video.shape == (17, 96, 96, 3) and video.dtype == np.uint8
    assert np.array_equal(video, render_clip(spec, 17, 96))
    assert not np.array_equal(video[0], video[-1])


@pytest.mark.parametrize("motion", MOTIONS)
def test_object_inside_frame(motion):
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        for _ in range(20):
            spec = make_spec("blue", shape, motion, rng)
            alpha = object_alpha(spec, 9, 64)
            border = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], axis=1)
            assert border.max() == 0
            assert alpha.sum((1, 2)).min() > 0.005 * 64 * 64


def test_translation_distance_and_grow_range():
    rng = np.random.default_rng(2)
    for motion in MOTIONS:
        spec = make_spec("green", "circle", motion, rng)
        travel = np.hypot(spec.x1 - spec.x0, spec.y1 - spec.y0)
        if motion in ("grow", "shrink"):
            assert travel == 0 and max(spec.r0, spec.r1) / min(spec.r0, spec.r1) > 3
            assert (spec.r1 > spec.r0) == (motion == "grow")
        else:
            assert 0.35 <= travel <= 0.5 and 0.1 <= spec.r0 == spec.r1 <= 0.16


@pytest.mark.parametrize("kind", list(BACKGROUNDS))
def test_background_low_saturation(kind):
    rng = np.random.default_rng(3)
    for _ in range(10):
        bg = np.round(background_image(kind, rng, 48) * 255) / 255
        _, s, v = rgb_to_hsv(bg)
        assert s.max() <= 0.2 and 0.1 <= v.min() and v.max() <= 0.9


# ----------------------------------------------------------------------------------------------- checker
def _accuracy(num_frames, size, seeds, corrupt=False):
    rng = np.random.default_rng(4)
    hits = total = 0
    for triple in all_triples():
        for _ in range(seeds):
            video = render_clip(make_spec(*triple, rng), num_frames, size)
            if corrupt:
                video = degrade(video, rng)
            hits += check(video, triple[0], triple[2])
            total += 1
    return hits / total


def test_checker_clean_all_triples():
    assert _accuracy(9, 64, 1) == 1.0


def test_checker_clean_full_size():
    rng = np.random.default_rng(5)
    for _ in range(6):
        spec = random_spec(rng, all_triples())
        result = analyse_clip(render_clip(spec, 17, 96))
        assert (result["colour"], result["motion"]) == (spec.colour, spec.motion), result


def test_checker_blur_and_noise():
    assert _accuracy(9, 64, 2, corrupt=True) >= 0.97


def test_checker_float_input_and_diagnostics():
    spec = make_spec("purple", "square", "up", np.random.default_rng(6))
    video = render_clip(spec, 9, 64)
    result = analyse_clip(video.astype(np.float32) / 255)
    assert result["colour"] == "purple" and result["motion"] == "up"
    assert result["dy"] < -0.3 and abs(result["dx"]) < 0.05 and abs(result["dlog_area"]) < 0.2
    assert 0.02 < result["mask_fraction"] < 0.2 and result["valid_frames"] == 9


def test_checker_can_fail():
    spec = make_spec("orange", "circle", "grow", np.random.default_rng(7))
    video = render_clip(spec, 9, 64)
    assert check(video, "orange", "grow")
    assert not check(video, "orange", "shrink") and not check(video, "yellow", "grow")
    assert not check(video[::-1], "orange", "grow")                    # played backwards it shrinks
    assert not check(np.repeat(video[:1], 9, axis=0), "orange", "grow")   # a still frame does not move
    grey = np.full((9, 32, 32, 3), 128, np.uint8)
    assert analyse_clip(grey)["colour"] == "none" and not check(grey, "red", "left")


# ----------------------------------------------------------------------------------------------- text
def test_captions_mention_colour_and_motion():
    rng = np.random.default_rng(8)
    for _ in range(100):
        spec = random_spec(rng)
        caps = captions(spec, rng, k=3) + [caption(spec, rng)]
        assert len(set(caps[:3])) == 3
        for text in caps:
            assert spec.colour in text.split()
            assert any(phrase in text for phrase in MOTION_PHRASES[spec.motion])
            assert any(noun in text.split() for noun in SHAPES[spec.shape])
            assert " a orange" not in text and not text.startswith("a orange")


def _all_captions(colour, shape, motion, templates):
    out = set()
    for template, noun, phrase, ing, word in itertools.product(
            templates, SHAPES[shape], MOTION_PHRASES[motion], MOTION_PHRASES[motion],
            sum(BACKGROUNDS.values(), [])):
        text = template.format(colour=colour, noun=noun, motion=phrase, ing=ing, background=word)
        out.add(text.replace("a orange", "an orange"))
    return out


def test_eval_prompts():
    prompts = eval_prompts()
    assert len(prompts) == 36 and prompts == eval_prompts()
    held = heldout_triples()
    assert not set(TRAIN_TEMPLATES) & set(EVAL_TEMPLATES)
    asked = {}
    for i, (prompt, colour, motion) in enumerate(prompts):
        triple = held[i % 18]
        assert (colour, motion) == (triple[0], triple[2])
        assert prompt in _all_captions(*triple, EVAL_TEMPLATES)
        assert prompt not in _all_captions(*triple, TRAIN_TEMPLATES)
        asked.setdefault(triple, set()).add(prompt)
    assert len(asked) == 18 and all(len(v) == 2 for v in asked.values())


# ----------------------------------------------------------------------------------------------- tool
def test_make_t2v_dataset(tmp_path):
    from make_t2v_dataset import main

    from opensora.data.datasets import load_entries
    from wfvae.io.video import VideoReader

    out = tmp_path / "t2v"
    assert main([str(out), "--num-clips", "4", "--frames", "9", "--size", "32", "--fps", "8", "--quiet",
                 "--captions", "basic"]) == 0
    entries = load_entries(str(out / "train.json"))
    assert len(entries) == 4 and not any(e["slow"] for e in entries)
    held = set(heldout_triples())
    for entry in entries:
        assert os.path.isfile(entry["path"]) and os.path.isfile(entry["path"][:-4] + ".txt")
        assert len(set(entry["cap"])) == 3
        assert entry["resolution"] == {"height": 32, "width": 32} and entry["num_frames"] == 9
        assert (entry["colour"], entry["shape"], entry["motion"]) not in held
    with VideoReader(entries[0]["path"]) as reader:
        assert reader.num_frames == 9 and reader.size == (32, 32)
        assert reader.read().shape == (3, 9, 32, 32)
    lines = (out / "eval_prompts.txt").read_text().splitlines()
    labelled = json.loads((out / "eval_prompts.json").read_text())
    assert lines == [p for p, _, _ in eval_prompts()] and [d["prompt"] for d in labelled] == lines


def test_make_t2v_dataset_broad_captions_and_slow_clips(tmp_path):
    from make_t2v_dataset import main

    from opensora.data.datasets import load_entries
    from opensora.synthetic.vocabulary import all_heldout_words

    out = tmp_path / "t2v"
    assert main([str(out), "--num-clips", "12", "--frames", "5", "--size", "16", "--quiet",
                 "--slow-fraction", "0.5", "--seed", "3"]) == 0
    entries = load_entries(str(out / "train.json"))
    assert all(len(set(e["cap"])) == 4 for e in entries) and 0 < sum(e["slow"] for e in entries) < 12
    slow_words = ("slowly", "gently", "leisurely", "slow pace")
    for e in entries:
        for cap in e["cap"]:
            assert any(w in cap for w in slow_words) == e["slow"], cap
            assert not any(f" {w} " in f" {cap} " for w in all_heldout_words()), cap
    # a slow piece from the middle of its path is never a text-to-video sample (the data set's mask draws skip it)
    excluded = [e for e in entries if "exclude_masks" in e]
    assert excluded and all(e["slow"] and e["exclude_masks"] == ["t2iv"] for e in excluded)
    assert len(excluded) < sum(e["slow"] for e in entries)


@pytest.mark.parametrize("args", [[], ["--num-clips", "0"], ["--size", "4"], ["--fps", "0"], ["--frames", "x"],
                                  ["--slow-fraction", "1.5"], ["--captions-per-clip", "0"], ["--captions", "x"]])
def test_make_t2v_dataset_bad_args(tmp_path, capsys, args):
    from make_t2v_dataset import main

    argv = args if not args else [str(tmp_path / "out")] + args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_tuning_prompts_use_only_training_triples():
    from opensora.synthetic.shapes import tuning_prompts, train_triples

    prompts = tuning_prompts(36)
    train_pairs = {(c, m) for c, _, m in train_triples()}
    assert len(prompts) == 36 and all((c, m) in train_pairs for _, c, m in prompts)
    held = {p for p, _, _ in eval_prompts(36)}
    assert not held & {p for p, _, _ in prompts}


def test_slow_clips_know_whether_they_start_their_path():
    """``path_start``: a slow clip is the first piece of its frame-crossing path (the object at the trailing edge,
    where a long video starts) or a later piece; normal clips are whole motions."""
    import numpy as np

    from opensora.synthetic.shapes import _EXTENT, _MARGIN, make_spec

    rng = np.random.default_rng(0)
    starts = mids = 0
    for i in range(200):
        motion = ("left", "right", "up", "down")[i % 4]
        spec = make_spec("red", "circle", motion, rng, slow=True)
        edge = _EXTENT["circle"] * spec.r0 + _MARGIN
        first = {"left": spec.x0, "right": spec.x0, "up": spec.y0, "down": spec.y0}[motion]
        trailing = 1 - edge if motion in ("left", "up") else edge
        assert (abs(first - trailing) < 1e-9) == spec.path_start, (motion, first, trailing)
        starts, mids = starts + spec.path_start, mids + (not spec.path_start)
    assert 50 < starts < 110 and mids > 90   # 40% of slow clips start their path
    assert all(make_spec("red", "square", m, rng).path_start for m in ("left", "grow", "shrink"))
