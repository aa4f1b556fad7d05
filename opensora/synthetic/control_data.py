"""Synthetic data for the structure controller: moving shapes, their control maps and pseudo-latents.

No files and CPU-fast, for the tiny controller recipe (``configs/opensora/structure_controller_tiny.yaml``) and the
tests; :class:`opensora.training.StructureControllerTraining` takes these batches like real ones.
"""
from __future__ import annotations

from typing import Dict, List

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from wfvae.training.resume import ResumableBatchSampler, ResumableLoader, split_index

from opensora.pipelines.control_signals import make_control


def moving_shapes(num_frames: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A clip (3, T, H, W) in [-1, 1]: 1 to 3 coloured rectangles moving in straight lines over a flat background."""
    video = (torch.rand(3, 1, 1, 1, generator=generator) * 2 - 1).expand(3, num_frames, height, width).clone()
    for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
        colour = torch.rand(3, 1, 1, generator=generator) * 2 - 1
        h = int(torch.randint(height // 4, height // 2 + 1, (1,), generator=generator))
        w = int(torch.randint(width // 4, width // 2 + 1, (1,), generator=generator))
        y0, x0 = (torch.rand(2, generator=generator) * torch.tensor([height - h, width - w])).tolist()
        vy, vx = (torch.rand(2, generator=generator) * 4 - 2).tolist()
        for t in range(num_frames):
            y = int(min(max(y0 + vy * t, 0), height - h))
            x = int(min(max(x0 + vx * t, 0), width - w))
            video[:, t, y:y + h, x:x + w] = colour
    return video


def pseudo_latents(video: torch.Tensor, projection: torch.Tensor, stride_t: int = 4, stride_s: int = 8) -> torch.Tensor:
    """A cheap stand-in for a VAE: (3, 1 + 4n, H, W) -> (C, 1 + n, H/8, W/8), the causal frame groups of the VAE
    (frame 0 alone, then 4 frames) average-pooled and mixed to C channels by ``projection`` (C, 3)."""
    first, rest = video[:, :1], video[:, 1:]
    groups = [first] + ([rest.reshape(3, -1, stride_t, *rest.shape[2:]).mean(dim=2)] if rest.shape[1] else [])
    pooled = F.avg_pool2d(torch.cat(groups, dim=1), stride_s)
    return torch.einsum("ck,kthw->cthw", projection, pooled)


class SyntheticControlDataset(Dataset):
    """Moving-shape clips with pseudo-latents, control maps and random captions; sample ``i`` is fixed by
    ``seed + i``. Items: ``video`` (3, T, H, W), ``latents`` (C, t, h, w), ``control`` (3, T, H, W),
    ``text_embeds`` (L, C_text), ``text_mask`` (L,)."""

    def __init__(self, length: int = 16, num_frames: int = 9, height: int = 32, width: int = 32,
                 latent_channels: int = 8, caption_length: int = 4, caption_channels: int = 32,
                 control: str = "canny", seed: int = 0):
        if (num_frames - 1) % 4 or height % 8 or width % 8:
            raise ValueError(f"need 1 + 4n frames and sizes that are multiples of 8, got {num_frames} {height}x{width}")
        self.length, self.num_frames, self.height, self.width = length, num_frames, height, width
        self.caption_length, self.caption_channels, self.control, self.seed = (caption_length, caption_channels,
                                                                              control, seed)
        self.projection = torch.randn(latent_channels, 3, generator=torch.Generator().manual_seed(seed + 12345))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index) -> Dict[str, torch.Tensor]:
        index = split_index(index)[0]  # (index, seed) from a ResumableBatchSampler: the item is fixed by index
        g = torch.Generator().manual_seed(self.seed + index)
        video = moving_shapes(self.num_frames, self.height, self.width, g)
        return {"video": video, "latents": pseudo_latents(video, self.projection),
                "control": make_control(self.control, video),
                "text_embeds": torch.randn(self.caption_length, self.caption_channels, generator=g),
                "text_mask": torch.ones(self.caption_length)}


class SyntheticControlData(L.LightningDataModule):
    """:class:`SyntheticControlDataset` for training and validation (different seeds): no files, CPU-fast. The
    training loader shards by rank itself: with DDP set ``trainer.use_distributed_sampler: false``."""

    def __init__(self, samples_per_epoch: int = 16, val_samples: int = 2, num_frames: int = 9, height: int = 32,
                 width: int = 32, latent_channels: int = 8, caption_length: int = 4, caption_channels: int = 32,
                 control: str = "canny", batch_size: int = 2, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def _dataset(self, length: int, seed: int) -> SyntheticControlDataset:
        hp = self.hparams
        return SyntheticControlDataset(length, hp.num_frames, hp.height, hp.width, hp.latent_channels,
                                       hp.caption_length, hp.caption_channels, hp.control, seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled per ``(seed, epoch)``, full batches; resumable (:class:`wfvae.training.resume.ResumableLoader`)."""
        from wfvae.training.data import KindBatchSampler

        hp = self.hparams
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = KindBatchSampler(["clip"] * hp.samples_per_epoch, hp.batch_size, shuffle=True, drop_last=True,
                                   seed=hp.seed, num_replicas=world, rank=rank)
        return ResumableLoader(self._dataset(hp.samples_per_epoch, hp.seed), ResumableBatchSampler(sampler, hp.seed),
                               num_workers=hp.num_workers)

    def val_dataloader(self) -> List[DataLoader]:
        hp = self.hparams
        if not hp.val_samples:
            return []
        return DataLoader(self._dataset(hp.val_samples, hp.seed + 10**6), batch_size=hp.batch_size,
                          num_workers=hp.num_workers)
