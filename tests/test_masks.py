"""Image-condition masks: which frames each mask keeps, compression to the latent grid, condition noise."""
import pytest
import torch

from opensora.pipelines.masks import (
    RELEASE_VIDEO_MIX, MaskType, compress_mask, condition_noise, frame_mask, pixel_mask, sample_mask_type)


def kept(m):
    return [i for i, v in enumerate(m.tolist()) if v == 0]


def test_each_mask_keeps_the_right_frames():
    g = torch.Generator().manual_seed(0)
    assert kept(frame_mask("t2iv", 9)) == []
    assert kept(frame_mask("i2v", 9)) == [0]
    assert kept(frame_mask("transition", 9)) == [0, 8]
    assert kept(frame_mask("clear", 9)) == list(range(9))
    for _ in range(20):
        k = kept(frame_mask("continuation", 9, min_clear_ratio=0.2, max_clear_ratio=0.5, generator=g))
        assert k == list(range(len(k))) and 1 <= len(k) <= 5  # a prefix, floor(1.8) .. ceil(4.5) frames
        r = kept(frame_mask("random_temporal", 9, min_clear_ratio=0.5, max_clear_ratio=0.5, generator=g))
        assert len(r) in (4, 5)
    assert kept(frame_mask("i2v", 9, keep=[0, 4, -1])) == [0, 4, 8]
    with pytest.raises(ValueError, match="outside"):
        frame_mask("i2v", 9, keep=[9])


def test_mix_sampling_follows_weights():
    g = torch.Generator().manual_seed(0)
    draws = [sample_mask_type(RELEASE_VIDEO_MIX, g) for _ in range(2000)]
    assert MaskType.clear not in draws
    share = draws.count(MaskType.i2v) / len(draws)
    assert abs(share - 8 / 20) < 0.04
    assert {sample_mask_type({"t2iv": 0, "clear": 0}, g) for _ in range(50)} == {MaskType.t2iv, MaskType.clear}


def test_compress_mask_layout():
    m = frame_mask("i2v", 9)  # frame 0 kept
    m[6] = 0
    px = pixel_mask(m, 16, 24).unsqueeze(0)  # (1, 1, 9, 16, 24)
    c = compress_mask(px)
    assert c.shape == (1, 4, 3, 2, 3)
    assert torch.all(c[0, :, 0] == 0)  # latent frame 0 = the first frame x4
    # latent frame 2 holds video frames 5, 6, 7, 8: frame 6 (channel 1) is kept
    assert c[0, :, 2, 0, 0].tolist() == [1, 0, 1, 1]
    assert compress_mask(torch.ones(2, 1, 8, 16, 16)).shape == (2, 4, 2, 2, 2)


def test_condition_noise_only_on_kept_frames():
    g = torch.Generator().manual_seed(0)
    video = torch.zeros(2, 3, 5, 4, 4)
    mask = pixel_mask(frame_mask("transition", 5), 4, 4).unsqueeze(0).expand(2, -1, -1, -1, -1)
    out = condition_noise(video, mask, strength=0.1, generator=g)
    assert torch.all(out[:, :, 1:4] == 0) and out[:, :, 0].abs().sum() > 0
    assert abs(out[:, :, [0, 4]].std().item() - 0.1) < 0.03
    sig = [condition_noise(torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8), generator=g).std().item()
           for _ in range(400)]
    zeros = sum(s == 0 for s in sig) / len(sig)
    assert 0.01 < zeros < 0.1  # skipped with probability 0.05
    logs = torch.tensor([s for s in sig if s > 0]).log()
    assert abs(logs.median().item() + 3) < 0.3
