"""Shape buckets for mixed-resolution training: the min-max token strategy and a DDP-safe bucket batch sampler.

**Min-max token strategy** (Open-Sora Plan v1.3 report, arXiv 2412.00131). Each sample keeps its aspect ratio
``r = H / W`` and is resized so that its token count per frame ``n = (h / s) * (w / s)`` lies in
``[min_tokens, max_tokens]``, ``s = stride`` (VAE spatial factor x patch size, 8 x 2 = 16 for v1.3)::

    n*  = clamp(H * W / s^2, min_tokens, max_tokens)          # the sample's own area, clamped
    gh  = round(sqrt(n* * r))                                 # rows of tokens (>= 1)
    gw  = clamp(round(n* / gh), ceil(min_tokens / gh), floor(max_tokens / gh))
    (h, w) = (gh * s, gw * s)

(if no multiple of ``gh`` lies in the token range, ``gh`` is lowered until one does; ``gh = 1`` always works).
So large videos are downscaled to at most ``max_tokens`` and small ones upscaled to at least ``min_tokens``, with
the aspect ratio kept up to the stride rounding. Samples whose aspect ratio is beyond ``max_aspect`` (either way)
are filtered out (:func:`aspect_ok`). The frame count is ``4k + 1`` (:func:`valid_frames`).

**Buckets.** Every sample gets the key ``(frames, h, w)``; :class:`BucketBatchSampler` builds batches inside one
key, so each per-device batch has a single shape and no padding is needed.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler


def min_max_token_shape(height: int, width: int, max_tokens: int, min_tokens: int = 1,
                        stride: int = 16) -> Tuple[int, int]:
    """Training (h, w) of a ``height x width`` source under the min-max token strategy (module docstring).

    Both results are multiples of ``stride`` and ``min_tokens <= (h / stride) * (w / stride) <= max_tokens``.
    """
    if height < 1 or width < 1 or stride < 1 or not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need positive sizes and 1 <= min_tokens <= max_tokens, got {height}x{width}, "
                         f"tokens [{min_tokens}, {max_tokens}], stride {stride}")
    ratio = height / width
    n = min(max(height * width / stride**2, min_tokens), max_tokens)
    gh = min(max(1, round(math.sqrt(n * ratio))), max_tokens)
    while gh > 1 and math.ceil(min_tokens / gh) > max_tokens // gh:
        gh -= 1
    gw = min(max(round(n / gh), math.ceil(min_tokens / gh), 1), max_tokens // gh)
    return gh * stride, gw * stride


def aspect_ok(height: int, width: int, max_aspect: Optional[float]) -> bool:
    """False when ``max(h/w, w/h) > max_aspect`` (None: no filter)."""
    return max_aspect is None or max(height / width, width / height) <= max_aspect


def valid_frames(frames: int, stride_t: int = 4) -> int:
    """The largest ``stride_t * k + 1 <= frames`` (0 when ``frames < 1``)."""
    return 0 if frames < 1 else (frames - 1) // stride_t * stride_t + 1


class BucketBatchSampler(Sampler[List[int]]):
    """Batches of indices sharing one bucket key, sharded over DDP ranks; deterministic per ``(seed, epoch)``.

    Per epoch: the indices of each bucket are shuffled (``torch.Generator`` seeded ``seed + epoch``) and chunked
    into batches of ``batch_size`` (the last one of a bucket may be smaller); the batches are shuffled and dealt
    round-robin to the ranks. Every rank must run the same number of steps, so the batch count is made a multiple
    of ``num_replicas``: with ``drop_last`` the extra batches are dropped; otherwise the largest batches are split
    in two (still one shape) until it is, so every index is used **exactly once per epoch across ranks**; only when
    no batch can be split (all single samples, e.g. ``batch_size`` 1 and an odd count on 2 ranks) are batches
    repeated. All ranks compute the same list from the same seed,
    so no communication is needed. Call :meth:`set_epoch` each epoch; Lightning calls ``set_epoch`` on
    ``batch_sampler.sampler`` only, so :attr:`sampler` is a small handle that forwards it here. The training
    loader of :class:`opensora.data.datasets.OpenSoraDataModule` wraps it in
    :class:`wfvae.training.resume.ResumableBatchSampler`,
    which counts the epochs itself and asks for :meth:`epoch_batches` (exact resume).

    Args:
        keys: one hashable bucket key per dataset index (e.g. ``(frames, h, w)``).
        batch_size: per-device batch size.
        num_replicas, rank: DDP world size and this rank (default: from ``torch.distributed`` when initialised).
    """

    def __init__(self, keys: Sequence[Hashable], batch_size: int, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, shuffle: bool = True, drop_last: bool = False, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (
                torch.distributed.get_world_size() if dist else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside a world of {num_replicas}")
        self.keys, self.batch_size, self.num_replicas, self.rank = list(keys), batch_size, num_replicas, rank
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, seed, 0
        self.sampler = _EpochHandle(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def buckets(self) -> Dict[Hashable, List[int]]:
        groups: Dict[Hashable, List[int]] = defaultdict(list)
        for index, key in enumerate(self.keys):
            groups[key].append(index)
        return dict(groups)

    def global_batches(self, epoch: int) -> List[List[int]]:
        """The batches of all ranks for ``epoch`` (rank ``r`` takes ``[r::num_replicas]``)."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        batches: List[List[int]] = []
        groups = self.buckets()
        for key in sorted(groups, key=repr):
            idx = groups[key]
            if self.shuffle:
                idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
            batches += [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        world = self.num_replicas
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
            return batches[:len(batches) // world * world]
        while batches and len(batches) % world:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[largest]) < 2:
                batches += batches[:world - len(batches) % world]  # nothing left to split: repeat
                break
            b = batches.pop(largest)
            half = (len(b) + 1) // 2
            batches[largest:largest] = [b[:half], b[half:]]
        return batches

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """This rank's batches of ``epoch`` (what :class:`wfvae.training.resume.ResumableBatchSampler` iterates)."""
        return self.global_batches(epoch)[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[List[int]]:
        yield from self.epoch_batches(self.epoch)

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) // self.num_replicas


class _EpochHandle:
    """What Lightning finds as ``dataloader.batch_sampler.sampler``: forwards ``set_epoch`` to the batch sampler."""

    def __init__(self, owner: BucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
