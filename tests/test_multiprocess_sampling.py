"""Multi-process launches of the sampling and codec commands (torchrun, gloo, CPU).

Sequence-parallel sampling on 2 processes equals single-process sampling: the tiny denoiser with dense and Skiparse
blocks on a token count that 2 does not divide (with latent and text masks and controller residuals), and a whole
sampling through ``python -m opensora.cli``. ``python -m wfvae.cli encode`` splits a list of inputs over 2 processes.

Process start-up (torch, diffusers imports) costs more than these checks, so they share one ``torchrun`` launch
(module-scoped fixture :func:`launched`): tests/mp_sequence_parallel.py computes the model cases on each rank, then
runs both commands as ``python -m`` runs them, in the same processes."""
import json
import os
import shutil

import pytest
import torch

from mp_probe import ROOT, launch

SCRIPT = os.path.join(ROOT, "tests", "mp_sequence_parallel.py")
CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")
VAE = os.path.join(ROOT, "tests", "data", "wfvae_tiny")
# the tiny model has 2 heads; 5 frames at 48x48 are 2 x 3 x 3 = 18 tokens, Skiparse in the middle block
SAMPLE = ["--prompt", "a cat", "--frames", "5", "--height", "48", "--width", "48", "--steps", "2", "--max-length", "12",
          "--quiet", "--device", "cpu", "--fps", "8", "--seed", "3"]
ENCODE = ["--model", VAE, "--frames", "5", "--size", "32x32", "--quiet"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The one ``torchrun --nproc_per_node 2`` launch: returns its folder and each rank's record (``rank<r>.json``:
    ``models`` (the model cases) and ``commands`` (exit status and standard error of each command))."""
    from test_pipeline import make_pipeline_folder

    root = tmp_path_factory.mktemp("mp_sample")
    models = make_pipeline_folder(root / "models")
    (root / "in").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(CLIP, root / "in" / name)
    (root / "two").mkdir()
    commands = [
        {"name": "sample", "module": "opensora.cli",
         "argv": [*SAMPLE, "--model", models, "--output", str(root / "two" / "cat.mp4"),
                  "--save-latents", str(root / "two" / "z.safetensors")]},
        {"name": "encode", "module": "wfvae.cli",
         "argv": ["encode", *[str(root / "in" / n) for n in ("a.mp4", "b.mp4", "c.mp4")], str(root / "lat"),
                  *ENCODE, "--device", "cpu"]},
    ]
    (root / "commands.json").write_text(json.dumps(commands))
    launch([SCRIPT, root, root / "commands.json"], cwd=root, torchrun=2)
    return root, [json.loads((root / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_sequence_parallel_equals_one_process(launched):
    _, ranks = launched
    for rank, record in enumerate(ranks):
        result = record["models"]
        assert sorted(result) == ["dense", "skiparse"]
        for name, case in result.items():
            assert case["scale"] > 0.1, (rank, name)          # a real output, not zeros
            assert case["diff"] <= 1e-5, (rank, name, case)
            assert case["removed"], (rank, name)              # remove() restores the single-process model
            assert case["tokens"] == [14, 14, 14], (rank, name)  # ceil(27 / 2) tokens per rank in every block


def test_torchrun_sampling_cli_equals_one_process(launched, tmp_path):
    """``torchrun --nproc_per_node 2 -m opensora.cli ...`` samples with sequence parallelism and rank 0 alone
    writes: the same latents as one process."""
    from opensora.cli.sample import main
    from opensora.cli.sample_io import load_latents

    root, ranks = launched
    for rank, record in enumerate(ranks):
        assert record["commands"]["sample"]["code"] == 0, (rank, record["commands"]["sample"]["stderr"][-4000:])
    err = ranks[0]["commands"]["sample"]["stderr"]
    assert "sequence parallel: the video tokens split over 2 processes" in err
    assert sorted(os.listdir(root / "two")) == ["cat.mp4", "z.safetensors"]
    one = ["--model", str(root / "models"), "--output", str(tmp_path / "cat.mp4"), "--save-latents",
           str(tmp_path / "z.safetensors")]
    assert main([*SAMPLE, *one]) == 0
    one, _ = load_latents(str(tmp_path / "z.safetensors"))
    two, _ = load_latents(str(root / "two" / "z.safetensors"))
    assert one.shape == two.shape == (1, 4, 2, 6, 6) and one.abs().max() > 0.1
    assert (one - two).abs().max() <= 1e-5


def test_torchrun_encodes_a_list_across_two_processes(launched, tmp_path):
    """(from tests/test_cli.py) ``torchrun --nproc_per_node 2 -m wfvae.cli encode a b c OUT``: rank r takes inputs
    r, r + 2, ...; together they write every latents file, each the same as one process writes."""
    from wfvae import WFVAE
    from wfvae.cli import main, read_latents

    root, ranks = launched
    for rank, record in enumerate(ranks):
        assert record["commands"]["encode"]["code"] == 0, (rank, record["commands"]["encode"]["stderr"][-4000:])
    assert sorted(os.listdir(root / "lat")) == ["a.safetensors", "b.safetensors", "c.safetensors"]
    vae = WFVAE.from_pretrained(VAE)
    single = tmp_path / "c.safetensors"
    assert main(["encode", str(root / "in" / "c.mp4"), str(single), *ENCODE]) == 0
    assert torch.equal(read_latents(str(root / "lat" / "c.safetensors"), vae)[0], read_latents(str(single), vae)[0])
