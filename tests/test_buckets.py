"""Min-max token shapes, aspect filtering, the DDP bucket batch sampler and the annotation dataset's buckets."""
import math
import os

import pytest
import torch

from opensora.data.buckets import BucketBatchSampler, aspect_ok, min_max_token_shape, valid_frames
from opensora.data.datasets import AnnotationDataset, OpenSoraDataModule, load_entries, read_data_file

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY_DATA = os.path.join(ROOT, "configs", "opensora", "tiny_data.json")



SIZES = [(270, 480), (480, 270), (720, 1280), (1080, 1920), (64, 64), (16, 200), (2000, 500), (352, 640), (33, 47)]


@pytest.mark.parametrize("max_tokens,min_tokens,stride", [(220, 100, 32), (880, 1, 16), (16, 8, 16), (5, 5, 8)])
def test_min_max_token_shapes_obey_limits_and_stride(max_tokens, min_tokens, stride):
    for height, width in SIZES:
        h, w = min_max_token_shape(height, width, max_tokens, min_tokens, stride)
        tokens = (h // stride) * (w // stride)
        assert h % stride == 0 and w % stride == 0 and h > 0 and w > 0
        assert min_tokens <= tokens <= max_tokens, (height, width, h, w)


def test_min_max_token_shapes_keep_aspect_and_scale_both_ways():
    h, w = min_max_token_shape(1080, 1920, 220, 100, 32)  # large: down to at most max_tokens
    assert (h, w) == (352, 640)
    h, w = min_max_token_shape(64, 64, 220, 100, 32)  # small: up to at least min_tokens
    assert (h, w) == (320, 320)
    for height, width in [(720, 1280), (1280, 720), (600, 800)]:
        h, w = min_max_token_shape(height, width, 880, 1, 16)
        assert abs(math.log((h / w) / (height / width))) < 0.1
    h, w = min_max_token_shape(480, 640, 10**6, 1, 16)  # within the range: own size (rounded to the stride)
    assert (h, w) == (480, 640)
    with pytest.raises(ValueError):
        min_max_token_shape(10, 10, 4, 8)


def test_aspect_filter_and_frame_truncation():
    assert aspect_ok(100, 300, 3.0) and not aspect_ok(100, 301, 3.0) and not aspect_ok(301, 100, 3.0)
    assert aspect_ok(1, 1000, None)
    assert [valid_frames(n) for n in (0, 1, 4, 5, 8, 9, 93, 96)] == [0, 1, 1, 5, 5, 9, 93, 93]


def keys_of(n=37):
    shapes = [(1, 32, 32), (9, 32, 48), (9, 48, 32), (17, 32, 32)]
    return [shapes[(i * 7) % 5 % 4] for i in range(n)]


@pytest.mark.parametrize("batch_size,n", [(1, 36), (2, 37), (3, 37), (4, 37)])
def test_bucket_sampler_two_ranks_one_shape_every_index_once(batch_size, n):
    keys = keys_of(n)
    for epoch in range(3):
        per_rank = []
        for rank in range(2):
            sampler = BucketBatchSampler(keys, batch_size, num_replicas=2, rank=rank, seed=5)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert all(1 <= len(b) <= batch_size and len({keys[i] for i in b}) == 1 for b in batches)
            per_rank.append(batches)
        assert len(per_rank[0]) == len(per_rank[1])  # same number of steps on every rank
        seen = sorted(i for batches in per_rank for b in batches for i in b)
        assert seen == list(range(len(keys)))


def test_bucket_sampler_deterministic_per_seed_and_epoch():
    keys = keys_of()

    def run(seed, epoch, rank=0):
        sampler = BucketBatchSampler(keys, 2, num_replicas=2, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert run(0, 0) == run(0, 0) and run(0, 1) == run(0, 1)
    assert run(0, 0) != run(0, 1) and run(0, 0) != run(1, 0)
    dropped = BucketBatchSampler(keys, 4, num_replicas=2, rank=1, drop_last=True)
    assert all(len(b) == 4 for b in dropped)
    tiny = BucketBatchSampler([(1, 8, 8)], 2, num_replicas=2, rank=1)  # fewer samples than ranks: repeated
    assert list(tiny) == [[0]]


def test_annotation_dataset_buckets_and_items(tmp_path):
    data_file = tmp_path / "data.txt"
    folder = os.path.join(ROOT, "configs", "opensora")
    data_file.write_text(f"# comment\n{folder},{TINY_DATA}\n\n{TINY_DATA}\n")
    assert len(read_data_file(str(data_file))) == 2
    entries = load_entries(str(data_file))
    assert len(entries) == 4 and all(os.path.isfile(e["path"]) for e in entries)
    ds = AnnotationDataset(entries[:2], num_frames=9, fps=12, max_tokens=16, min_tokens=8, stride=16,
                           caption_dropout=1.0, mask_mix={"i2v": 1})
    assert ds.keys() == [(9, 48, 80), (9, 64, 64)]  # 16:9 full frame, square crop of the first scene
    for i in range(2):
        item = ds[i]
        assert item["video"].shape == (3, *ds.shapes[i]) and item["caption"] == ""
        assert item["video"].abs().max() <= 1
        assert item["mask"].shape == (1, *ds.shapes[i]) and item["mask"][0, 0].eq(0).all()
        assert item["mask"][0, 1:].eq(1).all()
    assert len(AnnotationDataset(entries[:2], num_frames=9, max_aspect=1.5)) == 1  # 16:9 filtered
    assert len(AnnotationDataset(entries[:2], num_frames=93, fps=25, min_frames=45)) == 1  # the 40-frame cut


def test_data_module_batches_have_one_shape():
    dm = OpenSoraDataModule(data=TINY_DATA, num_frames=5, fps=8, max_tokens=8, min_tokens=4, batch_size=2,
                            num_workers=0)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert sum(len(b["caption"]) for b in batches) == 2
    assert all(b["video"].ndim == 5 for b in batches)


def test_lightning_advances_the_sampler_epoch():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = BucketBatchSampler(keys_of(), 2, num_replicas=1, rank=0)
    loader = DataLoader(list(range(37)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 4)
    assert sampler.epoch == 4


def test_images_and_videos_together(tmp_path):
    import json

    from wfvae.io.video import write_image

    write_image(tmp_path / "still.png", torch.rand(3, 40, 100) * 2 - 1)
    clip = os.path.abspath(os.path.join(ROOT, "assets", "bigbuckbunny.mp4"))
    entries = [{"path": "still.png", "cap": "a still", "resolution": {"height": 40, "width": 100}},
               {"path": clip, "cap": "a clip", "resolution": {"height": 270, "width": 480}, "num_frames": 75,
                "fps": 25}]
    (tmp_path / "anno.json").write_text(json.dumps(entries))
    dm = OpenSoraDataModule(data=str(tmp_path / "anno.json"), num_frames=5, fps=8, max_tokens=12, min_tokens=6,
                            batch_size=2, num_workers=0, mask_mix="release", caption_dropout=0.0)
    dm.setup()
    assert sorted(dm.train_set.keys()) == [(1, 32, 96), (5, 48, 64)]
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and sorted(b["video"].shape[2] for b in batches) == [1, 5]
    image = next(b for b in batches if b["video"].shape[2] == 1)
    assert image["caption"] == ["a still"] and image["mask"].shape == (1, 1, 1, 32, 96)


def test_an_entry_can_exclude_mask_types():
    """``exclude_masks`` in an annotation entry: its mask draws skip those types (a slow clip from the middle of a
    path is never a text-to-video sample); a bad list is refused when the data set is built."""
    import random

    def entry(name, **extra):
        return {"path": f"/nowhere/{name}.mp4", "resolution": {"height": 32, "width": 32}, "num_frames": 17,
                "fps": 8, "cap": "x", **extra}

    mix = {"t2iv": 1, "continuation": 1}
    ds = AnnotationDataset([entry("a"), entry("b", exclude_masks=["t2iv"])], num_frames=17, fps=8, max_tokens=4,
                           min_tokens=4, stride=16, mask_mix=mix, min_clear_ratio=0.2, max_clear_ratio=0.5)
    rng = random.Random(0)
    nothing_kept = [[bool(ds.mask(i, rng).eq(1).all()) for _ in range(60)] for i in range(2)]
    assert 10 < sum(nothing_kept[0]) < 50       # t2iv about half the time
    assert not any(nothing_kept[1])             # never for the entry that excludes it
    for bad, message in ((["t2iv", "continuation"], "leaves no mask type"), (["t2v"], "unknown mask types"),
                         ("t2iv", "must be a list")):
        with pytest.raises(ValueError, match=message):
            AnnotationDataset([entry("c", exclude_masks=bad)], num_frames=17, fps=8, max_tokens=4, min_tokens=4,
                              stride=16, mask_mix=mix)
    # without a mask mix the field is ignored
    assert len(AnnotationDataset([entry("c", exclude_masks=["t2v"])], num_frames=17, fps=8, max_tokens=4,
                                 min_tokens=4, stride=16)) == 1
