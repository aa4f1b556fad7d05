"""Haar transforms against PyWavelets, packing order, inverses, causality and streaming."""
import numpy as np
import pytest
import torch

from wfvae.models.causal import StreamCache
from wfvae.models.wavelets import (HAAR3D_EXACT, HAAR3D_SCALE, HaarWavelet2D, HaarWavelet3D, InverseHaarWavelet2D,
                            InverseHaarWavelet3D, haar3d_filters)

pywt = pytest.importorskip("pywt")


def _pywt3d(x: np.ndarray) -> dict:
    """Single-level 3D Haar over (t, h, w) of (T, H, W) with even sizes."""
    return pywt.dwtn(x, "haar", mode="periodization", axes=(0, 1, 2))


def test_haar3d_matches_pywt_with_subband_major_packing():
    torch.manual_seed(0)
    c, t, h, w = 3, 5, 8, 6
    x = torch.randn(2, c, t, h, w, dtype=torch.float64)
    y = HaarWavelet3D(scale=HAAR3D_EXACT).double()(x)
    assert y.shape == (2, 8 * c, 3, h // 2, w // 2)
    padded = torch.cat([x[:, :, :1], x], dim=2).numpy()  # causal: first frame paired with itself
    for b in range(2):
        for ch in range(c):
            ref = _pywt3d(padded[b, ch])
            for k in range(8):
                key = "".join("d" if bit else "a" for bit in ((k >> 2) & 1, (k >> 1) & 1, k & 1))
                np.testing.assert_allclose(y[b, k * c + ch].numpy(), ref[key], atol=1e-12)


def test_haar2d_matches_pywt():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 2, 6, 4, dtype=torch.float64)
    y = HaarWavelet2D().double()(x)
    for ch in range(3):
        for f in range(2):
            ref = pywt.dwt2(x[0, ch, f].numpy(), "haar", mode="periodization")
            ca, (ch_h, ch_v, ch_d) = ref  # pywt: horizontal detail = high-pass along h
            # our order: k = h + 2w -> [aa, high-h, high-w, high-both]
            for k, r in enumerate([ca, ch_h, ch_v, ch_d]):
                np.testing.assert_allclose(y[0, k * 3 + ch, f].numpy(), r, atol=1e-12)


def test_published_constant_and_filter_signs():
    f = haar3d_filters()
    assert torch.all(f.abs() == HAAR3D_SCALE)
    assert torch.all(f[0] > 0)
    assert f[4, 0, 1].sum() < 0 and f[4, 0, 0].sum() > 0  # k=4: temporal high-pass


@pytest.mark.parametrize("t", [1, 3, 9])
def test_round_trips(t):
    torch.manual_seed(1)
    x = torch.randn(2, 3, t, 8, 8, dtype=torch.float64)
    y = InverseHaarWavelet3D(scale=HAAR3D_EXACT).double()(HaarWavelet3D(scale=HAAR3D_EXACT).double()(x))
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    z = InverseHaarWavelet2D().double()(HaarWavelet2D().double()(x))
    torch.testing.assert_close(z, x, atol=1e-12, rtol=0)
    # the published constant 0.3536 is within 3e-4 of perfect reconstruction
    p = InverseHaarWavelet3D().double()(HaarWavelet3D().double()(x))
    assert (p - x).abs().max() < 3e-4 * x.abs().max()


def test_causal_and_streamed():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 13, 4, 4)
    fwd, inv = HaarWavelet3D(), InverseHaarWavelet3D()
    whole = fwd(x)
    # causality: changing future frames does not change earlier coefficients
    x2 = x.clone()
    x2[:, :, 9:] += 1
    torch.testing.assert_close(fwd(x2)[:, :, :5], whole[:, :, :5])
    # streaming in uneven chunks gives the same coefficients and the same reconstruction
    cache, parts = StreamCache(), []
    for a, b in [(0, 1), (1, 5), (5, 7), (7, 13)]:
        parts.append(fwd(x[:, :, a:b], cache))
    torch.testing.assert_close(torch.cat(parts, dim=2), whole)
    cache, rec = StreamCache(), []
    for a, b in [(0, 2), (2, 3), (3, 7)]:
        rec.append(inv(whole[:, :, a:b], cache))
    torch.testing.assert_close(torch.cat(rec, dim=2), inv(whole))
