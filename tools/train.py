"""Training entry point (Lightning CLI): ``python tools/train.py fit --config configs/wfvae/tiny.yaml``.

The model and data classes come from the config (``model.class_path`` / ``data.class_path``), so the same entry
point trains the WF-VAE (``wfvae.training.WFVAETraining`` + ``wfvae.training.VideoDataModule``) and later models.
Any config value can be overridden on the command line, e.g.::

    python tools/train.py fit --config configs/wfvae/s8.yaml --model.init_from /ckpt/WF-VAE-S-8Chn \\
        --data.data "[/data/videos, /data/anno.json]" --trainer.max_steps 100000
    python tools/train.py fit --config configs/wfvae/tiny.yaml --ckpt_path runs/wfvae-tiny/checkpoints/last.ckpt
    python tools/train.py fit --config configs/wfvae/l16.yaml --trainer.strategy ddp --trainer.devices 8 \\
        --trainer.num_nodes 2

The resolved config is written to the run's log folder (``config.yaml``, overwritten on resume). Configs are
parsed with OmegaConf, so ``${...}`` interpolations work in the YAML files.

Resuming (``--ckpt_path``) restores the step, both optimisers, the EMA copy, the discriminator and the loop state.
Note that Lightning's CLI then also takes the MODEL's init arguments from the checkpoint's hyper-parameters,
so ``--model.*`` overrides given together with ``--ckpt_path`` are ignored (trainer and data overrides apply).
To change model settings, start a new run with ``--model.init_from CKPT`` instead (weights only).

Errors follow :mod:`wfvae.cli_support`: bad arguments or bad data (a missing or empty data folder, an annotation
file that is not JSON, data of which not one file can be read) give one ``error:`` line and exit status 2 before
any run folder is created (the data modules check their sources when they are built); a run that fails or is
interrupted later leaves no log folder that holds nothing but its config. The progress bar counts optimizer steps
(:class:`wfvae.training.progress.StepProgressBar`). ``--help`` is served from a cache (``~/.cache/wfvae-opensora/help``,
keyed on the arguments, the package versions and the sources' modification times): building it imports Lightning,
which takes seconds.
"""
import os
import sys

HELP_FLAGS = ("-h", "--help")
HELP_DISTRIBUTIONS = ("lightning", "jsonargparse", "torch", "omegaconf", "docstring-parser", "typeshed-client")
OOM_HINT = "lower data.init_args.batch_size, the clip size (num_frames, crop_size) or use a larger device"


# ------------------------------------------------------------------------------------------------ --help cache
def help_cache_file(argv):
    """The cache file of the help text that ``argv`` prints, or None when ``argv`` asks for no help. The key
    covers the arguments (and the files they name), the terminal width, the Python and package versions and the
    modification times of the project's sources, so any change that could change the text misses the cache."""
    if not any(a in HELP_FLAGS for a in argv):
        return None
    import hashlib
    from importlib import metadata
    import shutil

    parts = [sys.version, str(shutil.get_terminal_size().columns), *argv]
    parts += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("JSONARGPARSE")]
    for dist in HELP_DISTRIBUTIONS:
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=-")
    from importlib.util import find_spec

    sources = [os.path.abspath(__file__)]
    for package in ("wfvae", "opensora"):  # the installed packages' sources (found without importing them)
        for root, dirs, files in os.walk(list(find_spec(package).submodule_search_locations)[0]):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            sources += [os.path.join(root, f) for f in sorted(files) if f.endswith(".py")]
    sources += [a.split("=", 1)[-1] for a in argv if os.path.isfile(a.split("=", 1)[-1])]
    for path in sources:
        st = os.stat(path)
        parts.append(f"{os.path.abspath(path)}:{st.st_mtime_ns}:{st.st_size}")
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wfvae-opensora", "help", f"train-{key}.txt")


def _store_help(path, text) -> None:
    """Writes the help text atomically; a cache that cannot be written is skipped (the help was printed)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.part"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


class _Tee:
    """A stdout that also keeps what was written (the help text to cache)."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


# ------------------------------------------------------------------------------------------------ quiet runs
def quiet_known_noise() -> None:
    """Filters messages that every run printed and no user can act on, each by its exact text and category."""
    import logging
    import re
    import warnings

    from lightning.fabric.utilities.warnings import PossibleUserWarning

    class _Drop(logging.Filter):
        def __init__(self, pattern):
            super().__init__()
            self.pattern = re.compile(pattern)

        def filter(self, record):
            return not self.pattern.search(record.getMessage())

    # Lightning advertises its cloud logger / checkpoint services in every run ("💡 Tip: For seamless cloud ...");
    # "Seed set to N" would precede a data error's one line (the seed is in the run's config.yaml).
    drop = _Drop(r"^💡 Tip: For seamless cloud|^Seed set to \d+$|^\s*Detected KeyboardInterrupt, attempting graceful")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "lightning.fabric.utilities.seed",
                 "lightning.pytorch.trainer.connectors.logger_connector.logger_connector",
                 "lightning.pytorch.trainer.connectors.callback_connector", "lightning.pytorch.trainer.call"):
        logger = logging.getLogger(name)
        if drop not in logger.filters:
            logger.addFilter(drop)
        for handler in logger.handlers:
            if drop not in handler.filters:
                handler.addFilter(drop)
    # Lightning 2.6's own _pytree helper builds a torch LeafSpec, which torch >= 2.10 deprecates: not our code.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # The denoiser and controller trainings hold their VAE, text encoder and base model frozen in eval mode on
    # purpose (opensora.training.denoiser, opensora.training.controller); the WF-VAE training has no such module.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training",
                            category=PossibleUserWarning)
    # A configured validation split that is empty is reported by the data modules themselves, naming the setting
    # (wfvae.training.data_checks.NoValidationWarning); without one (val_fraction 0, no val_data) validation is off by
    # choice.
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`",
                            category=PossibleUserWarning)


# ------------------------------------------------------------------------------------------------ run folders
class RunFolders:
    """The folders a run creates (its log version folder, checkpoint folder and their missing parents), recorded
    before ``fit``; after a failed or interrupted run, those that hold nothing but the files every run writes
    before its first step (``config.yaml``, ``hparams.yaml``) are removed, deepest first."""

    PRELUDE = ("config.yaml", "hparams.yaml")

    def __init__(self):
        self.created, self.exception, self.build_error = [], None, None

    def record(self, trainer) -> None:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        paths = [trainer.default_root_dir]
        paths += [lg.log_dir for lg in trainer.loggers if isinstance(lg, (CSVLogger, TensorBoardLogger))]
        paths += [cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        for path in paths:
            probe = os.path.abspath(os.fspath(path))
            while not os.path.exists(probe) and probe not in self.created:
                self.created.append(probe)
                probe = os.path.dirname(probe)

    def cleanup(self) -> None:
        for folder in sorted(set(self.created), key=lambda p: p.count(os.sep), reverse=True):
            try:
                names = os.listdir(folder)
                if all(n in self.PRELUDE and os.path.isfile(os.path.join(folder, n)) for n in names):
                    for n in names:
                        os.remove(os.path.join(folder, n))
                    os.rmdir(folder)
            except OSError:
                continue
        self.created = []


def build_cli_class(folders: RunFolders):
    """LightningCLI with the project's defaults: errors raised (not printed with the usage), the step progress bar
    unless the config has a bar or turns it off, and the run's folders recorded for :class:`RunFolders`."""
    from lightning.pytorch.callbacks import Callback, ProgressBar
    from lightning.pytorch.cli import LightningCLI

    from wfvae.training.progress import StepProgressBar

    class _Watch(Callback):
        def on_exception(self, trainer, pl_module, exception) -> None:
            folders.exception = exception

    def remember(instantiate):
        """Wraps Lightning's instantiator of the model / data module: jsonargparse reports an error raised by their
        ``__init__`` inside a multi-line "Does not validate against any of the Union subtypes"; the original is
        kept and raised instead (a data module's DataSourceError is then one clear line)."""

        def wrapped(class_type, *args, applied_instantiation_links, **kwargs):
            try:
                return instantiate(class_type, *args, applied_instantiation_links=applied_instantiation_links,
                                   **kwargs)
            except Exception as exc:
                folders.build_error = exc
                raise

        return wrapped

    class TrainCLI(LightningCLI):
        def _add_instantiators(self) -> None:
            super()._add_instantiators()
            found = self.parser._instantiators or {}  # what Lightning registered just now (jsonargparse 4.x)
            for key in list(found):
                found[key] = remember(found[key])

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except Exception:
                if folders.build_error is not None:
                    raise folders.build_error from None
                raise

        def _instantiate_trainer(self, config, callbacks):
            given = config.get("callbacks") or []
            given = given if isinstance(given, list) else [given]
            extra = [_Watch()]
            if config.get("enable_progress_bar") is not False and not any(
                    isinstance(c, ProgressBar) for c in [*given, *callbacks]):
                extra.append(StepProgressBar())
            return super()._instantiate_trainer(config, [*callbacks, *extra])

        def before_fit(self) -> None:
            folders.record(self.trainer)

    return TrainCLI


def _main(argv, pass_args: bool = True) -> int:
    import signal

    import lightning as L
    from jsonargparse import ArgumentError

    from wfvae.cli_support import UsageError

    quiet_known_noise()
    folders = RunFolders()
    cli_class = build_cli_class(folders)
    sigint = signal.getsignal(signal.SIGINT)
    ok = False
    try:
        cli_class(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
                  save_config_kwargs={"overwrite": True}, args=argv if pass_args else None)
        ok = True
    except ArgumentError as exc:
        text = " ".join(str(exc).split())
        raise UsageError(f"{text} (python tools/train.py fit --help lists the options)") from None
    except SystemExit as exc:
        # Lightning turns an interrupt during fit into sys.exit(1): give run_cli the interrupt back (exit 130/143)
        if isinstance(folders.exception, KeyboardInterrupt):
            raise folders.exception from None
        ok = exc.code in (0, None)  # --help, --print_config
        raise
    finally:
        if not ok:
            folders.cleanup()
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # Lightning ignores further Ctrl+C after one
            signal.signal(signal.SIGINT, sigint)
    return 0


def main(args=None) -> int:
    """Runs the CLI on ``args`` (default ``sys.argv[1:]``); returns the exit status (``--help`` and
    ``--print_config`` exit through ``SystemExit(0)``, as argparse does)."""
    argv = sys.argv[1:] if args is None else [str(a) for a in args]
    given = args is not None
    cache = help_cache_file(argv)
    if cache is not None and os.path.isfile(cache):
        with open(cache, encoding="utf-8") as fh:
            sys.stdout.write(fh.read())
        raise SystemExit(0)

    from wfvae.cli_support import run_cli

    if cache is None:
        return run_cli(lambda: _main(argv, given), oom_hint=OOM_HINT)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        code = run_cli(lambda: _main(argv, given), oom_hint=OOM_HINT)
    except SystemExit as exc:
        if exc.code in (0, None):
            _store_help(cache, "".join(tee.parts))
        raise
    finally:
        sys.stdout = tee.stream
    return code


if __name__ == "__main__":
    sys.exit(main())
