"""The broad caption vocabulary: held-out words never reach a training caption, captions are varied and
deterministic, held-out-word prompts use only held-out words; slow clips and the shape reading."""
import re

import numpy as np
import pytest

from opensora.synthetic.long_check import SLOW_MIN_SCORE
from opensora.synthetic.shapes import (COLOURS, MOTIONS, SHAPES, SLOW_TRAVERSE_FRAMES, all_triples, analyse_clip,
                                       make_spec, render_clip, spread_train_triples)
from opensora.synthetic.vocabulary import (COLOUR_WORDS, MOTION_WORDS, NOUN_WORDS, VERB_WORDS, all_heldout_words,
                                           broad_caption, broad_captions, heldout_word_prompts, slow_prompts)


def _has(text, phrase):
    return re.search(rf"(?<![a-z-]){re.escape(phrase)}(?![a-z-])", text.lower()) is not None


def test_every_attribute_has_train_and_heldout_words_that_do_not_overlap():
    for table, keys in ((COLOUR_WORDS, COLOURS), (NOUN_WORDS, SHAPES), (MOTION_WORDS, MOTIONS), (VERB_WORDS, MOTIONS)):
        assert set(table) == set(keys)
        for split in table.values():
            assert len(split["train"]) >= 5 or table is VERB_WORDS
            assert split["heldout"] and not set(split["train"]) & set(split["heldout"])


def test_training_captions_never_use_a_heldout_word_and_vary():
    rng = np.random.default_rng(0)
    heldout = all_heldout_words()
    seen = set()
    for colour, shape, motion in all_triples():
        for slow in (False, True):
            for cap in broad_captions(colour, shape, motion, "gray", slow, rng, k=4):
                assert not any(_has(cap, w) for w in heldout), cap
                assert any(_has(cap, w) for w in COLOUR_WORDS[colour]["train"]), cap
                assert any(_has(cap, w) for w in NOUN_WORDS[shape]["train"]), cap
                seen.add(cap)
    assert len(seen) > 0.95 * len(all_triples()) * 2 * 4       # almost no repeats
    a = [broad_caption("red", "circle", "left", "dark", False, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]


def test_heldout_word_prompts_use_heldout_colour_noun_and_motion():
    triples = spread_train_triples(36)
    prompts = heldout_word_prompts(triples, 36)
    assert len(prompts) == 36 and len({p for p, *_ in prompts}) == 36
    for prompt, colour, motion, shape in prompts:
        assert any(_has(prompt, w) for w in COLOUR_WORDS[colour]["heldout"]), prompt
        assert any(_has(prompt, w) for w in NOUN_WORDS[shape]["heldout"]), prompt
        assert any(_has(prompt, w) for w in MOTION_WORDS[motion]["heldout"] + VERB_WORDS[motion]["heldout"]), prompt
    slow = slow_prompts(triples, 6)
    assert all(any(_has(p, w) for w in ("slowly", "gently", "leisurely", "slow pace")) for p, *_ in slow)


@pytest.mark.parametrize("motion", MOTIONS)
def test_slow_clips_are_pieces_of_a_frame_crossing_path(motion):
    rng = np.random.default_rng(1)
    for _ in range(20):
        spec = make_spec("blue", "circle", motion, rng, slow=True)
        assert spec.slow
        if motion in ("grow", "shrink"):
            ratio = abs(np.log(spec.r1 / spec.r0))
            assert 0.1 < ratio < 0.2        # ln(0.235 / 0.07) * 16 / 128 ~ 0.15
        else:
            travel = abs(spec.x1 - spec.x0) + abs(spec.y1 - spec.y0)
            assert 0.05 < travel < 0.11     # (1 - 2e) * 16 / (SLOW_TRAVERSE_FRAMES - 1)
        got = analyse_clip(render_clip(spec, 17, 96), min_score=SLOW_MIN_SCORE)
        assert got["motion"] == motion, (spec, got)
    assert SLOW_TRAVERSE_FRAMES == 129


def test_shapes_are_read_on_rendered_clips():
    rng = np.random.default_rng(2)
    for colour, shape, motion in all_triples():
        got = analyse_clip(render_clip(make_spec(colour, shape, motion, rng), 17, 96))
        assert got["shape"] == shape, (colour, shape, motion, got["fill_ratio"])
