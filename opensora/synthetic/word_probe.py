"""Does a text encoder place a held-out word near the training words of the same meaning?

A denoiser conditioned on a frozen text encoder can only follow a word it never saw in a caption if the encoder
puts that word's caption close to captions that use training words of the same colour, shape or motion. This module
measures exactly that, before any training: for every held-out word of a vocabulary table
(:mod:`opensora.synthetic.vocabulary`) the caption ``template.format(word)`` is embedded (the mean of the encoder's
last hidden states over the caption's tokens, the sentence-level sense the cross-attention can draw on) and compared
by cosine similarity with the same caption of every training word; the probe is right when the nearest training word
has the held-out word's meaning. ``tools/probe_text_encoder.py`` prints it for any encoder folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from opensora.synthetic.vocabulary import Split

# (name, vocabulary table key, caption template): the three things a prompt must convey
PROBES = (("colour", "COLOUR_WORDS", "a {} ball"), ("shape", "NOUN_WORDS", "a red {}"),
          ("motion", "MOTION_WORDS", "a red ball {}"))


@dataclass(frozen=True)
class WordRow:
    word: str
    meaning: str
    nearest_word: str
    nearest_meaning: str

    @property
    def right(self) -> bool:
        return self.meaning == self.nearest_meaning


def mean_embeddings(encode: Callable[[Sequence[str]], Tuple[torch.Tensor, torch.Tensor]],
                    texts: Sequence[str]) -> torch.Tensor:
    """Unit-length mean of ``encode``'s hidden states ``(B, L, D)`` over the tokens its mask ``(B, L)`` keeps:
    ``(B, D)`` float32."""
    hidden, mask = encode(list(texts))
    m = mask.to(torch.float32).unsqueeze(-1)
    mean = (hidden.to(torch.float32) * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def probe(encode: Callable[[Sequence[str]], Tuple[torch.Tensor, torch.Tensor]], table: Dict[str, Split],
          template: str) -> List[WordRow]:
    """One :class:`WordRow` per held-out word of ``table`` (meaning -> {"train": words, "heldout": words}): the
    training word whose caption ``template.format(word)`` is nearest (cosine of :func:`mean_embeddings`)."""
    train = [(meaning, w) for meaning, split in table.items() for w in split["train"]]
    held = [(meaning, w) for meaning, split in table.items() for w in split["heldout"]]
    if not train or not held:
        raise ValueError("the table needs training and held-out words")
    e_train = mean_embeddings(encode, [template.format(w) for _, w in train])
    e_held = mean_embeddings(encode, [template.format(w) for _, w in held])
    nearest = (e_held @ e_train.T).argmax(dim=1).tolist()
    return [WordRow(w, meaning, train[j][1], train[j][0]) for (meaning, w), j in zip(held, nearest)]


def accuracy(rows: Sequence[WordRow]) -> float:
    """Share of rows whose nearest training word has the right meaning."""
    return sum(r.right for r in rows) / len(rows)
