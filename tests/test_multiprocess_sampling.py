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
        assert sorted(result) == ["dense", "skiparse"]
        for name, case in result.items():
            assert case["scale"] > 0.1, (rank, name)          # a real output, not zeros
            assert case["diff"] <= 1e-5, (rank, name, case)
            assert case["removed"], (rank, name)              # remove() restores the single-process model
            assert case["tokens"] == [14, 14, 14], (rank, name)  # ceil(27 / 2) tokens per rank in every block


def test_torchrun_sampling_cli_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m opensora.cli ...`` samples with sequence parallelism (the tiny model has 2
    heads; 5 frames at 48x48 are 2 x 3 x 3 = 18 tokens, Skiparse in the middle block) and rank 0 alone writes:
    the same latents as one process."""
    from opensora.cli.sample import main
    from opensora.cli.sample_io import load_latents
    from test_pipeline import make_pipeline_folder

    models = make_pipeline_folder(tmp_path / "models")
    args = ["--prompt", "a cat", "--model", models, "--frames", "5", "--height", "48", "--width", "48", "--steps", "2",
            "--max-length", "12", "--quiet", "--device", "cpu", "--fps", "8", "--seed", "3"]
    one = ["--output", tmp_path / "one" / "cat.mp4", "--save-latents", tmp_path / "one" / "z.safetensors"]
    (tmp_path / "one").mkdir()
    assert main([str(a) for a in args + one]) == 0
    (tmp_path / "two").mkdir()
    _, err = launch(["-m", "opensora.cli", *args, "--output", tmp_path / "two" / "cat.mp4", "--save-latents",
            tmp_path / "two" / "z.safetensors"], cwd=tmp_path, torchrun=2)
    assert "sequence parallel: the video tokens split over 2 processes" in err
    assert sorted(os.listdir(tmp_path / "two")) == ["cat.mp4", "z.safetensors"]
    one, _ = load_latents(str(tmp_path / "one" / "z.safetensors"))
    two, _ = load_latents(str(tmp_path / "two" / "z.safetensors"))
    assert one.shape == two.shape == (1, 4, 2, 6, 6) and one.abs().max() > 0.1
    assert (one - two).abs().max() <= 1e-5
