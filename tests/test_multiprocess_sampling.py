"""Sequence-parallel sampling on 2 processes (torchrun, gloo, CPU) equals single-process sampling: the tiny
denoiser with dense and Skiparse blocks on a token count that 2 does not divide (with latent and text masks and
controller residuals), and a whole pipeline sampling with guidance (tests/mp_sequence_parallel.py computes both
results on each rank)."""
import json
import os

from mp_probe import ROOT, launch

SCRIPT = os.path.join(ROOT, "tests", "mp_sequence_parallel.py")


def test_sequence_parallel_equals_one_process(tmp_path):
    launch([SCRIPT, tmp_path], cwd=tmp_path, torchrun=2)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert sorted(result) == ["dense", "pipeline", "skiparse"]
        for name, case in result.items():
            assert case["scale"] > 0.1, (rank, name)          # a real output, not zeros
            assert case["diff"] <= 1e-5, (rank, name, case)
            assert case["removed"], (rank, name)              # remove() restores the single-process model
