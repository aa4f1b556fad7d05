"""tools/train.py: bad data stops before any run folder with one ``error:`` line (exit 2); the tiny configs run on
the bundled clip; the progress bar counts optimizer steps; a failed or interrupted run leaves no empty log folder;
``--help`` is served from its cache."""
import json
import os
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import train  # noqa: E402  (tools/train.py)

CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")
WFVAE_TINY = os.path.join(ROOT, "configs", "wfvae", "tiny.yaml")
OPENSORA_TINY = os.path.join(ROOT, "configs", "opensora", "tiny.yaml")


class CrashingModel(BoringModel):
    """Fails at its third step (a bug or a bad batch in the middle of a run)."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            raise RuntimeError("boom at step 2")
        return super().training_step(batch, batch_idx)


class InterruptedModel(BoringModel):
    """Ctrl+C at the third step."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            raise KeyboardInterrupt
        return super().training_step(batch, batch_idx)


def run(argv, capsys):
    """``tools/train.py`` in-process: (exit code, stdout, stderr)."""
    code = train.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code, err, expected):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty current folder (the configs' relative run folders would land here) and an empty help cache."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cwd


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_data")
    (root / "empty").mkdir()
    (root / "corrupt").mkdir()
    for name, size in (("a.mp4", 4000), ("b.mp4", 3000)):
        (root / "corrupt" / name).write_bytes(os.urandom(size))
    (root / "broken.json").write_text('[{"path": "a.mp4",\n')
    (root / "dict.json").write_text('{"path": "a.mp4"}')
    (root / "corrupt.json").write_text(json.dumps([{"path": "corrupt/a.mp4", "cap": "x", "num_frames": 75,
                                                    "fps": 25.0, "resolution": {"height": 270, "width": 480}}]))
    (root / "notes.txt").write_text("# nothing listed\n")
    return root


WFVAE_ROWS = [  # (data source relative to bad_data, expected part of the error line)
    ("missing", "does not exist (setting data.init_args.data)"),
    ("empty", "holds no videos or images"),
    ("corrupt", "none of the 2 files of setting data.init_args.data can be read"),
    ("broken.json", "is not valid JSON (Expecting"),
    ("dict.json", "must hold a JSON list"),
    ("notes.txt", "holds no videos or images"),
]


@pytest.mark.parametrize("source,expected", WFVAE_ROWS, ids=[r[0] for r in WFVAE_ROWS])
def test_bad_vae_data_is_one_error_line_before_any_run_folder(work, bad_data, capsys, source, expected):
    code, out, err = run(["fit", "--config", WFVAE_TINY, f"--data.init_args.data=[{bad_data / source}]",
                          f"--data.init_args.val_data=[{CLIP}]"], capsys)
    assert_one_error(code, err, expected)
    assert str(bad_data / source) in err
    assert os.listdir(work) == []  # no runs/, no logs/version_N


OPENSORA_ROWS = [
    ("missing.json", "does not exist (setting data.init_args.data)"),
    ("broken.json", "is not valid JSON (Expecting"),
    ("dict.json", "must hold a JSON list"),
    ("corrupt.json", "none of the 1 file of setting data.init_args.data can be read"),
]


@pytest.mark.parametrize("source,expected", OPENSORA_ROWS, ids=[r[0] for r in OPENSORA_ROWS])
def test_bad_annotations_are_one_error_line_before_any_run_folder(work, bad_data, capsys, source, expected):
    code, out, err = run(["fit", "--config", OPENSORA_TINY, f"--data.init_args.data={bad_data / source}",
                          "--data.init_args.val_data=null",
                          f"--model.init_args.vae={os.path.join(ROOT, 'tests', 'data', 'wfvae_tiny')}"], capsys)
    assert_one_error(code, err, expected)
    assert os.listdir(work) == []


def test_relative_data_paths_name_the_current_folder(work, capsys):
    code, out, err = run(["fit", "--config", WFVAE_TINY], capsys)  # the config's paths are relative to the repo
    assert_one_error(code, err, "relative to the current folder")
    assert str(work) in err and "assets/bigbuckbunny.mp4" in err
    assert os.listdir(work) == []


@pytest.mark.parametrize("argv,expected", [
    (["fit", "--config", "nowhere.yaml"], "nowhere.yaml"),
    (["fit", "--config", WFVAE_TINY, "--trainer.max_stepz", "3"], "unrecognized arguments: --trainer.max_stepz"),
    (["fitt"], "invalid choice: 'fitt'"),
], ids=["missing-config", "unknown-option", "unknown-subcommand"])
def test_bad_arguments_are_one_error_line(work, capsys, argv, expected):
    code, out, err = run(argv, capsys)
    assert_one_error(code, err, expected)
    assert out == "" and os.listdir(work) == []


def test_partly_corrupt_data_is_skipped_with_a_counted_warning(bad_data, tmp_path):
    from wfvae.training.data import UnreadableFileWarning, VideoDataModule

    listing = tmp_path / "files.txt"
    listing.write_text(f"{bad_data / 'corrupt' / 'a.mp4'}\n{CLIP}\n")
    with pytest.warns(UnreadableFileWarning, match=r"skipped 1 unreadable file of the 2 .*a\.mp4"):
        dm = VideoDataModule(data=[str(listing)], num_frames=5, resolution=32, crop_size=32, num_workers=0)
    dm.setup("fit")
    assert list(dm.train_set.skipped) == [str(bad_data / "corrupt" / "a.mp4")]
    dm.train_set.skipped[CLIP] = "gone"  # every file has now failed: the dataset stops instead of looping forever
    with pytest.raises(ValueError, match="every one of the 2 data files failed"):
        dm.train_set[0]


def test_empty_validation_split_says_so_once():
    from wfvae.training.data import VideoDataModule
    from wfvae.training.data_checks import NoValidationWarning

    with pytest.warns(NoValidationWarning, match="val_fraction 0.01 .* validation never runs") as record:
        VideoDataModule(data=[CLIP], val_fraction=0.01, num_frames=5, resolution=32, crop_size=32, num_workers=0)
    assert len([w for w in record if issubclass(w.category, NoValidationWarning)]) == 1


# ---------------------------------------------------------------------------------------------- tiny configs
def test_tiny_configs_use_the_bundled_clip(capsys):
    import yaml

    from opensora.data.datasets import load_entries

    for name in ("wfvae/tiny.yaml", "opensora/tiny.yaml", "opensora/structure_controller_tiny.yaml"):
        with pytest.raises(SystemExit) as exc:
            train.main(["fit", "--config", os.path.join(ROOT, "configs", name), "--print_config"])
        assert exc.value.code in (0, None)
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["trainer"]["max_steps"] <= 20, name  # a one-minute run
        data = cfg["data"]["init_args"]
        if name == "wfvae/tiny.yaml":
            assert data["data"] == data["val_data"] == ["assets/bigbuckbunny.mp4"]
        elif name == "opensora/tiny.yaml":
            entries = load_entries(os.path.join(ROOT, data["data"]))
            assert {os.path.realpath(e["path"]) for e in entries} == {os.path.realpath(CLIP)}
        else:  # synthetic data, generated in memory
            assert cfg["data"]["class_path"] == "opensora.synthetic.control_data.SyntheticControlData"


def test_tiny_vae_config_fits_and_saves_last_ckpt(work, capsys):
    """The README's first command on the bundled clip, 2 steps; the header's resume line needs last.ckpt."""
    code, out, err = run(["fit", "--config", WFVAE_TINY, f"--data.init_args.data=[{CLIP}]",
                          f"--data.init_args.val_data=[{CLIP}]", "--trainer.max_steps=2",
                          "--data.init_args.samples_per_epoch=2", "--data.init_args.num_frames=5",
                          "--data.init_args.val_num_frames=5", "--trainer.log_every_n_steps=1"], capsys)
    assert code == 0, err
    assert (work / "runs/wfvae-tiny/checkpoints/last.ckpt").is_file()
    assert torch.load(work / "runs/wfvae-tiny/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    for noise in ("💡", "LeafSpec", "module(s) in eval mode", "val_dataloader", "Seed set", "Epoch 0/-"):
        assert noise not in out + err
    assert "2/2" in out  # the step bar


# ---------------------------------------------------------------------------------------------- progress bar
def test_progress_bar_counts_steps_across_epochs(tmp_path):
    import lightning as L

    from wfvae.training.progress import StepProgressBar

    bar = StepProgressBar()
    trainer = L.Trainer(max_steps=5, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[bar],
                        default_root_dir=str(tmp_path))
    trainer.fit(BoringModel())
    assert trainer.current_epoch == 3  # 5 steps of 2-batch epochs
    assert bar.train_progress_bar.total == 5 and bar.train_progress_bar.n == 5

    plain = StepProgressBar()  # no max_steps: Lightning's per-epoch bar
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[plain],
                        default_root_dir=str(tmp_path))
    trainer.fit(BoringModel())
    assert plain.train_progress_bar.total == 3


# ---------------------------------------------------------------------------------------------- failed runs
def boring_config(tmp_path, model):
    config = tmp_path / "boring.yaml"
    config.write_text(f"""
model: {{class_path: test_train_cli.{model}}}
data: {{class_path: lightning.pytorch.demos.boring_classes.BoringDataModule}}
trainer:
  max_steps: 5
  limit_val_batches: 0
  log_every_n_steps: 10
  enable_model_summary: false
  default_root_dir: runs/boring
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: runs/boring, name: logs}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: runs/boring/checkpoints, save_last: true, every_n_train_steps: 10}}
""")
    return config


@pytest.mark.parametrize("model,code,expected", [
    ("CrashingModel", 2, "error: boom at step 2"),
    ("InterruptedModel", 130, "error: interrupted"),
])
def test_failed_run_leaves_no_empty_log_folder(work, tmp_path, capsys, model, code, expected):
    got, out, err = run(["fit", "--config", boring_config(tmp_path, model)], capsys)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert os.listdir(work) == []  # runs/boring/logs/version_0 held only config.yaml + hparams.yaml: removed


def test_failed_run_keeps_folders_that_existed(work, tmp_path, capsys):
    (work / "runs" / "boring" / "logs").mkdir(parents=True)
    got, out, err = run(["fit", "--config", boring_config(tmp_path, "CrashingModel")], capsys)
    assert got == 2
    assert sorted(os.listdir(work / "runs" / "boring")) == ["logs"] and os.listdir(work / "runs/boring/logs") == []


# ---------------------------------------------------------------------------------------------- --help
def test_help_is_cached_and_served_without_importing_torch(work, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code in (0, None)
    first = capsys.readouterr().out
    assert "fit" in first and "usage:" in first
    cached = train.help_cache_file(["--help"])
    assert os.path.isfile(cached) and open(cached).read() == first
    script = ("import runpy, sys\nsys.argv = ['train.py', '--help']\n"
              "try:\n    runpy.run_path(sys.argv_path, run_name='__main__')\nexcept SystemExit as e:\n"
              "    assert e.code in (0, None)\nprint('torch imported:', 'torch' in sys.modules)\n")
    script = script.replace("sys.argv_path", repr(os.path.join(ROOT, "tools", "train.py")))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": os.environ.get("COLUMNS", "")}
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout == first + "torch imported: False\n" or "torch imported: False" in got.stdout
