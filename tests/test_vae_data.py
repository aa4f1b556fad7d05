"""Video data module: sources, temporal windows, mixed images/videos, unreadable files, deterministic split."""
import json
import os

import numpy as np
import pytest
import torch

from wfvae.training.data import (
    KindBatchSampler, UnreadableFileWarning, VideoClipDataset, VideoDataModule, collect_files, collate_clips,
    in_validation)
from wfvae.io.video import VideoWriter, write_image


def _counter_video(path, frames=20, h=24, w=32):
    """Frame k is a flat grey of value 10*k (exactly recoverable after lossless coding, up to +-1)."""
    clip = torch.stack([torch.full((3, h, w), 10.0 * k / 127.5 - 1.0) for k in range(frames)], dim=1)
    with VideoWriter(path, fps=10, lossless=True) as writer:
        writer.write(clip)


def _frame_values(video):
    """Frame indices of a decoded counter clip (3, T, H, W) in [-1, 1]."""
    return [round(((v + 1) * 127.5 / 10).item()) for v in video.mean(dim=(0, 2, 3))]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "sub").mkdir()
    _counter_video(str(root / "a.mp4"))
    _counter_video(str(root / "sub" / "b.mp4"), frames=6)
    for i in range(2):
        write_image(str(root / f"img{i}.png"), torch.rand(3, 20, 28) * 2 - 1)
    (root / "broken.mp4").write_bytes(b"\x00\x01not a video" * 50)
    (root / "notes.txt.bak").write_text("ignored")
    return root


def test_sources_folder_list_and_annotation(media, tmp_path):
    files = collect_files([str(media)])
    assert [k for _, k in files] == ["a.mp4", "broken.mp4", "img0.png", "img1.png", os.path.join("sub", "b.mp4")]
    (tmp_path / "list.txt").write_text(f"# comment\n{media / 'a.mp4'}\n\n")
    (tmp_path / "anno.json").write_text(json.dumps([{"path": "sub/b.mp4", "cap": "x"}, {"path": "img0.png"}]))
    listed = collect_files([str(tmp_path / "list.txt"), str(tmp_path / "anno.json")], annotation_root=str(media))
    assert [p for p, _ in listed] == [str(media / "a.mp4"), str(media / "sub/b.mp4"), str(media / "img0.png")]
    with pytest.raises(FileNotFoundError):
        collect_files([str(tmp_path / "missing")])


def test_temporal_window_and_rate(media):
    path = str(media / "a.mp4")
    val = VideoClipDataset([path], num_frames=5, sample_rate=3, resolution=16, train=False)
    assert _frame_values(val[0]["video"]) == [3, 6, 9, 12, 15]  # centred: a span of 13 of the 20 frames
    train = VideoClipDataset([path], num_frames=5, sample_rate=3, dynamic_sample=True, resolution=16)
    for _ in range(8):
        values = _frame_values(train[0]["video"])
        steps = {b - a for a, b in zip(values, values[1:])}
        assert len(steps) == 1 and steps.pop() in (1, 2, 3) and 0 <= values[0] and values[-1] <= 19
    short = VideoClipDataset([str(media / "sub" / "b.mp4")], num_frames=9, sample_rate=2, resolution=16)
    assert _frame_values(short[0]["video"]) == [0, 1, 2, 3, 4, 5, 5, 5, 5]  # rate lowered, last frame repeated


def test_spatial_pipeline(media):
    ds = VideoClipDataset([str(media / "a.mp4"), str(media / "img0.png")], num_frames=5, resolution=16,
                          crop_size=12, min_resolution=12)
    video, image = ds[0]["video"], ds[1]["video"]
    assert video.shape == (3, 5, 12, 12) and image.shape == (3, 1, 12, 12)
    assert video.dtype == torch.float32 and video.min() >= -1 and video.max() <= 1


def test_mixed_batches_and_unreadable_files(media):
    dm = VideoDataModule(data=[str(media)], num_frames=5, resolution=16, batch_size=2, num_workers=0,
                         samples_per_epoch=20)
    dm.setup("fit")
    seen, skipped = {1: 0, 5: 0}, 0
    with pytest.warns(UnreadableFileWarning, match=r"broken\.mp4 \(1 skipped so far"):
        for batch in dm.train_dataloader():
            if batch is None:
                continue
            t = batch["video"].shape[2]
            seen[t] += batch["video"].shape[0]
            skipped += batch["skipped"]
            assert batch["video"].shape[:2] == (len(batch["path"]), 3)
            assert all(p.endswith(".png") for p in batch["path"]) == (t == 1)  # never mixed
    assert seen[1] == 8 and seen[5] == 8 and skipped == 4  # 20 samples = 4 x 5 files, 4 unreadable
    assert list(dm.train_set.skipped) == [str(media / "broken.mp4")]


def test_collate_and_sampler():
    assert collate_clips([None, None]) is None
    kinds = ["video", "image", "video", "video", "image"]
    sampler = KindBatchSampler(kinds, batch_size=2, shuffle=True, seed=3)
    epoch0, epoch1 = list(sampler), list(sampler)
    for batches in (epoch0, epoch1):
        assert sorted(i for b in batches for i in b) == list(range(5))
        assert all(len({kinds[i] for i in b}) == 1 for b in batches)
    again = KindBatchSampler(kinds, batch_size=2, shuffle=True, seed=3)
    again.sampler.set_epoch(1)  # what Lightning calls on a resume into epoch 1
    assert list(again) == epoch1
    shards = [list(KindBatchSampler(kinds, 1, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3


def test_validation_split_is_deterministic(media):
    keys = [f"clip_{i:04d}.mp4" for i in range(2000)]
    held = [k for k in keys if in_validation(k, 0.1)]
    assert held == [k for k in keys if in_validation(k, 0.1)]
    assert 150 < len(held) < 250 and not any(in_validation(k, 0.0) for k in keys)
    with pytest.warns(UnreadableFileWarning, match=r"broken\.mp4"):  # the probe names the one bad file
        dm = VideoDataModule(data=[str(media)], val_fraction=0.5, num_frames=5, resolution=16, num_workers=0)
    dm.setup("fit")
    train, val = set(dm.train_set.files), set(dm.val_set.files)
    assert not train & val and len(train | val) == 5


def test_loader_shards_over_ranks(media):
    class FakeTrainer:
        world_size, global_rank = 2, 1

    dm = VideoDataModule(data=[str(media)], num_frames=5, resolution=16, num_workers=0, samples_per_epoch=20)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 20
    dm.trainer = FakeTrainer()
    assert len(dm.train_dataloader()) == 10  # rank 1 of 2 gets half of the batches


def test_scene_cut_augmentation(media, tmp_path):
    """cut_prob: a suffix of frames k >= 1 comes from another video; never in validation or at cut_prob 0."""
    import random
    flat = str(tmp_path / "flat.mp4")
    with VideoWriter(flat, fps=10, lossless=True) as writer:  # every frame value 240 (index 24 in _frame_values)
        writer.write(torch.full((3, 12, 24, 32), 240 / 127.5 - 1.0))
    files = [str(media / "a.mp4"), flat]
    random.seed(0)
    cuts = set()
    ds = VideoClipDataset(files, num_frames=9, resolution=16, cut_prob=1.0)
    for _ in range(24):
        values = _frame_values(ds[0]["video"])
        k = next((i for i, v in enumerate(values) if v == 24), None)
        if k is not None:  # the other video was the flat one: the cut is a suffix, after the first frame
            assert k >= 1 and all(v == 24 for v in values[k:])
            cuts.add(k)
        breaks = sum(b - a != 1 for a, b in zip(values[:k], values[1:k]))
        assert breaks == 0 if k is not None else breaks <= 1  # other = a.mp4 itself: one jump to another window
    assert len(cuts) >= 3  # the cut frame is random
    for kwargs in ({"cut_prob": 0.0}, {"cut_prob": 1.0, "train": False}):
        plain = VideoClipDataset(files, num_frames=9, resolution=16, **kwargs)
        for _ in range(8):
            assert 24 not in _frame_values(plain[0]["video"])
    with pytest.raises(ValueError, match="cut_prob"):
        VideoClipDataset(files, cut_prob=1.5)
