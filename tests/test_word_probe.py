"""The text-encoder word probe (opensora.synthetic.word_probe) and its tool."""
import json

import pytest
import torch

from opensora.synthetic.word_probe import WordRow, accuracy, mean_embeddings, probe

TABLE = {"red": {"train": ("red", "crimson"), "heldout": ("ruby", "cherry")},
         "blue": {"train": ("blue", "azure"), "heldout": ("denim",)}}
VECTORS = {"red": [1.0, 0.0], "crimson": [0.9, 0.1], "ruby": [0.8, 0.3], "cherry": [0.1, 0.9],  # cherry: wrong
           "blue": [0.0, 1.0], "azure": [0.2, 0.9], "denim": [0.3, 0.95], "a": [0.0, 0.0], "ball": [0.0, 0.0]}


def fake_encode(texts):
    """Hidden states = one vector per word, padded to 4 tokens with huge values the mask must hide."""
    hidden = torch.full((len(texts), 4, 2), 1e6)
    mask = torch.zeros(len(texts), 4, dtype=torch.long)
    for i, text in enumerate(texts):
        for j, word in enumerate(text.split()):
            hidden[i, j] = torch.tensor(VECTORS[word])
            mask[i, j] = 1
    return hidden, mask


def test_mean_embeddings_ignore_padding_and_are_unit_length():
    e = mean_embeddings(fake_encode, ["red", "a red ball"])
    assert torch.allclose(e, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_probe_finds_the_nearest_training_word_of_each_heldout_word():
    rows = probe(fake_encode, TABLE, "a {} ball")
    assert rows == [WordRow("ruby", "red", "crimson", "red"), WordRow("cherry", "red", "azure", "blue"),
                    WordRow("denim", "blue", "azure", "blue")]
    assert accuracy(rows) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="held-out"):
        probe(fake_encode, {"red": {"train": ("red",), "heldout": ()}}, "{}")


def test_tool_on_a_small_encoder_folder(tmp_path, capsys):
    import sys

    sys.path.insert(0, "tools")
    from probe_text_encoder import main
    from test_pipeline import make_text_encoder_folder

    folder = make_text_encoder_folder(str(tmp_path / "te"))
    report = tmp_path / "probe.json"
    assert main([folder, "--rows", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    for name in ("colour", "shape", "motion"):
        assert f"{name}: " in out and 0.0 <= data[name]["accuracy"] <= 1.0 and data[name]["rows"]
    assert main([folder, "--json", str(report)]) == 2  # an existing report is kept without --overwrite
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("error:") == 2
