"""What every command-line program of the project shares: the error contract and safe outputs.

The contract, for ``wfvae``, ``opensora-sample``, ``tools/*.py`` and ``tools/train.py``:

* bad input gives one ``error: ...`` line on stderr (what was wrong, what to do) and exit code 2, never a
  traceback (``WFVAE_TRACEBACK=1`` shows it, for bug reports);
* SIGINT or SIGTERM gives ``error: interrupted`` and exit code 130 / 143;
* whatever happens, no temporary file and no folder the command created is left behind, and no existing file
  is changed: outputs are written to a hidden temporary file renamed onto the output at the very end;
* an existing output is kept unless ``--overwrite`` is given, and an output that is one of the inputs (also
  through a link) is refused.

Use::

    def main(argv=None) -> int:
        return run_cli(lambda: _main(argv), oom_hint="try --latent-chunk 1")

    def _main(argv):
        args = build_parser().parse_args(argv)                 # ErrorParser: errors raise UsageError
        outputs = Outputs(overwrite=args.overwrite, inputs=[args.input])
        outputs.check(args.output)                              # before any heavy work
        ...
        outputs.make_parent(args.output)                        # removed again if the command fails
        tmp = temp_path(args.output); write(tmp); commit(tmp, args.output)
"""
from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import sys
import tempfile
from typing import Callable, Iterable, List, Optional, Set

NAME_MAX = 255

_live_temps: Set[str] = set()
_live_outputs: List["Outputs"] = []


class UsageError(Exception):
    """Bad input: reported as one ``error:`` line with exit code 2."""


class ErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` (one ``error:`` line, exit 2)."""

    def error(self, message):
        raise UsageError(message)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# ---------------------------------------------------------------------------------------------- temporary files
def temp_path(path: str) -> str:
    """A fresh hidden name in ``path``'s folder that keeps its extension (muxers and savers pick the format from
    it) and is never longer than the longest allowed name. Registered, so that :func:`run_cli` deletes it if the
    command stops before :func:`commit`. The file is not created here (it gets the usual permissions)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    ext = os.path.splitext(name)[1]
    ext = ext if len(ext) <= 16 else ""
    tmp = os.path.join(folder, f".{secrets.token_hex(6)}.part{ext}")
    _live_temps.add(tmp)
    return tmp


def discard(tmp: str) -> None:
    """Deletes a temporary file from :func:`temp_path` if it exists."""
    _live_temps.discard(tmp)
    try:
        os.remove(tmp)
    except FileNotFoundError:
        pass


def default_file_mode() -> int:
    """The permissions a newly created file gets here: ``0o666`` less the umask (0644 with the usual umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def commit(tmp: str, path: str) -> None:
    """Moves a finished temporary file onto ``path`` (atomic on one file system), with the usual permissions
    (:func:`default_file_mode`; safetensors' ``save_file`` creates its files 0600)."""
    try:
        os.chmod(tmp, default_file_mode())
    except OSError:
        pass
    os.replace(tmp, os.fspath(path))
    _live_temps.discard(tmp)


# ---------------------------------------------------------------------------------------------- outputs
def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Outputs:
    """The output paths of one command: checked before any work, their missing folders created on demand and
    removed again (when still empty) if the command does not finish."""

    def __init__(self, overwrite: bool = False, inputs: Iterable[Optional[str]] = ()):
        self.overwrite = overwrite
        self.inputs = [os.fspath(p) for p in inputs if p]
        self.created: List[str] = []
        _live_outputs.append(self)

    def check(self, path: str, what: str = "output", suffixes: Optional[Iterable[str]] = None) -> str:
        """Raises :class:`UsageError` unless ``path`` can be written: right suffix, not an input, not an
        existing file (unless overwriting), a name the file system takes, a writable folder."""
        path = os.fspath(path)
        if not path or not os.path.basename(path):
            raise UsageError(f"{what} must be a file name, got {path!r}")
        if suffixes is not None:
            suffixes = tuple(suffixes)
            if not path.lower().endswith(suffixes):
                raise UsageError(f"{what} {path} must end with {' or '.join(suffixes)}")
        for source in self.inputs:
            if os.path.exists(source) and _same_file(path, source):
                raise UsageError(f"{what} {path} is the input {source}: choose another output name")
        if os.path.isdir(path):
            raise UsageError(f"{what} {path} is a folder: give a file name")
        if os.path.lexists(path) and not self.overwrite:
            raise UsageError(f"{what} {path} exists: pass --overwrite to replace it, or choose another name")
        if len(os.path.basename(path).encode()) > NAME_MAX:
            raise UsageError(f"{what} file name is longer than {NAME_MAX} bytes: {os.path.basename(path)[:40]}...")
        self.check_folder(os.path.dirname(os.path.abspath(path)), what)
        return path

    def check_folder(self, folder: str, what: str = "output") -> None:
        """The nearest existing ancestor of ``folder`` must be a folder this process can write to."""
        probe = os.path.abspath(folder)
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            raise UsageError(f"cannot create the {what} folder {folder}: {probe} is not a folder")
        try:  # a real write (permission bits do not stop root; read-only mounts stop everyone)
            handle, name = tempfile.mkstemp(prefix=".probe-", dir=probe)
            os.close(handle)
            os.remove(name)
        except OSError as exc:
            raise UsageError(f"cannot write the {what} in {probe}: {exc.strerror or exc}") from None

    def make_folder(self, folder: str) -> str:
        """Creates ``folder`` and its missing parents, remembering them for :meth:`cleanup`."""
        folder = os.path.abspath(folder)
        missing = []
        probe = folder
        while not os.path.exists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        for new in reversed(missing):
            try:
                os.mkdir(new)
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot create folder {new}: {exc.strerror}") from None
            self.created.append(new)
        return folder

    def make_parent(self, path: str) -> str:
        """Creates the folder of the file ``path`` (see :meth:`make_folder`)."""
        return self.make_folder(os.path.dirname(os.path.abspath(os.fspath(path))))

    def cleanup(self) -> None:
        """Removes the folders this object created, deepest first, where they are still empty."""
        for folder in reversed(self.created):
            try:
                os.rmdir(folder)
            except OSError:
                pass
        self.created = []


# ---------------------------------------------------------------------------------------------- checks
def check_finite_number(value: Optional[float], flag: str, low: Optional[float] = None, high: Optional[float] = None,
                        low_open: bool = False) -> None:
    """``value`` must be a finite number within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise UsageError(f"{flag} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise UsageError(f"{flag} must be <= {high:g}, got {value:g}")


def check_finite_tensor(tensor, what: str, outcome: str = "nothing was written") -> None:
    """Raises :class:`UsageError` naming ``what`` when ``tensor`` holds NaN or infinite values (the message ends
    with ``outcome``: what the command did or did not write)."""
    import torch

    from wfvae.models.checkpoint import is_finite  # one min/max pass, no mask: this runs on every decoded chunk

    if is_finite(tensor):
        return
    n = int((~torch.isfinite(tensor)).sum())
    raise UsageError(f"{what} holds {n} NaN or infinite value{'s' if n > 1 else ''} (of {tensor.numel()}): {outcome}")


def parse_device(text: Optional[str]):
    """``torch.device`` from ``--device`` (``cpu``, ``cuda`` or ``cuda:i``; default cuda when there is one)."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text.strip())
    except (RuntimeError, ValueError):
        raise UsageError(f"--device must be cpu, cuda or cuda:i, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu, cuda or cuda:i, got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda requested but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


def parse_dtype(name: Optional[str], device):
    """``torch.dtype`` from ``--dtype`` (float32, bfloat16, float16); default bfloat16 on CUDA, float32 on CPU."""
    import torch

    name = name or ("bfloat16" if device.type == "cuda" else "float32")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UsageError(f"--dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


# ---------------------------------------------------------------------------------------------- the runner
class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so ``with`` blocks and ``finally`` clauses clean up."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def _on_signal(signum, frame):
    raise Terminated(signum)


def _cleanup() -> None:
    for tmp in list(_live_temps):
        discard(tmp)
    for outputs in reversed(_live_outputs):
        outputs.cleanup()
    _live_outputs.clear()


def run_cli(body: Callable[[], Optional[int]], oom_hint: str = "use a smaller size or --device cpu") -> int:
    """Runs ``body`` under the error contract of this module and returns the exit code."""
    old = None
    try:
        old = signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread
        pass
    debug = os.environ.get("WFVAE_TRACEBACK") == "1"
    ok = False
    try:
        code = body()
        ok = True
        return 0 if code is None else int(code)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except MemoryError:
        print(f"error: out of memory: {oom_hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for anything else too; the traceback only when asked for
        import torch

        if debug:
            raise
        if isinstance(exc, torch.OutOfMemoryError):
            print(f"error: out of memory: {oom_hint}", file=sys.stderr)
        else:
            print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if not ok:
            _cleanup()
        else:
            for outputs in _live_outputs:
                outputs.created = []
            _live_outputs.clear()
            for tmp in list(_live_temps):
                discard(tmp)
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def cpu_allocation_settings() -> None:
    """Asks PyTorch to back CPU tensors of 2 MiB and more with transparent huge pages (Linux, THP in ``madvise``
    mode).

    Each chunk allocates and frees the same large activations and oneDNN's blocked copies; glibc serves every
    one of them with a fresh ``mmap``, so each 4 KiB page faults when first written (4.4 M minor faults for the
    sample clip). With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch aligns those blocks to 2 MiB and ``madvise``s them,
    so a page fault maps 2 MiB: the same memory, several times fewer faults (figures: benchmarks/NOTES.md). Read
    by PyTorch at its first CPU allocation, so it is set before the command imports torch; a value already in
    the environment wins. The commands only (``wfvae``, ``opensora-sample``): the library leaves the process's
    allocator alone.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
