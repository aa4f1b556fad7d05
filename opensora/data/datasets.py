"""Text-video training data for the denoiser: release annotations, min-max token buckets, a LightningDataModule.

**Annotation JSON** (the Open-Sora Plan v1.3 release format): a list of entries ::

    {"path": "clips/a.mp4",                      # relative to the entry's folder (see the data file)
     "cap": "a caption" | ["caption 1", ...],    # a list: one is drawn per sample
     "resolution": {"height": 720, "width": 1280},
     "num_frames": 300, "fps": 30.0,             # absent for images (.jpg .jpeg .png .webp .bmp)
     "aesthetic": 5.2,                           # optional, filtered by ``min_aesthetic``
     "cut": [start, end],                        # optional: source frames [start, end) of one scene
     "crop": [x0, x1, y0, y1]}                   # optional: pixel box kept before resizing

**Data file** (``data:``): a ``.txt`` with one ``folder,annotation.json`` per line, as the release's
``scripts/train_data/*.txt`` (``#`` comments and blank lines ignored; a line without a comma is an annotation JSON
whose paths are relative to its own folder), or an annotation ``.json`` directly, or a list of either.

**Sample** (:class:`AnnotationDataset`), for an entry of aspect ratio ``r``:

* frames are resampled to ``fps`` (never above the source rate: frames are dropped, not repeated), a window of
  ``min(available, num_frames)`` frames truncated to ``4k + 1`` is taken at a random start (centred in
  validation) inside ``cut``; images are one-frame clips;
* the spatial size comes from the min-max token strategy (:func:`opensora.data.buckets.min_max_token_shape`:
  ``min_tokens <= (h/stride)(w/stride) <= max_tokens``, aspect kept); the frame is scaled to cover it and
  centre-cropped; entries beyond ``max_aspect`` or with fewer than ``min_frames`` frames are dropped;
* the caption is replaced by ``""`` with probability ``caption_dropout`` (classifier-free guidance);
* with ``mask_mix`` (image-condition model), a frame mask (1 = generate, 0 = keep) of a type drawn from the mix
  (:mod:`opensora.pipelines.masks`, ``image_mask_mix`` for images).

Items: ``video`` (3, T, h, w) in [-1, 1], ``caption`` str, ``path`` str, ``captions`` (every caption of the entry,
for :func:`opensora.training.offline.write_latent_cache`), optional ``mask`` (1, T, h, w).
Text is **not** tokenized here: captions stay strings and the training module encodes them with its text encoder
(one place for the tokenizer, no per-worker copies of mT5's tokenizer; the latent cache holds embeddings).

Batches: :class:`opensora.data.buckets.BucketBatchSampler` over the ``(T, h, w)`` keys, so a batch has one shape.
:class:`LatentCacheDataset` reads precomputed ``.safetensors`` items (``latents``, ``text_embeds``, ``text_mask``,
optional ``masked_latents`` / ``latent_mask``) instead, for small GPUs.
"""
from __future__ import annotations

import glob
import math
import os
import random
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from wfvae.training.data_checks import (
    DataSourceError, NoValidationWarning, UnreadableFileWarning, all_unreadable_error, every_file_failed,
    first_readable, missing_source, read_json_list)
from wfvae.training.resume import ResumableBatchSampler, ResumableLoader, split_index
from wfvae.io.video import IMAGE_EXTENSIONS, VideoReader, VideoReadError
from wfvae.io.frames import resize_frames

from opensora.data.buckets import BucketBatchSampler, aspect_ok, min_max_token_shape, valid_frames
from opensora.pipelines.masks import (RELEASE_IMAGE_MIX, RELEASE_VIDEO_MIX, MaskType, frame_mask, pixel_mask,
                                     sample_mask_type)


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def read_data_file(data: Union[str, Sequence[str]], setting: str = "data") -> List[Tuple[str, str]]:
    """``(folder, annotation.json)`` pairs of a data file, an annotation JSON, or a list of them."""
    if not isinstance(data, str):
        return [pair for item in data for pair in read_data_file(item, setting)]
    if data.endswith(".json"):
        return [(os.path.dirname(os.path.abspath(data)), data)]
    if not os.path.isfile(data):
        raise missing_source(data, setting, "give a data .txt (one folder,annotation.json per line) or an "
                                           "annotation .json (python tools/build_annotations.py makes one)")
    base = os.path.dirname(os.path.abspath(data))
    pairs = []
    with open(data) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "," in line:
                folder, anno = (part.strip() for part in line.split(",", 1))
                pairs.append((os.path.join(base, folder), os.path.join(base, anno)))
            else:
                anno = os.path.join(base, line)
                pairs.append((os.path.dirname(anno), anno))
    return pairs


def load_entries(data: Union[str, Sequence[str]], min_aesthetic: Optional[float] = None,
                 setting: str = "data") -> List[Dict[str, Any]]:
    """Every annotation entry of ``data`` with ``path`` made absolute (entries below ``min_aesthetic`` dropped).
    A missing or malformed file raises :class:`wfvae.training.data_checks.DataSourceError` naming it and ``setting``."""
    entries = []
    for folder, anno in read_data_file(data, setting):
        for item in read_json_list(anno, setting):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise DataSourceError(f"annotation file {anno} has an entry without a \"path\" (setting {setting}): "
                                      f"{str(item)[:80]}")
            if min_aesthetic is not None and item.get("aesthetic", math.inf) < min_aesthetic:
                continue
            entries.append({**item, "path": os.path.join(folder, item["path"])})
    return entries


def cover_resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, T, H, W) -> (3, T, height, width): scaled to cover the target (aspect kept), centre-cropped
    (:func:`wfvae.io.frames.resize_frames`)."""
    return resize_frames(video.transpose(0, 1), (height, width), "crop").transpose(0, 1).contiguous()


def _captions(cap: Union[str, Sequence[str], None]) -> List[str]:
    if cap is None:
        return [""]
    return [cap] if isinstance(cap, str) else list(cap) or [""]


class AnnotationDataset(Dataset):
    """Clips of annotated videos and images at their min-max-token bucket shape (see the module docstring).

    Args:
        entries: annotation entries with absolute ``path`` (:func:`load_entries`).
        num_frames: maximum frames of a clip (``4k + 1``; 93 for v1.3).
        fps: training frame rate (16 for v1.3).
        max_tokens, min_tokens, stride: min-max token strategy (pixels per token side: VAE 8 x patch 2 = 16).
        max_aspect: drop entries with ``max(h/w, w/h)`` above it (None: keep all).
        min_frames: drop videos that give fewer frames (images always kept unless ``use_images`` is False).
        caption_dropout: probability of an empty caption.
        mask_mix, image_mask_mix: mask type weights for the image-condition model (None: no ``mask``). An entry's
            ``exclude_masks`` (list of mask types) leaves those types out of its draws.
        min_clear_ratio, max_clear_ratio: kept-frame ratio range of ``continuation`` / ``random_temporal``.
        train: random windows and captions (else centred window, first caption, no dropout).
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], num_frames: int = 93, fps: float = 16.0,
                 max_tokens: int = 1920, min_tokens: int = 1, stride: int = 16, max_aspect: Optional[float] = 3.0,
                 min_frames: int = 1, use_images: bool = True, caption_dropout: float = 0.1,
                 mask_mix: Optional[Dict[str, float]] = None, image_mask_mix: Optional[Dict[str, float]] = None,
                 min_clear_ratio: float = 0.0, max_clear_ratio: float = 1.0, train: bool = True):
        self.fps, self.caption_dropout, self.train = fps, caption_dropout, train
        self.mask_mix, self.image_mask_mix = mask_mix, image_mask_mix or (RELEASE_IMAGE_MIX if mask_mix else None)
        self.clear_ratio = (min_clear_ratio, max_clear_ratio)
        self.entries, self.shapes = [], []
        self.skipped: Dict[str, str] = {}  # unreadable files met so far: path -> reason
        for entry in entries:
            shape = self.entry_shape(entry, num_frames, max_tokens, min_tokens, stride, max_aspect)
            if shape is None or (shape[0] == 1 and not use_images) or (shape[0] > 1 and shape[0] < min_frames):
                continue
            if mask_mix is not None:
                self._check_exclusions(entry, shape[0])
            self.entries.append(entry)
            self.shapes.append(shape)

    def _check_exclusions(self, entry: Dict[str, Any], frames: int) -> None:
        excluded = entry.get("exclude_masks") or []
        if not isinstance(excluded, (list, tuple)) or not all(isinstance(k, str) for k in excluded):
            raise ValueError(f"{entry['path']}: exclude_masks must be a list of mask type names, got {excluded!r}")
        unknown = [k for k in excluded if k not in {m.value for m in MaskType}]
        if unknown:
            raise ValueError(f"{entry['path']}: unknown mask types in exclude_masks: {unknown} (known: "
                             f"{', '.join(m.value for m in MaskType)})")
        mix, left = self._full_mix(frames), self._mix_of(entry, frames)
        if not left or (sum(map(float, left.values())) == 0 and sum(map(float, mix.values())) > 0):
            raise ValueError(f"{entry['path']}: exclude_masks {list(excluded)} leaves no mask type of the mix "
                             f"{dict(mix)}")

    def entry_shape(self, entry: Dict[str, Any], num_frames: int, max_tokens: int, min_tokens: int, stride: int,
                    max_aspect: Optional[float]) -> Optional[Tuple[int, int, int]]:
        """The ``(T, h, w)`` bucket of an entry, None when it is filtered out."""
        if entry.get("crop"):
            x0, x1, y0, y1 = entry["crop"]
            height, width = y1 - y0, x1 - x0
        else:
            height, width = entry["resolution"]["height"], entry["resolution"]["width"]
        if height < 1 or width < 1 or not aspect_ok(height, width, max_aspect):
            return None
        h, w = min_max_token_shape(height, width, max_tokens, min_tokens, stride)
        if is_image(entry["path"]):
            return 1, h, w
        frames = valid_frames(min(self.available_frames(entry), num_frames))
        return (frames, h, w) if frames >= 1 else None

    def _rates(self, entry: Dict[str, Any]) -> Tuple[float, float]:
        src = float(entry.get("fps") or self.fps)
        return src, min(src, float(self.fps))

    def available_frames(self, entry: Dict[str, Any]) -> int:
        """Frames of the entry's ``cut`` (whole video without) at the training rate."""
        start, end = entry.get("cut") or (0, entry["num_frames"])
        src, out = self._rates(entry)
        return int(math.floor((end - start) * out / src + 1e-6))

    def keys(self) -> List[Tuple[int, int, int]]:
        return list(self.shapes)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: int, rng: Optional[random.Random] = None) -> torch.Tensor:
        """The clip (3, T, h, w) of entry ``index`` at its bucket shape (a training window drawn with ``rng``,
        default: the global ``random``)."""
        rng = rng or random.Random(random.getrandbits(63))
        entry, (frames, h, w) = self.entries[index], self.shapes[index]
        crop = entry.get("crop")
        size = None if crop else (h, w)
        if frames == 1 and is_image(entry["path"]):
            video = VideoReader(entry["path"], size=size).read()
        else:
            first, end = entry.get("cut") or (0, entry["num_frames"])
            src, out = self._rates(entry)
            span = min(end - first, math.ceil(frames * src / out))
            slack = max(end - first - span, 0)
            start = first + (rng.randint(0, slack) if self.train else slack // 2)
            with VideoReader(entry["path"], start=start, num_frames=frames, fps=out, size=size) as reader:
                video = reader.read()
            if video.shape[1] < frames:  # the file is shorter than its annotation says: repeat the last frame
                video = torch.cat([video, video[:, -1:].expand(-1, frames - video.shape[1], -1, -1)], dim=1)
        if crop:
            x0, x1, y0, y1 = crop
            video = cover_resize(video[..., y0:y1, x0:x1], h, w)
        return video

    def caption(self, index: int, rng: Optional[random.Random] = None) -> str:
        caps = _captions(self.entries[index].get("cap"))
        if not self.train:
            return caps[0]
        rng = rng or random.Random(random.getrandbits(63))
        if rng.random() < self.caption_dropout:
            return ""
        return rng.choice(caps)

    def mask(self, index: int, rng: Optional[random.Random] = None) -> Optional[torch.Tensor]:
        """(1, T, h, w) pixel mask (1 = generate, 0 = keep) drawn from the mask mix; None without a mix."""
        if self.mask_mix is None:
            return None
        frames, h, w = self.shapes[index]
        g = torch.Generator().manual_seed((rng or random).getrandbits(62) if self.train else index)
        kind = sample_mask_type(self._mix_of(self.entries[index], frames), g)
        return pixel_mask(frame_mask(kind, frames, None, *self.clear_ratio, generator=g), h, w)

    def _full_mix(self, frames: int) -> Dict[str, float]:
        return self.image_mask_mix if frames == 1 else self.mask_mix

    def _mix_of(self, entry: Dict[str, Any], frames: int) -> Dict[str, float]:
        """The mask mix of ``entry`` (a clip of ``frames`` frames): the data set's, less its ``exclude_masks``."""
        excluded = entry.get("exclude_masks") or ()
        mix = self._full_mix(frames)
        return {k: v for k, v in mix.items() if k not in excluded} if excluded else mix

    def __getitem__(self, index) -> Dict[str, Any]:
        """The item of ``index``: an int, or ``(index, seed)`` from :class:`wfvae.training.resume.ResumableBatchSampler`
        (the window, caption and mask then depend on the seed only)."""
        index, rng = split_index(index)
        try:
            video = self.read(index, rng)
        except (VideoReadError, OSError, RuntimeError) as exc:  # skipped and counted; collate drops the None
            self._skip(self.entries[index]["path"], exc)
            return None
        item = {"video": video, "caption": self.caption(index, rng),
                "path": self.entries[index]["path"], "captions": _captions(self.entries[index].get("cap"))}
        mask = self.mask(index, rng)
        if mask is not None:
            item["mask"] = mask
        return item

    def _skip(self, path: str, exc: BaseException) -> None:
        """Warn once per unreadable file (with the running count); stop when every file has failed."""
        if path not in self.skipped:
            self.skipped[path] = " ".join(str(exc).split()) or type(exc).__name__
            warnings.warn(f"skipped unreadable file {path} ({len(self.skipped)} skipped so far in this process): "
                          f"{self.skipped[path]}", UnreadableFileWarning, stacklevel=3)
        paths = [e["path"] for e in self.entries]
        if every_file_failed(self.skipped, paths):  # no step could ever be taken: stop, do not loop forever
            raise all_unreadable_error(paths, self.skipped[path])


class LatentCacheDataset(Dataset):
    """Precomputed items: every ``*.safetensors`` below ``folder`` holds ``latents`` (C, t, h, w),
    ``text_embeds`` (L, D), ``text_mask`` (L,) and optionally ``masked_latents`` (C, t, h, w) and
    ``compressed_mask`` (s, t, h, w) for the image-condition model (write them with :func:`save_cache_item`).
    Bucket keys are the latent shapes. Caption dropout is not applied (the embeddings are fixed)."""

    def __init__(self, folder: str):
        from safetensors import safe_open

        self.files = sorted(glob.glob(os.path.join(folder, "**", "*.safetensors"), recursive=True))
        if not self.files:
            raise FileNotFoundError(f"no .safetensors files below {folder}")
        self.shapes = []
        for path in self.files:
            with safe_open(path, "pt") as fh:
                self.shapes.append(tuple(fh.get_slice("latents").get_shape()[1:]))

    def keys(self) -> List[Tuple[int, ...]]:
        return list(self.shapes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> Dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(self.files[split_index(index)[0]])


def save_cache_item(path: str, **tensors: torch.Tensor) -> None:
    """Write one :class:`LatentCacheDataset` item (tensors of one sample, no batch dimension)."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)


def collate(samples: List[Optional[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """Stack same-shaped samples; tensors are stacked, other values listed; ``None`` samples dropped."""
    good = [s for s in samples if s is not None]
    if not good:
        return None
    return {k: torch.stack([s[k] for s in good]) if torch.is_tensor(good[0][k]) else [s[k] for s in good]
            for k in good[0]}


class OpenSoraDataModule(L.LightningDataModule):
    """Denoiser training data: :class:`AnnotationDataset` (or :class:`LatentCacheDataset` with ``cache``) in
    shape-bucketed batches. Arguments not listed are those of :class:`AnnotationDataset`.

    Args:
        data: data file(s) (see the module docstring); ignored with ``cache``.
        val_data: validation data file(s) (no dropout, centred windows), or None.
        cache: folder of precomputed ``.safetensors`` items instead of videos.
        mask_mix: mask weights; ``"release"`` for the released I2V mix
        (:data:`opensora.pipelines.masks.RELEASE_VIDEO_MIX`).
        batch_size: per-device batch size; ``drop_last`` drops incomplete batches.
        seed: sampler seed (shuffling differs per epoch, identical across ranks).

    With ``strategy: ddp`` set ``trainer.use_distributed_sampler: false``: the bucket sampler shards by rank itself.
    """

    def __init__(self, data: Union[str, List[str], None] = None, val_data: Union[str, List[str], None] = None,
                 cache: Optional[str] = None, num_frames: int = 93, fps: float = 16.0, max_tokens: int = 1920,
                 min_tokens: int = 1, stride: int = 16, max_aspect: Optional[float] = 3.0, min_frames: int = 1,
                 use_images: bool = True, min_aesthetic: Optional[float] = None, caption_dropout: float = 0.1,
                 mask_mix: Union[str, Dict[str, float], None] = None,
                 image_mask_mix: Optional[Dict[str, float]] = None, min_clear_ratio: float = 0.0,
                 max_clear_ratio: float = 1.0, batch_size: int = 1, drop_last: bool = False, num_workers: int = 2,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        if data is None and cache is None:
            raise ValueError("give data (annotation data files) or cache (a folder of precomputed items)")
        self.train_set = self.val_set = None
        self._checked = self._check_sources()

    def _check_sources(self) -> Dict[str, Dataset]:
        """The datasets, built (cheaply: annotations only) and checked when the module is, before a trainer creates
        run folders (:mod:`wfvae.training.data_checks`): a missing, non-JSON or empty source, no usable entry, or no
        readable
        file raise :class:`DataSourceError`; unreadable files met by the check are skipped and counted."""
        hp = self.hparams
        if hp.cache:
            if not os.path.isdir(hp.cache):
                raise missing_source(hp.cache, "data.init_args.cache", "give the folder written by "
                                                                       "python -m opensora.training cache")
            return {}
        built = {"data": self._dataset(hp.data, True, "data.init_args.data")}
        if len(built["data"]) == 0:
            raise DataSourceError(f"no usable training entries in {hp.data} (setting data.init_args.data): every "
                                  f"entry is filtered out by num_frames/min_frames/max_aspect/use_images/"
                                  f"min_aesthetic, or the annotation list is empty")
        if hp.val_data:
            built["val_data"] = self._dataset(hp.val_data, False, "data.init_args.val_data")
            if len(built["val_data"]) == 0:
                warnings.warn(f"no validation: no usable entry in {hp.val_data} (setting data.init_args.val_data), "
                              f"so validation never runs", NoValidationWarning, stacklevel=3)
                del built["val_data"]
        for setting, dataset in built.items():
            dataset.skipped.update(first_readable([e["path"] for e in dataset.entries], f"data.init_args.{setting}"))
        return built

    def _dataset(self, data, train: bool, setting: str = "data") -> Dataset:
        hp = self.hparams
        mix = RELEASE_VIDEO_MIX if hp.mask_mix == "release" else hp.mask_mix
        return AnnotationDataset(load_entries(data, hp.min_aesthetic, setting), hp.num_frames, hp.fps, hp.max_tokens,
                                 hp.min_tokens, hp.stride, hp.max_aspect, hp.min_frames, hp.use_images,
                                 hp.caption_dropout if train else 0.0, mix, hp.image_mask_mix, hp.min_clear_ratio,
                                 hp.max_clear_ratio, train=train)

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        self.train_set = LatentCacheDataset(hp.cache) if hp.cache else self._checked["data"]
        if len(self.train_set) == 0:
            raise ValueError(f"no usable training samples in {hp.cache or hp.data}")
        self.val_set = self._checked.get("val_data")

    def _rank(self) -> Tuple[int, int]:
        trainer = self.trainer  # a LightningDataModule's trainer (None until one uses it); it has no ``_trainer``
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): a :class:`wfvae.training.resume.ResumableLoader` (its place in the epoch is saved in
        checkpoints; each sample's window, caption and mask derive from ``(seed, epoch, index)``). Validation: a
        plain one."""
        world, rank = self._rank()
        hp = self.hparams
        sampler = BucketBatchSampler(dataset.keys(), hp.batch_size, world, rank, shuffle=shuffle,
                                     drop_last=hp.drop_last and shuffle, seed=hp.seed)
        options = dict(collate_fn=collate, num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
                       pin_memory=torch.cuda.is_available())
        if shuffle:
            return ResumableLoader(dataset, ResumableBatchSampler(sampler, hp.seed), **options)
        return DataLoader(dataset, batch_sampler=sampler, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
