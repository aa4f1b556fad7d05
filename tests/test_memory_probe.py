"""The live-tensor memory probe and the --max-memory planner checked against it."""
import dataclasses

import pytest
import torch

from wfvae import WFVAE, WFVAEConfig
from wfvae.inference.memory import plan, simulated_peak_bytes
from wfvae.inference.memory_probe import LiveTensorPeak, peak_memory


def test_probe_peak_is_exact_for_a_known_sequence():
    before = torch.zeros(1000)  # existed before: never counted
    with LiveTensorPeak() as probe:
        a = torch.empty(256)  # 1024 bytes
        view = a.view(16, 16)  # a view shares the storage: not counted again
        b = torch.empty(100, dtype=torch.float64)  # 800 -> live 1824
        assert probe.live_bytes == 1824
        del a, view  # 1024 freed only when its last tensor dies
        c = torch.empty(10)  # 40 -> live 840
        b.add_(1)  # in place: nothing new
        d = before + 1  # 4000 -> live 4840
        assert probe.live_bytes == 4840
        del b, c, d
        e = torch.empty(300)  # 1200 -> live 1200
    assert probe.peak_bytes == 4840
    assert probe.live_bytes == 1200
    assert probe.allocated_bytes == 1024 + 800 + 40 + 4000 + 1200
    del e


def test_probe_counts_temporaries_inside_an_expression():
    x = torch.ones(1000)
    with LiveTensorPeak() as probe:
        y = (x * 2) * 3  # the first product (4000 bytes) is alive while the second is made
    assert probe.peak_bytes == 8000 and probe.live_bytes == 4000
    assert torch.equal(y, torch.full((1000,), 6.0))


def test_probe_same_peak_on_meta_as_on_cpu():
    def fn(device):
        return lambda: torch.cat([torch.ones(3, 50, device=device), torch.zeros(2, 50, device=device)]).sum(0)

    assert peak_memory(fn("cpu")).live_tensors == peak_memory(fn("meta")).live_tensors == 4 * (150 + 100 + 250)  # the two inputs die before the sum exists


def _tiny_vae(**kw):
    cfg = WFVAEConfig(base_channels=16, latent_dim=4, encoder_energy_flow_hidden_size=16,
                      decoder_energy_flow_hidden_size=16, norm_type="layernorm", t_interpolation="trilinear", **kw)
    torch.manual_seed(0)
    return WFVAE(**dataclasses.asdict(cfg)).eval()


@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_planner_estimate_within_15_percent_of_probe_on_cpu(op, chunk):
    """The --max-memory planner's estimate (a weightless meta-device simulation of at most three chunks) against
    the probe's peak of the real streamed run on the CPU over the whole clip (nine latent frames)."""
    vae = _tiny_vae()
    t, h, w = 33, 32, 48
    n = 1 + (t - 1) // 4
    torch.manual_seed(1)
    with LiveTensorPeak() as probe:
        if op == "encode":
            # frames arrive chunk by chunk, as from the video reader of the wfvae command
            chunks = (torch.rand(1, 3, b - a, h, w).mul_(2).sub_(1) for a, b in vae.video_chunk_bounds(t, chunk))
            for _ in vae.encode_stream(chunks):
                pass
        else:
            z = torch.randn(1, 4, n, h // 8, w // 8)
            for _ in vae.decode_stream(z[:, :, i:i + chunk] for i in range(0, n, chunk)):
                pass
        measured = probe.peak_bytes  # the input counts, as in the simulation
    est = simulated_peak_bytes(vae.config, op, h, w, torch.float32, chunk, n)
    assert abs(est / measured - 1) <= 0.15, (est, measured)
    assert plan(16, 4, h, w, torch.float32, est * 1.01 / 1024 ** 3, mode=op, num_latent_frames=n,
                config=vae.config).latent_chunk >= chunk


def test_chunked_decode_peak_below_whole_and_equal_output():
    vae = _tiny_vae()
    z = torch.randn(1, 4, 5, 8, 8)
    with torch.no_grad():
        whole, chunked = {}, {}
        p_whole = peak_memory(lambda: whole.setdefault("v", vae.decode(z).sample)).live_tensors
        p_chunk = peak_memory(lambda: chunked.setdefault("v", vae.decode(z, latent_chunk=1).sample)).live_tensors
    assert p_chunk < p_whole
    torch.testing.assert_close(chunked["v"], whole["v"], rtol=0, atol=1e-5)


def test_loading_in_another_dtype_converts_through_a_small_staging_buffer(tmp_path, monkeypatch):
    """from_pretrained(torch_dtype=bf16) of float32 weights equals loading float32 and casting, when the staging
    buffer is smaller than most tensors (each is converted in several pieces)."""
    import wfvae.models.checkpoint as checkpoint

    _tiny_vae().save_pretrained(tmp_path)
    reference = WFVAE.from_pretrained(tmp_path).state_dict()
    monkeypatch.setattr(checkpoint, "_STAGING_BYTES", 64)
    loaded = WFVAE.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).state_dict()
    assert max(v.numel() * 4 for v in reference.values()) > 64 * 10
    for key, value in reference.items():
        assert loaded[key].dtype == torch.bfloat16 and torch.equal(loaded[key], value.to(torch.bfloat16)), key


@pytest.mark.parametrize("op", ["encode", "decode"])
def test_tiled_estimate_within_15_percent_of_the_tiled_cpu_peak(op):
    """A frame of many tiles is simulated on crops of 2x2 and 3x3 tiles and extrapolated in the tile count
    (a whole frame of small tiles takes minutes to simulate); against the probe's peak of the real tiled run."""
    from wfvae.inference.memory import tiled_peak_bytes

    vae = _tiny_vae()
    t, h, w, tile, overlap, chunk = 5, 104, 128, 32, 8, 1  # 4 x 5 tiles
    n = 1 + (t - 1) // 4
    torch.manual_seed(1)
    with LiveTensorPeak() as probe:
        if op == "encode":
            chunks = (torch.rand(1, 3, b - a, h, w).mul_(2).sub_(1) for a, b in vae.video_chunk_bounds(t, chunk))
            for _ in vae.encode_stream(chunks, tile=tile, tile_overlap=overlap):
                pass
        else:
            z = torch.randn(1, 4, n, h // 8, w // 8)
            for _ in vae.decode_stream((z[:, :, i:i + chunk] for i in range(n)), tile=tile, tile_overlap=overlap):
                pass
        measured = probe.peak_bytes
    est = tiled_peak_bytes(vae.config, op, h, w, torch.float32, chunk, n, tile, overlap)
    assert abs(est / measured - 1) <= 0.15, (est, measured)
    small = tiled_peak_bytes(vae.config, op, 56, 80, torch.float32, chunk, n, tile, overlap)  # 3 x 3 tiles: whole
    assert small == simulated_peak_bytes(vae.config, op, 56, 80, torch.float32, chunk, n, tile, overlap)
