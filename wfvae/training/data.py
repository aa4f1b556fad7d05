"""Video (and image) clips for VAE training: a Dataset, a homogeneous batch sampler and a LightningDataModule.

Sources (``data:`` entries, mixed freely):

* a folder: every video (.mp4 .webm .mkv .avi .mov) and image (.jpg .jpeg .png .webp .bmp) below it;
* a ``.txt`` file list: one path per line (relative paths are relative to the list's folder; ``#`` comments);
* an Open-Sora Plan annotation ``.json``: a list of ``{"path": ..., ...}`` (relative paths are relative to
  ``annotation_root`` when given, else to the json's folder).

A sample is ``{"video": (3, T, H, W) float in [-1, 1], "path": str}``:

* videos: a window of ``num_frames`` frames taken every ``sample_rate`` source frames (``dynamic_sample``: a
  random rate in [1, sample_rate] per sample; the rate is lowered when the video is too short, and a video shorter
  than ``num_frames`` frames repeats its last frame). The window starts at a random frame in training and is
  centred in validation. Only the window's frames are decoded (``wfvae.io.video.VideoReader`` with a start, a
  count and a frame rate), never the whole video;
* images: one-frame clips (3, 1, H, W);
* frames are resized so that the short side is ``resolution`` (training: a random size in
  [``min_resolution``, ``resolution``] when ``min_resolution`` is set), then cropped to ``crop_size`` (random
  crop and random horizontal flip in training, centre crop in validation).

Batches are homogeneous: :class:`KindBatchSampler` never mixes images with videos, so images form their own
one-frame batches (WF-VAE encodes a single frame as a 1 + 4*0-frame video). Files that cannot be read are skipped:
the sample becomes ``None``, :func:`collate_clips` drops it and counts it in ``batch["skipped"]`` (a batch whose
every file failed is ``None``, which the training module skips), and a :class:`UnreadableFileWarning` with the
running count is issued once per file. The validation split is deterministic: a file is held out when the SHA-1
of its path (relative to its source) falls in the first ``val_fraction`` of the hash range.

:class:`VideoDataModule` checks its sources when it is built (:mod:`wfvae.training.data_checks`): a missing or empty
source,
an annotation file that is not JSON, or sources of which not one file opens raise :class:`DataSourceError` (one
``error:`` line in ``tools/train.py``); a dataset whose every file has failed stops instead of looping forever.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wfvae.training.data_checks import (
    DataSourceError, NoValidationWarning, UnreadableFileWarning, all_unreadable_error, every_file_failed,
    first_readable, missing_source, read_json_list)
from wfvae.training.resume import ResumableBatchSampler, ResumableLoader, split_index
from wfvae.io.video import IMAGE_EXTENSIONS, VideoReader, VideoReadError
from wfvae.io.frames import resize_frames

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


# ------------------------------------------------------------------------------------------------ file lists
def _is_media(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)


def collect_files(sources: Sequence[str], annotation_root: Optional[str] = None,
                  setting: str = "data") -> List[Tuple[str, str]]:
    """``(path, key)`` of every media file of the sources, in a stable order; ``key`` (the path relative to its
    folder source, or as written in its list) decides the validation split. A source that does not exist raises
    :class:`wfvae.training.data_checks.MissingDataError` (a ``FileNotFoundError``); one that is empty or malformed
    raises
    :class:`DataSourceError`; both name the source and ``setting`` (the config key it came from)."""
    if isinstance(sources, str):
        sources = [sources]
    out = []
    for src in sources:
        before = len(out)
        if os.path.isdir(src):
            found = []
            for root, dirs, files in os.walk(src):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if _is_media(f)]
            out += [(p, os.path.relpath(p, src)) for p in found]
        elif src.lower().endswith(".txt") and os.path.isfile(src):
            base = os.path.dirname(os.path.abspath(src))
            with open(src) as fh:
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
            out += [(ln if os.path.isabs(ln) else os.path.join(base, ln), ln) for ln in lines]
        elif src.lower().endswith(".json") and os.path.isfile(src):
            base = annotation_root or os.path.dirname(os.path.abspath(src))
            for e in read_json_list(src, setting):
                p = e.get("path") if isinstance(e, dict) else str(e)
                if not isinstance(p, str) or not p:
                    raise DataSourceError(f"annotation file {src} has an entry without a \"path\" (setting "
                                          f"{setting}): {str(e)[:80]}")
                out.append((p if os.path.isabs(p) else os.path.join(base, p), p))
        elif os.path.isfile(src) and _is_media(src):
            out.append((src, os.path.basename(src)))
        elif os.path.exists(src):
            raise DataSourceError(f"data source {src} is not a folder, .txt list, .json annotation or video/image "
                                  f"file (setting {setting})")
        else:
            raise missing_source(src, setting, "give folders of videos or images, .txt lists or .json annotations "
                                               "(python tools/make_vae_dataset.py DIR makes a training set)")
        if len(out) == before:
            raise DataSourceError(f"data source {src} holds no videos or images (setting {setting}; looked for "
                                  f"{' '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)}): add files or give another "
                                  f"source")
    return out


def in_validation(key: str, val_fraction: float) -> bool:
    """Deterministic split: True for about ``val_fraction`` of all keys, always the same ones."""
    digest = int(hashlib.sha1(key.replace(os.sep, "/").encode()).hexdigest()[:8], 16)
    return digest < val_fraction * 0x100000000


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


# ------------------------------------------------------------------------------------------------ dataset
def resize_short_side(frames: torch.Tensor, short: int) -> torch.Tensor:
    """uint8 (t, 3, h, w) -> uint8 frames whose short side is ``short`` (:func:`wfvae.io.frames.resize_frames`)."""
    return resize_frames(frames, (short, short), "cover")


class VideoClipDataset(Dataset):
    """Clips of the given files (see the module docstring). Index ``i`` is file ``i % len(files)``, so
    ``length`` can exceed the number of files (several random windows per file and epoch)."""

    def __init__(self, files: Sequence[str], num_frames: int = 17, sample_rate: int = 1,
                 dynamic_sample: bool = False, resolution: int = 256, crop_size: Optional[int] = None,
                 min_resolution: Optional[int] = None, train: bool = True, hflip: bool = True,
                 length: Optional[int] = None, cut_prob: float = 0.0):
        if num_frames < 1 or sample_rate < 1:
            raise ValueError("num_frames and sample_rate must be >= 1")
        if not 0.0 <= cut_prob <= 1.0:
            raise ValueError(f"cut_prob must be in [0, 1], got {cut_prob}")
        self.files = list(files)
        self.num_frames, self.sample_rate, self.dynamic_sample = num_frames, sample_rate, dynamic_sample
        self.resolution, self.crop_size = resolution, crop_size or resolution
        self.min_resolution = min_resolution if train else None
        if self.crop_size > (self.min_resolution or resolution):
            raise ValueError(f"crop_size {self.crop_size} exceeds the resized short side")
        self.train, self.hflip = train, hflip and train
        self.length = length or len(self.files)
        self.kinds = ["image" if is_image(p) else "video" for p in self.files]
        self.cut_prob = cut_prob if train else 0.0
        self.video_files = [p for p, kind in zip(self.files, self.kinds) if kind == "video"]
        self.skipped: Dict[str, str] = {}

    def __len__(self) -> int:
        return self.length if self.files else 0

    def kind(self, index: int) -> str:
        return self.kinds[index % len(self.files)]

    def __getitem__(self, index) -> Optional[dict]:
        """The clip of ``index``: an int, or ``(index, seed)`` from :class:`wfvae.training.resume.ResumableBatchSampler`
        (the random window, crop, flip and cut then depend on the seed only)."""
        index, rng = split_index(index)
        path = self.files[index % len(self.files)]
        try:
            frames = self._read(path, rng)
        except (VideoReadError, OSError, RuntimeError, ValueError) as exc:
            self._skip(path, exc)
            return None
        video = self._transform(frames, rng)
        if video.shape[1] > 1 and self.cut_prob > 0 and rng.random() < self.cut_prob:
            video = self._cut(video, rng)
        return {"video": video, "path": path}

    def _cut(self, video: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """``video`` (3, T, c, c) with frames ``k:`` replaced by another video's window, k random in [1, T-1]
        (unchanged when the other file cannot be read)."""
        other = rng.choice(self.video_files)
        k = rng.randint(1, video.shape[1] - 1)
        try:
            second = self._transform(self._read(other, rng)[k:], rng)  # only the frames that are kept
        except (VideoReadError, OSError, RuntimeError, ValueError) as exc:
            self._skip(other, exc)
            return video
        return torch.cat([video[:, :k], second], dim=1)

    def _skip(self, path: str, exc: BaseException) -> None:
        first = path not in self.skipped
        self.skipped[path] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if first:
            warnings.warn(f"skipped unreadable file {path} ({len(self.skipped)} skipped so far in this process): "
                          f"{self.skipped[path]}", UnreadableFileWarning, stacklevel=2)
        if every_file_failed(self.skipped, self.files):  # no step could ever be taken: stop, do not loop forever
            raise all_unreadable_error(self.files, self.skipped[path])

    def _window(self, n_src: int, rng: random.Random) -> Tuple[int, int]:
        """(start frame, rate) of the window to read from a video of ``n_src`` frames."""
        rate = rng.randint(1, self.sample_rate) if (self.dynamic_sample and self.train) else self.sample_rate
        while rate > 1 and (self.num_frames - 1) * rate + 1 > n_src:
            rate -= 1
        span = min(n_src, (self.num_frames - 1) * rate + 1)
        room = n_src - span
        return (rng.randint(0, room) if self.train else room // 2), rate

    def _read(self, path: str, rng: random.Random) -> torch.Tensor:
        """uint8 frames (t, 3, h, w) at the source size: one for an image, ``num_frames`` for a video."""
        probe = VideoReader(path)
        if probe.backend == "image":
            frames = next(probe.iter_uint8_chunks(1))
            return torch.from_numpy(frames).permute(0, 3, 1, 2)
        start, rate = self._window(probe.source_num_frames, rng)
        fps = probe.source_fps / rate if (rate > 1 and probe.source_fps) else None
        step = rate if (rate > 1 and fps is None) else 1
        count = self.num_frames if step == 1 else (self.num_frames - 1) * step + 1
        probe.close()
        with VideoReader(path, start=start, num_frames=count, fps=fps) as reader:
            chunks = list(reader.iter_uint8_chunks(count))
        frames = torch.from_numpy(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))
        frames = frames[::step].permute(0, 3, 1, 2)
        if frames.shape[0] == 0:
            raise VideoReadError(f"cannot read {path}: no frames")
        if frames.shape[0] < self.num_frames:  # short video: repeat the last frame
            pad = frames[-1:].expand(self.num_frames - frames.shape[0], -1, -1, -1)
            frames = torch.cat([frames, pad])
        return frames

    def _transform(self, frames: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """uint8 (t, 3, h, w) -> float (3, t, crop, crop) in [-1, 1]."""
        short = self.resolution
        if self.min_resolution is not None:
            short = rng.randint(self.min_resolution, self.resolution)
        frames = resize_short_side(frames, max(short, self.crop_size))
        h, w = frames.shape[-2:]
        c = self.crop_size
        if self.train:
            top, left = rng.randint(0, h - c), rng.randint(0, w - c)
        else:
            top, left = (h - c) // 2, (w - c) // 2
        frames = frames[..., top:top + c, left:left + c]
        if self.hflip and rng.random() < 0.5:
            frames = frames.flip(-1)
        return frames.permute(1, 0, 2, 3).float().div_(127.5).sub_(1.0).contiguous()


def collate_clips(samples: List[Optional[dict]]) -> Optional[dict]:
    """Stack same-shaped clips into ``{"video": (B, 3, T, H, W), "path": [...], "skipped": n}``; ``None`` samples
    (unreadable files) are dropped and counted; ``None`` when nothing is left."""
    good = [s for s in samples if s is not None]
    if not good:
        return None
    return {"video": torch.stack([s["video"] for s in good]), "path": [s["path"] for s in good],
            "skipped": len(samples) - len(good)}


class KindBatchSampler(Sampler[List[int]]):
    """Batches of dataset indices that never mix images with videos, sharded over ``num_replicas`` ranks.

    Each ``__iter__`` is one epoch: with ``shuffle``, indices are permuted with a seed derived from ``seed`` and the
    epoch number (counted here, or set by Lightning through :meth:`set_epoch`), batched per kind, and the batches
    shuffled. Every rank gets the same number of batches. The training loader of :class:`VideoDataModule` wraps it
    in :class:`wfvae.training.resume.ResumableBatchSampler`, which counts the epochs itself and asks for
    :meth:`epoch_batches` (exact resume).
    """

    def __init__(self, kinds: Sequence[str], batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.kinds, self.batch_size, self.shuffle, self.drop_last = list(kinds), batch_size, shuffle, drop_last
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0

    def _batches(self, epoch: int) -> List[List[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        batches = []
        for kind in sorted(set(self.kinds)):
            idx = [i for i, k in enumerate(self.kinds) if k == kind]
            if self.shuffle:
                rng.shuffle(idx)
            for a in range(0, len(idx), self.batch_size):
                if len(idx) - a >= self.batch_size or not self.drop_last:
                    batches.append(idx[a:a + self.batch_size])
        if self.shuffle:
            rng.shuffle(batches)
        per_rank = len(batches) // self.num_replicas if self.drop_last else math.ceil(len(batches) / self.num_replicas)
        if batches and per_rank * self.num_replicas > len(batches):  # pad by repeating batches
            batches += batches[: per_rank * self.num_replicas - len(batches)]
        return batches[self.rank: per_rank * self.num_replicas: self.num_replicas]

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch (also after a resume), through :attr:`sampler`."""
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """This rank's batches of ``epoch`` (what :class:`wfvae.training.resume.ResumableBatchSampler` iterates)."""
        return self._batches(epoch)

    @property
    def sampler(self) -> "_EpochHook":
        """Lightning looks for ``set_epoch`` on ``batch_sampler.sampler``; this forwards it here."""
        return _EpochHook(self)

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches(0))


class _EpochHook:
    def __init__(self, owner: KindBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


# ------------------------------------------------------------------------------------------------ data module
class VideoDataModule(L.LightningDataModule):
    """Training / validation clips for VAE training (see the module docstring).

    Args:
        data: sources (folders, .txt lists, .json annotations, media files).
        val_data: validation sources; when absent, ``val_fraction`` of ``data`` is held out by path hash.
        val_fraction: fraction of ``data`` held out when ``val_data`` is not given (0: no validation).
        annotation_root: folder that relative ``path`` entries of .json annotations refer to.
        num_frames, sample_rate, dynamic_sample: temporal window (use 1 + 4n frames for WF-VAE).
        resolution, min_resolution, crop_size: spatial pipeline of training clips.
        val_num_frames, val_resolution: validation window and centre-crop size (default: the training values,
            crop = ``crop_size``).
        batch_size, val_batch_size, num_workers: loader settings.
        samples_per_epoch: training samples per epoch (default: one per file; more gives several random windows
            per file, useful with few long videos).
        val_max_files: use at most this many validation files (the first by path hash).
        seed: shuffling seed of the batch sampler.
        cut_prob: probability that a training video clip contains a hard scene cut (see the module docstring).
    """

    def __init__(self, data: List[str], val_data: Optional[List[str]] = None, val_fraction: float = 0.0,
                 annotation_root: Optional[str] = None, num_frames: int = 17, sample_rate: int = 1,
                 dynamic_sample: bool = False, resolution: int = 256, min_resolution: Optional[int] = None,
                 crop_size: Optional[int] = None, val_num_frames: Optional[int] = None,
                 val_resolution: Optional[int] = None, batch_size: int = 1, val_batch_size: int = 1,
                 num_workers: int = 2, samples_per_epoch: Optional[int] = None, val_max_files: Optional[int] = None,
                 seed: int = 0, cut_prob: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.train_set = self.val_set = None
        self._split = self._check_sources()

    def _check_sources(self) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
        """The ``(path, key)`` training and validation files, checked when the module is built, before a trainer
        creates run folders (:mod:`wfvae.training.data_checks`): missing, empty or malformed sources raise
        :class:`DataSourceError`, and so do sources in which not one file can be read."""
        hp = self.hparams
        files = collect_files(hp.data, hp.annotation_root, "data.init_args.data")
        if hp.val_data:
            train, val = files, collect_files(hp.val_data, hp.annotation_root, "data.init_args.val_data")
        else:
            train = [f for f in files if not in_validation(f[1], hp.val_fraction)]
            val = [f for f in files if in_validation(f[1], hp.val_fraction)]
            if not train:
                raise DataSourceError(f"val_fraction {hp.val_fraction} holds out every one of the {len(files)} "
                                      f"files of data.init_args.data: lower it or give data.init_args.val_data")
            if not val and hp.val_fraction > 0:
                warnings.warn(f"no validation: val_fraction {hp.val_fraction} of the {len(files)} files of "
                              f"data.init_args.data holds none out, so validation never runs; give "
                              f"data.init_args.val_data or raise val_fraction", NoValidationWarning, stacklevel=3)
        val = sorted(val, key=lambda f: hashlib.sha1(f[1].encode()).hexdigest())[: self.hparams.val_max_files]
        self._unreadable = first_readable([f[0] for f in train], "data.init_args.data")
        if val:
            self._unreadable.update(first_readable([f[0] for f in val], "data.init_args.val_data"))
        return train, val

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        train, val = self._split
        self.train_set = VideoClipDataset([f[0] for f in train], hp.num_frames, hp.sample_rate, hp.dynamic_sample,
                                          hp.resolution, hp.crop_size, hp.min_resolution, train=True,
                                          length=hp.samples_per_epoch, cut_prob=hp.cut_prob)
        vres = hp.val_resolution or hp.crop_size or hp.resolution
        self.val_set = VideoClipDataset([f[0] for f in val], hp.val_num_frames or hp.num_frames, hp.sample_rate,
                                        False, vres, vres, train=False) if val else None
        for dataset in (self.train_set, self.val_set):  # files found unreadable by the checks: skipped, counted
            if dataset is not None:
                dataset.skipped.update({p: r for p, r in self._unreadable.items() if p in dataset.files})

    def _rank(self) -> Tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: VideoClipDataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): a :class:`wfvae.training.resume.ResumableLoader` (its place in the epoch is saved in
        checkpoints; each sample's augmentations derive from ``(seed, epoch, index)``). Validation: a plain one."""
        world, rank = self._rank()
        kinds = [dataset.kind(i) for i in range(len(dataset))]
        sampler = KindBatchSampler(kinds, batch_size, shuffle=shuffle, drop_last=shuffle, seed=self.hparams.seed,
                                   num_replicas=world, rank=rank)
        workers = self.hparams.num_workers
        options = dict(collate_fn=collate_clips, num_workers=workers, persistent_workers=workers > 0,
                       pin_memory=torch.cuda.is_available())
        if shuffle:
            return ResumableLoader(dataset, ResumableBatchSampler(sampler, self.hparams.seed), **options)
        return DataLoader(dataset, batch_sampler=sampler, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.hparams.val_batch_size, shuffle=False)
