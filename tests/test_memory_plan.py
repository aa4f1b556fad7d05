"""The --max-memory planner: fits the budget, prefers temporal chunks, tiles only when needed."""
import pytest
import torch

from wfvae.inference.memory import estimate_bytes, plan


def test_plan_fits_budget_and_is_monotonic():
    chunks = []
    for gb in (64, 16, 8, 4):
        p = plan(192, 4, 512, 512, torch.bfloat16, gb, weights_bytes=600 * 2 ** 20)
        assert p.estimate_gb <= gb
        chunks.append(p.latent_chunk)
        assert p.tile is None
    assert chunks == sorted(chunks, reverse=True) and chunks[0] > chunks[-1]


def test_plan_tiles_when_one_chunk_does_not_fit():
    p = plan(192, 4, 2160, 3840, torch.bfloat16, 6, weights_bytes=600 * 2 ** 20)
    assert p.latent_chunk == 1 and p.tile is not None and p.tile % 8 == 0 and p.tile_overlap < p.tile
    assert estimate_bytes(192, 4, p.tile, p.tile, torch.bfloat16, "decode", 600 * 2 ** 20) <= 6 * 1024 ** 3
    with pytest.raises(ValueError, match="too little memory"):
        plan(192, 4, 512, 512, torch.float32, 0.01)


def test_plan_caps_chunk_at_video_length():
    assert plan(16, 4, 64, 64, torch.float32, 100, num_latent_frames=3).latent_chunk == 3


def test_hopeless_budget_is_refused_without_simulating_a_tiled_frame(monkeypatch):
    """A budget below one 64x64 tile's need is refused after three simulations (whole frame, one tile), not after a
    simulated run of a whole frame of tiles (minutes at 270x480 with a real model)."""
    import wfvae.inference.memory as memory

    calls = []

    def fake(config, mode, h, w, dtype, k, n, tile=None, overlap=None):
        calls.append((h, w, tile))
        return 10 * 1024 ** 3 * (h * w) / (64 * 64)  # 10 GiB per 64x64 of what is computed at once

    monkeypatch.setattr(memory, "simulated_peak_bytes", fake)
    with pytest.raises(ValueError, match="too little memory .* needs 10.00 GB"):
        memory.plan(16, 4, 270, 480, torch.float32, 1.0, config={"base_channels": 16})
    assert calls == [(270, 480, None), (270, 480, None), (64, 64, None)]  # largest chunk, chunk 1, one tile


def test_whole_short_clip_is_chosen_when_it_needs_less_than_chunk_one(monkeypatch):
    """Decoding 3 latent frames of the shipped VAE at 272x480 whole peaks at 0.20 GiB, in chunks of 1 at 0.27
    (the stream's cache copies): a 0.25 GiB budget must give the whole clip, not tiles."""
    import wfvae.inference.memory as memory

    peaks = {1: 0.27, 2: 0.27, 3: 0.20}
    monkeypatch.setattr(memory, "simulated_peak_bytes",
                        lambda config, mode, h, w, dtype, k, n, tile=None, overlap=None: peaks[k] * 1024 ** 3)
    p = memory.plan(32, 4, 272, 480, torch.float32, 0.25, num_latent_frames=3, config={"base_channels": 32})
    assert (p.latent_chunk, p.tile) == (3, None) and p.estimate_gb == pytest.approx(0.20)
