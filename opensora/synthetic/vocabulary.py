"""A broad caption vocabulary for the synthetic shapes, with a held-out split of *words*.

:mod:`opensora.synthetic.shapes` captions each clip from a handful of words per colour, shape and motion. People
write "an emerald orb drifting to the left" or "watch the crimson cube slowly climb upward". This module gives, for
every colour, shape and motion, many synonyms and sentence structures (with distractor words a person adds:
"in this clip", "smoothly", "simple animation"), and splits every word list in two:

* ``train``: the only words a training caption uses (:func:`broad_caption`);
* ``heldout``: words never written into a training caption, used only by :func:`heldout_word_prompts` to measure
  whether the model follows vocabulary it never saw (through the text encoder's sense of the word).

Speed: a clip may be *slow* (:data:`SLOW_WORDS`: its path is a piece of a traverse of the whole frame that takes
``SLOW_TRAVERSE_FRAMES`` frames, so a chained long video can keep going in one direction) and then its caption
always says so; other clips move at the usual speed and are sometimes called fast (:data:`FAST_WORDS`).

Everything is a pure function of a ``numpy`` generator: the same seed gives the same captions.
"""
from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

Split = Dict[str, Tuple[str, ...]]

COLOUR_WORDS: Dict[str, Split] = {
    "red": {"train": ("red", "crimson", "scarlet", "cherry", "blood-red", "tomato-red", "rose-red", "fire-red",
                      "bright red", "deep red"),
            "heldout": ("ruby", "strawberry")},
    "orange": {"train": ("orange", "tangerine", "amber", "apricot", "pumpkin", "carrot-orange", "copper",
                         "bright orange", "rust-orange"),
               "heldout": ("marigold", "mango")},
    "yellow": {"train": ("yellow", "golden", "gold", "lemon", "canary", "mustard", "sunflower", "bright yellow",
                         "butter-yellow"),
               "heldout": ("banana", "daffodil")},
    "green": {"train": ("green", "emerald", "lime", "jade", "grass-green", "forest green", "bright green",
                        "leafy green", "mint"),
              "heldout": ("clover", "apple-green")},
    "blue": {"train": ("blue", "azure", "cobalt", "sapphire", "navy", "sky-blue", "royal blue", "cerulean",
                       "bright blue", "ocean blue"),
             "heldout": ("denim", "cornflower")},
    "purple": {"train": ("purple", "violet", "lavender", "plum", "amethyst", "lilac", "grape", "magenta-purple",
                         "bright purple"),
               "heldout": ("orchid", "eggplant")},
}
NOUN_WORDS: Dict[str, Split] = {
    "circle": {"train": ("ball", "circle", "disc", "dot", "sphere", "orb", "round shape", "bubble"),
               "heldout": ("marble", "coin")},
    "square": {"train": ("square", "box", "block", "tile", "cube", "square shape", "crate"),
               "heldout": ("slab", "brick")},
    "triangle": {"train": ("triangle", "wedge", "pyramid", "triangular shape", "cone"),
                 "heldout": ("arrowhead", "delta")},
}
# Participle phrases ("a red ball ___"); the finite forms ("the red ball ___") are in VERB_WORDS.
MOTION_WORDS: Dict[str, Split] = {
    "left": {"train": ("moving left", "sliding to the left", "drifting left", "travelling leftward", "heading left",
                       "going left", "gliding to the left", "moving from right to left", "rolling left",
                       "moving towards the left edge"),
             "heldout": ("scooting leftwards", "making its way to the left")},
    "right": {"train": ("moving right", "sliding to the right", "drifting right", "travelling rightward",
                        "heading right", "going right", "gliding to the right", "moving from left to right",
                        "rolling right", "moving towards the right edge"),
              "heldout": ("scooting rightwards", "making its way to the right")},
    "up": {"train": ("moving up", "rising", "floating upward", "climbing upward", "ascending", "going up",
                     "drifting upward", "flying up", "moving towards the top", "lifting upward"),
           "heldout": ("soaring skyward", "making its way to the top")},
    "down": {"train": ("moving down", "falling", "sinking downward", "dropping down", "descending", "going down",
                       "drifting downward", "tumbling down", "moving towards the bottom", "sliding downward"),
             "heldout": ("plummeting", "making its way to the bottom")},
    "grow": {"train": ("growing", "getting bigger", "expanding", "growing larger", "swelling up", "enlarging",
                       "inflating", "increasing in size", "scaling up"),
             "heldout": ("ballooning", "becoming huge")},
    "shrink": {"train": ("shrinking", "getting smaller", "contracting", "shrinking away", "dwindling", "deflating",
                         "decreasing in size", "scaling down", "becoming smaller"),
               "heldout": ("diminishing", "becoming tiny")},
}
VERB_WORDS: Dict[str, Split] = {
    "left": {"train": ("moves left", "slides to the left", "drifts left", "travels leftward", "heads left",
                       "glides to the left", "goes from right to left"),
             "heldout": ("scoots leftwards",)},
    "right": {"train": ("moves right", "slides to the right", "drifts right", "travels rightward", "heads right",
                        "glides to the right", "goes from left to right"),
              "heldout": ("scoots rightwards",)},
    "up": {"train": ("moves up", "rises", "floats upward", "climbs upward", "ascends", "goes up", "flies up"),
           "heldout": ("soars skyward",)},
    "down": {"train": ("moves down", "falls", "sinks downward", "drops down", "descends", "goes down",
                       "tumbles down"),
             "heldout": ("plummets",)},
    "grow": {"train": ("grows", "gets bigger", "expands", "grows larger", "swells up", "enlarges", "inflates"),
             "heldout": ("balloons",)},
    "shrink": {"train": ("shrinks", "gets smaller", "contracts", "dwindles", "deflates", "scales down"),
               "heldout": ("diminishes",)},
}
SLOW_WORDS: Split = {"train": ("slowly", "gently", "leisurely", "at a slow pace", "very slowly", "steadily and slowly"),
                     "heldout": ("unhurriedly", "sluggishly")}
FAST_WORDS: Split = {"train": ("quickly", "fast", "swiftly", "rapidly"), "heldout": ("speedily",)}
BACKGROUND_WORDS: Dict[str, Tuple[str, ...]] = {
    "gray": ("gray", "grey", "plain", "neutral"),
    "dark": ("dark", "black", "dim"),
    "light": ("light", "white", "pale", "bright"),
    "gradient": ("gradient", "shaded", "fading"),
    "striped": ("striped", "lined"),
    "textured": ("textured", "noisy", "mottled", "grainy"),
}
PREFIXES: Tuple[str, ...] = ("", "", "", "", "in this clip, ", "a simple animation: ", "minimal animation of ",
                             "cartoon of ", "a short clip showing ", "high quality video, ", "4k, ")
SUFFIXES: Tuple[str, ...] = ("", "", "", "", ", simple animation", ", smooth motion", ", high quality",
                             " in the frame", ", centered composition", ", flat colors")
# Fields: {colour} {noun} {ing} (participle phrase) {verb} (finite phrase) {background}; {speed} is an adverb or
# empty, placed by :func:`_fill`.
TRAIN_STRUCTURES: Tuple[str, ...] = (
    "a {colour} {noun} {ing}",
    "the {colour} {noun} {verb}",
    "a {colour} {noun} {ing} on a {background} background",
    "a video of a {colour} {noun} {ing}",
    "one {colour} {noun} {ing}",
    "a small {colour} {noun} {ing}",
    "{colour} {noun} {ing}",
    "a {colour} {noun} {ing} on the screen",
    "there is a {colour} {noun} that {verb}",
    "a {colour} {noun}, {ing}",
    "{ing}: a {colour} {noun}",
    "the {noun} is {colour} and {verb}",
    "a {background} background with a {colour} {noun} {ing}",
    "watch as a {colour} {noun} {verb}",
    "a {noun} in {colour} {ing}",
    "animation of the {colour} {noun} {ing} across a {background} scene",
)
EVAL_STRUCTURES: Tuple[str, ...] = (
    "footage of a {colour} {noun} {ing}",
    "a single {colour} {noun} {ing} over a {background} backdrop",
    "here a {colour} {noun} is {ing}",
    "we see one {colour} {noun} which {verb}",
)


def words(table: Dict[str, Split], key: str, split: str) -> Tuple[str, ...]:
    """The ``split`` ("train" or "heldout") words of ``key`` in ``table``."""
    return table[key][split]


def all_heldout_words() -> List[str]:
    """Every held-out word or phrase (for checking that no training caption contains one)."""
    out = []
    for table in (COLOUR_WORDS, NOUN_WORDS, MOTION_WORDS, VERB_WORDS):
        for split in table.values():
            out.extend(split["heldout"])
    return out + list(SLOW_WORDS["heldout"]) + list(FAST_WORDS["heldout"])


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _fill(structure: str, colour: str, shape: str, motion: str, background: str, speed: str,
          rng: np.random.Generator, split: str, affix: bool) -> str:
    """One sentence; ``speed`` is "slow", "fast" or "" (an adverb of that kind goes after the motion phrase or,
    now and then, before it)."""
    ing, verb = _pick(rng, MOTION_WORDS[motion][split]), _pick(rng, VERB_WORDS[motion][split])
    if speed:
        adverb = _pick(rng, (SLOW_WORDS if speed == "slow" else FAST_WORDS)[split])
        if rng.random() < 0.3 and " " not in adverb:
            ing, verb = f"{adverb} {ing}", f"{adverb} {verb}"
        else:
            ing, verb = f"{ing} {adverb}", f"{verb} {adverb}"
    text = structure.format(colour=_pick(rng, COLOUR_WORDS[colour][split]), noun=_pick(rng, NOUN_WORDS[shape][split]),
                            ing=ing, verb=verb, background=_pick(rng, BACKGROUND_WORDS[background]))
    if affix:
        text = _pick(rng, PREFIXES) + text + _pick(rng, SUFFIXES)
    text = re.sub(r"\b([aA]) (?=[aeiou])", r"\1n ", text)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def broad_caption(colour: str, shape: str, motion: str, background: str, slow: bool,
                  rng: np.random.Generator) -> str:
    """A training caption: training words only, a random :data:`TRAIN_STRUCTURES` sentence with distractors.
    Slow clips always carry a slow word; others carry a fast word one time in five."""
    speed = "slow" if slow else ("fast" if rng.random() < 0.2 else "")
    structure = _pick(rng, TRAIN_STRUCTURES)
    return _fill(structure, colour, shape, motion, background, speed, rng, "train", affix=True)


def broad_captions(colour: str, shape: str, motion: str, background: str, slow: bool, rng: np.random.Generator,
                   k: int = 4) -> List[str]:
    """``k`` distinct training captions of one clip (see :func:`broad_caption`)."""
    out: List[str] = []
    for _ in range(20 * k):
        text = broad_caption(colour, shape, motion, background, slow, rng)
        if text not in out:
            out.append(text)
        if len(out) == k:
            break
    return out


def heldout_word_prompts(triples: Sequence[Tuple[str, str, str]], n: int = 36, seed: int = 0,
                         split: str = "heldout") -> List[Tuple[str, str, str, str]]:
    """``n`` ``(prompt, colour, motion, shape)`` written with held-out words only (colour, noun and motion) in the
    evaluation structures, for ``triples`` (prompt ``i`` is about triple ``i % len(triples)``). ``split="train"``:
    the training synonyms instead, in the same structures (the vocabulary of training, on new sentences)."""
    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUND_WORDS)
    out = []
    for i in range(n):
        colour, shape, motion = triples[i % len(triples)]
        structure = EVAL_STRUCTURES[(i + i // len(triples)) % len(EVAL_STRUCTURES)]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        out.append((_fill(structure, colour, shape, motion, background, "", rng, split, affix=False),
                    colour, motion, shape))
    return out


def slow_prompts(triples: Sequence[Tuple[str, str, str]], n: int = 6, seed: int = 0,
                 split: str = "train") -> List[Tuple[str, str, str, str]]:
    """``n`` ``(prompt, colour, motion, shape)`` asking for slow motion (for long videos), in the evaluation
    structures with ``split`` words, for ``triples`` (prompt ``i`` is about triple ``i % len(triples)``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        colour, shape, motion = triples[i % len(triples)]
        structure = EVAL_STRUCTURES[i % len(EVAL_STRUCTURES)]
        out.append((_fill(structure, colour, shape, motion, "gray", "slow", rng, split, affix=False),
                    colour, motion, shape))
    return out
