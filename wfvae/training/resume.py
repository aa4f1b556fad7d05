"""Exact training resume: randomness derived from counters, and a data loader that remembers its place.

A run resumed from a checkpoint must draw the same batches and the same random numbers as the run that was not
interrupted. Two things make that so:

* **Derived randomness.** Nothing in a training step or a training sample draws from a global generator whose
  state depends on what happened before. A training step runs under :func:`step_rng`, which seeds the torch
  generators (CPU, and the step's device when it is a CUDA device; restored afterwards) from
  ``(seed, global_step, micro-batch, rank)`` (:func:`training_step_seed`), so timesteps, noise, posterior samples
  and dropout depend on the step only. A training sample gets its own seed ``derive_seed(seed, epoch, index)``
  from :class:`ResumableBatchSampler`, delivered with the index (:func:`split_index`), so the dataset's
  augmentations are the same in any worker and with any number of workers.
* **A resumable loader.** :class:`ResumableLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict``
  (Lightning saves them in the checkpoint's loop state and loads them before it iterates the loader): the epoch
  and the number of batches of that epoch handed to training. On resume the epoch's order is rebuilt from
  ``(seed, epoch)`` and the batches already trained on are skipped, mid-epoch or at an epoch boundary.

The batch samplers underneath (:class:`wfvae.training.data.KindBatchSampler`,
:class:`opensora.data.buckets.BucketBatchSampler`)
are deterministic per ``(seed, epoch)`` and provide ``epoch_batches(epoch)`` (this rank's batches of indices).
What is not covered: other devices' generators than CPU and CUDA (MPS, XLA), and a checkpoint written before
the loader had a state (the data order then restarts at epoch 0; a ``num_batches`` change is warned about).
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import struct
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader

Index = Union[int, Tuple[int, int]]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts`` (the same on every machine and run)."""
    data = struct.pack(f"<{len(parts)}Q", *(int(p) % 2**64 for p in parts))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def split_index(index: Index) -> Tuple[int, random.Random]:
    """``(dataset index, its random generator)`` of what a dataset's ``__getitem__`` receives: ``(index, seed)``
    from :class:`ResumableBatchSampler` (a generator seeded with it), or a plain index (a generator seeded from the
    global ``random`` module, for direct use)."""
    if isinstance(index, tuple):
        return int(index[0]), random.Random(index[1])
    return int(index), random.Random(random.getrandbits(63))


@contextlib.contextmanager
def step_rng(device: Optional[torch.device], *parts: int) -> Iterator[None]:
    """Run a block with the torch generators (CPU, and ``device`` when it is a CUDA device) seeded from
    ``derive_seed(*parts)``; their previous states are restored afterwards."""
    devices = []
    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index
        devices = [index if index is not None else torch.cuda.current_device()]
    seed = derive_seed(*parts)
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def training_step_seed(module: Any, seed: int, batch_idx: int) -> Tuple[int, int, int, int]:
    """The :func:`step_rng` parts of a LightningModule's training step: ``(seed, global_step, micro-batch, rank)``,
    the micro-batch being ``batch_idx`` modulo the gradient accumulation (unique per micro-batch, and the same after
    a resume, also when Lightning counts a resumed partial epoch as a new one)."""
    trainer = module._trainer
    if trainer is None:
        return (seed, 0, 0, 0)
    return (seed, trainer.global_step, batch_idx % max(int(trainer.accumulate_grad_batches), 1), trainer.global_rank)


class ResumableBatchSampler:
    """Wraps a per-``(seed, epoch)`` batch sampler (module docstring): yields the batches of epoch ``epoch`` from
    batch ``start`` on, as lists of ``(index, derive_seed(seed, epoch, index))``. Iterating it does not change it
    (a ``DataLoader`` with workers iterates it twice per pass): :class:`ResumableLoader` moves it along.

    The epoch is the number of passes over the data (saved by :class:`ResumableLoader`), not Lightning's epoch
    (there is no ``set_epoch``): a run stopped by ``max_steps`` in the middle of an epoch counts that epoch as
    done, and a run resumed from its checkpoint must still finish the pass before it starts the next order.
    """

    def __init__(self, inner: Any, seed: int):
        self.inner, self.seed, self.epoch, self.start = inner, seed, 0, 0

    def num_batches(self, epoch: Optional[int] = None) -> int:
        return len(self.inner.epoch_batches(self.epoch if epoch is None else epoch))

    def __len__(self) -> int:
        return self.num_batches()

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        return self._batches(self.epoch, self.start)  # the position is read now, the batches made as they go

    def _batches(self, epoch: int, start: int) -> Iterator[List[Tuple[int, int]]]:
        for batch in self.inner.epoch_batches(epoch)[start:]:
            yield [(i, derive_seed(self.seed, epoch, i)) for i in batch]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableBatchSampler` that counts the batches it hands out. Each iteration
    goes on with the data stream: it finishes the latest pass if that was left unfinished (Lightning does so on
    some resumes), else it starts the next epoch. ``state_dict`` is the position of the next batch,
    ``{"epoch", "batches", "num_batches"}``; Lightning stores it with the loop state and calls ``load_state_dict``
    before it iterates the loader on resume (it fetches batches of a sized loader one at a time, so a batch handed
    out is a batch trained on when a checkpoint is saved)."""

    def __init__(self, dataset, batch_sampler: ResumableBatchSampler, **kwargs):
        if not isinstance(batch_sampler, ResumableBatchSampler):
            raise TypeError("ResumableLoader needs a ResumableBatchSampler")
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._position: Optional[List[int]] = None  # [epoch, batches handed out] of the latest pass

    def _next_position(self) -> Tuple[int, int]:
        sampler = self.batch_sampler
        if self._position is None:
            epoch, done = sampler.epoch, sampler.start
        else:
            epoch, done = self._position
        if done >= sampler.num_batches(epoch):  # the pass is over: the next batch is the first of the next one
            epoch, done = epoch + 1, 0
        return epoch, done

    def __iter__(self):
        sampler = self.batch_sampler
        sampler.epoch, sampler.start = self._next_position()
        iterator = super().__iter__()  # takes the sampler's batches now (also with workers)
        self._position = [sampler.epoch, sampler.start]
        return self._counted(iterator, self._position)

    @staticmethod
    def _counted(iterator, position: List[int]):
        for batch in iterator:
            position[1] += 1
            yield batch

    def state_dict(self) -> Dict[str, Any]:
        epoch, done = self._next_position()
        return {"epoch": int(epoch), "batches": int(done), "num_batches": self.batch_sampler.num_batches(epoch)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        sampler = self.batch_sampler
        epoch, done = int(state["epoch"]), int(state["batches"])
        total = sampler.num_batches(epoch)
        if state.get("num_batches", total) != total:
            warnings.warn(f"the training data changed since the checkpoint ({total} batches per epoch, "
                          f"{state['num_batches']} then): epoch {epoch} goes on after batch {min(done, total)} of "
                          f"the new order, so the resume is not exact", UserWarning, stacklevel=2)
        sampler.epoch, sampler.start = epoch, min(done, total)
        self._position = None
