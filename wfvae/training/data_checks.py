"""Cheap checks of training data sources, run when a data module is constructed (before any run folder exists).

Both data modules (:class:`wfvae.training.data.VideoDataModule`, :class:`opensora.data.datasets.OpenSoraDataModule`)
call these from
``__init__``, so that ``tools/train.py`` stops with one ``error:`` line (exit 2) on a missing folder, an empty
folder, an annotation file that is not JSON, or sources in which not one file can be read, instead of creating
run folders and failing (or looping) later. The checks are cheap: existence, non-emptiness, and files opened in
order until one decodes a frame (the unreadable files met on the way are reported in one counted warning and left
skipped; a corrupt file met later is skipped at training time by the datasets themselves).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from wfvae.cli_support import UsageError


class DataSourceError(UsageError, ValueError):
    """A data source is missing, empty, malformed or wholly unreadable (one ``error:`` line in the CLIs)."""


class MissingDataError(DataSourceError, FileNotFoundError):
    """A data source (folder, list, annotation file) does not exist."""


class UnreadableFileWarning(UserWarning):
    """A training or validation file could not be read and was skipped."""


class NoValidationWarning(UserWarning):
    """The validation split is empty, so validation never runs."""


def missing_source(path: str, setting: str, hint: str) -> MissingDataError:
    """The error for a source that does not exist, saying where a relative path was looked up."""
    if os.path.isabs(path):
        return MissingDataError(f"data source {path} does not exist (setting {setting}); {hint}")
    return MissingDataError(f"data source {path} does not exist (setting {setting}; relative to the current "
                            f"folder {os.getcwd()}): run from the repository root or give an absolute path")


def read_json_list(path: str, setting: str) -> List[Any]:
    """The list held by the JSON file ``path``; :class:`DataSourceError` naming the file and the position of the
    first syntax error when it is missing, not JSON or not a list."""
    if not os.path.isfile(path):
        raise missing_source(path, setting, "give an annotation .json (python tools/build_annotations.py makes one)")
    try:
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataSourceError(f"annotation file {path} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno}; setting {setting}): fix it or rebuild it with "
                              f"python tools/build_annotations.py") from None
    except UnicodeDecodeError:
        raise DataSourceError(f"annotation file {path} is not UTF-8 text (setting {setting}): give an annotation "
                              f".json") from None
    except OSError as exc:
        raise DataSourceError(f"cannot read annotation file {path}: {exc.strerror} (setting {setting})") from None
    if not isinstance(items, list):
        raise DataSourceError(f"annotation file {path} must hold a JSON list of {{\"path\": ...}} entries, not a "
                              f"{type(items).__name__} (setting {setting})")
    return items


def first_readable(paths: Sequence[str], setting: str, limit: int = 0) -> Dict[str, str]:
    """Opens ``paths`` in order (header and first frame) until one reads; returns ``{path: reason}`` of the
    unreadable ones met before it (announced in one :class:`UnreadableFileWarning` with their count; the datasets
    skip them). ``limit`` > 0 stops after that many failures. :class:`DataSourceError` when none can be read."""
    from wfvae.io.video import VideoReader, VideoReadError

    bad: List[Tuple[str, str]] = []
    for path in paths:
        try:
            with VideoReader(path) as reader:
                next(reader.iter_uint8_chunks(1))
            break
        except (VideoReadError, OSError, RuntimeError, ValueError, StopIteration) as exc:
            bad.append((path, " ".join(str(exc).split()) or type(exc).__name__))
            if limit and len(bad) >= limit:
                break
    if bad and len(bad) == len(paths):
        raise DataSourceError(f"none of the {len(bad)} file{'s' if len(bad) > 1 else ''} of setting {setting} can "
                              f"be read (first: {bad[0][1]}): check them with ffprobe, re-encode or remove them")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable file{'s' if len(bad) > 1 else ''} of the {len(paths)} of "
                      f"setting {setting} (first: {bad[0][1]})", UnreadableFileWarning, stacklevel=3)
    return dict(bad)


def every_file_failed(skipped: Iterable[str], files: Sequence[str]) -> bool:
    """True when every distinct file of ``files`` is among ``skipped`` (training could never take a step)."""
    distinct = set(files)
    return bool(distinct) and distinct.issubset(set(skipped))


def all_unreadable_error(files: Sequence[str], reason: str) -> DataSourceError:
    return DataSourceError(f"every one of the {len(set(files))} data files failed to read (last: {reason}); "
                           f"no training step can be taken: check the files with ffprobe")
