"""Video frames of several processes gathered, in order, by process 0 (torch.distributed point-to-point, any backend
that sends uint8 on the CPU, e.g. gloo), with bounded memory on every process.

Process ``r > 0`` decodes its frames while process 0 decodes (and writes) its own, so it cannot hand them over at
once: it spools them as uint8 to an unnamed temporary file (:class:`FrameSpool`; the operating system deletes it
whatever happens), and sends them from there in messages of ``chunk`` frames when process 0 asks for them
(:func:`send_frames` / :func:`receive_frames`, both sides computing the same message sizes). :func:`all_ok` lets
every process learn whether all others finished their part, so that no process waits for a message that a failed
one will never send.
"""
from __future__ import annotations

import tempfile
from typing import Iterator, Tuple

import numpy as np
import torch

CHUNK_FRAMES = 16
"""Frames per message."""


def _sizes(num_frames: int, chunk: int) -> Iterator[int]:
    for start in range(0, num_frames, chunk):
        yield min(chunk, num_frames - start)


class FrameSpool:
    """uint8 frames ``(t, H, W, 3)`` appended to an unnamed temporary file, read back in order; a context manager."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.num_frames, self.frame_shape = 0, None

    def write(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"expected uint8 frames (t, H, W, 3), got {frames.dtype} {frames.shape}")
        if self.frame_shape is None:
            self.frame_shape = frames.shape[1:]
        elif frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frames {frames.shape[1:]} differ from the spooled {self.frame_shape}")
        self.file.write(np.ascontiguousarray(frames).tobytes())
        self.num_frames += frames.shape[0]

    def read(self, chunk: int) -> Iterator[np.ndarray]:
        """The spooled frames from the first, ``chunk`` at a time: uint8 (t, H, W, 3)."""
        self.file.flush()
        self.file.seek(0)
        for n in _sizes(self.num_frames, chunk):
            data = self.file.read(n * int(np.prod(self.frame_shape)))
            yield np.frombuffer(bytearray(data), dtype=np.uint8).reshape(n, *self.frame_shape)  # writable

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "FrameSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send_frames(spool: FrameSpool, dst: int = 0, chunk: int = CHUNK_FRAMES) -> None:
    """Sends the spooled frames to process ``dst`` (which calls :func:`receive_frames` with the same count)."""
    import torch.distributed as dist

    for frames in spool.read(chunk):
        dist.send(torch.from_numpy(frames), dst=dst)


def receive_frames(src: int, num_frames: int, frame_shape: Tuple[int, int], chunk: int = CHUNK_FRAMES
                   ) -> Iterator[np.ndarray]:
    """``num_frames`` uint8 frames (t, H, W, 3) (``frame_shape`` = (H, W)) from process ``src``, ``chunk`` at a time."""
    import torch.distributed as dist

    for n in _sizes(num_frames, chunk):
        buf = torch.empty(n, *frame_shape, 3, dtype=torch.uint8)
        dist.recv(buf, src=src)
        yield buf.numpy()


def all_ok(ok: bool) -> bool:
    """Whether every process passed ``ok=True`` (a collective: every process calls it once at the same point)."""
    import torch.distributed as dist

    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist.all_reduce(flag)
    return int(flag) == 0
