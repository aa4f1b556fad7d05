"""Peak bytes of live tensors during a block of code, the same on every device.

    with LiveTensorPeak() as probe:
        vae.decode(z, latent_chunk=4)
    probe.peak_bytes      # largest sum of live tensor storages created inside the block

:class:`LiveTensorPeak` is a ``TorchDispatchMode``: every aten operator call inside the block passes through it,
and the storages of its outputs are recorded once each (views and in-place results share their storage and are
not counted again). A storage counts as freed when its last tensor dies (a weak reference to it has expired),
which is checked before and after every operator. So the figure is the peak of the sum of live storages created
inside the block, at operator granularity: tensors that existed before (weights, inputs) are not counted, and
scratch memory a kernel allocates and frees inside one operator (im2col columns, cuDNN workspaces) is not seen.

:func:`peak_memory` runs a callable and reports that figure, plus, on CUDA, the allocator's peak above what was
allocated before (``torch.cuda.max_memory_allocated``), which does include kernel workspaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorPeak(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created inside the ``with`` block (see the module docstring).

    Attributes: ``live_bytes`` (now), ``peak_bytes`` (largest so far), ``allocated_bytes`` (sum of every new
    storage, freed or not), ``devices`` (the device types seen). ``reset_peak()`` sets the peak to the live bytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: Dict[int, tuple] = {}  # storage key -> (weak reference, bytes)
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocated_bytes = 0
        self.devices: set = set()

    def reset_peak(self) -> None:
        self._sweep()
        self.peak_bytes = self.live_bytes

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self.live_bytes -= self._live.pop(key)[1]

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata  # the storage object itself (one per allocation, shared by views)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        self._live[key] = (StorageWeakRef(storage), nbytes)
        self.live_bytes += nbytes
        self.allocated_bytes += nbytes
        self.devices.add(t.device.type)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()  # what died since the last operator (its storage address may be reused now)
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out

    def __exit__(self, *exc):
        self._sweep()
        return super().__exit__(*exc)


@dataclass
class PeakReport:
    """Peak bytes above the state before the call: ``live_tensors`` (any device), ``cuda_allocator`` (CUDA only)."""

    live_tensors: int
    cuda_allocator: Optional[int] = None


def peak_memory(fn: Callable[[], object], device: Optional[torch.device] = None) -> PeakReport:
    """Run ``fn()`` once and report its peak memory (its result is dropped before the end of the measurement)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with LiveTensorPeak() as probe:
        fn()
    report = PeakReport(live_tensors=probe.peak_bytes)
    if cuda:
        torch.cuda.synchronize(device)
        report.cuda_allocator = torch.cuda.max_memory_allocated(device) - base
    return report
