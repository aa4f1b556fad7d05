"""Every YAML under configs/ parses through the training CLI (``--print_config``: class paths resolve, every key
is an argument of its class, values have the right types)."""
import glob
import os
import warnings

import pytest
import yaml

REPO = os.path.join(os.path.dirname(__file__), "..")
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*", "*.yaml")))
EXPECTED = {"wfvae": ("wfvae.training.WFVAETraining", "wfvae.training.VideoDataModule"),
            "opensora": ("opensora.", "opensora.")}


def test_configs_are_found():
    names = {os.path.relpath(c, REPO) for c in CONFIGS}
    for name in ("wfvae/tiny.yaml", "wfvae/tiny_stage1.yaml", "wfvae/s8.yaml", "wfvae/l16.yaml", "opensora/t2v_v1_3.yaml",
                 "opensora/i2v_v1_3.yaml", "opensora/t2v_synthetic.yaml", "opensora/t2v_synthetic_stage2.yaml"):
        assert os.path.join("configs", name) in names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: os.path.relpath(c, os.path.join(REPO, "configs")))
def test_config_parses(config, capsys):
    from tools.train import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", config, "--print_config"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    parsed = yaml.safe_load(out)
    model, data = EXPECTED[os.path.basename(os.path.dirname(config))]
    assert parsed["model"]["class_path"].startswith(model)
    assert parsed["data"]["class_path"].startswith(data)
