"""Control signals: canny edges, sketch, depth normalisation and estimators, saving."""
import numpy as np
import pytest
import torch

from opensora.pipelines.control_signals import (
    CONTROL_KINDS, canny, depth, load_estimator, make_control, normalize_depth, save_control, sketch)
from wfvae.io.video import read_video



def square_clip(frames=5, size=32, lo=8, hi=24):
    """Black clip with a white square [lo, hi) x [lo, hi), shifted by one pixel per frame."""
    video = -torch.ones(3, frames, size, size)
    for t in range(frames):
        video[:, t, lo:hi, lo + t:hi + t] = 1.0
    return video


def test_canny_edges_on_square_border():
    video = square_clip()
    edges = canny(video)
    assert edges.shape == video.shape and edges.dtype == video.dtype
    assert set(edges.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(edges[0], edges[1]) and torch.equal(edges[0], edges[2])
    for t in range(video.shape[1]):
        on = edges[0, t] > 0
        lo, hi = 8, 24
        border = torch.zeros(32, 32, dtype=torch.bool)  # a 2-pixel ring around the square's outline
        border[lo - 1:hi + 1, lo - 1 + t:hi + 1 + t] = True
        border[lo + 1:hi - 1, lo + 1 + t:hi - 1 + t] = False
        assert on.any()
        assert not (on & ~border).any(), "edges only on the square's border"
        assert on[lo:hi, lo + t].any() or on[lo:hi, lo + t - 1].any(), "left side found"
        assert not on[lo + 3:hi - 3, lo + 3 + t:hi - 3 + t].any(), "no edge inside"


def test_canny_thresholds_and_checks():
    video = square_clip() * 0.02  # weak contrast (grey 125 vs 130): gradients below the default thresholds
    assert (canny(video) < 0).all()
    assert (canny(video, low_threshold=1, high_threshold=5) > 0).any()
    with pytest.raises(ValueError):
        canny(video, 200, 100)
    with pytest.raises(ValueError):
        canny(video, blur=4)
    with pytest.raises(ValueError, match="clip"):
        canny(video[None])


def test_sketch_shape_range_and_polarity():
    video = square_clip()
    strokes = sketch(video)
    assert strokes.shape == video.shape
    assert strokes.min() >= -1 and strokes.max() <= 1
    assert strokes[0, 0, 16, 16] == -1 and strokes[0, 0, 2, 2] == -1  # flat regions, bright or dark: blank
    assert strokes[0, 0, 16, 6:10].max() == 1  # the left border
    assert torch.equal(strokes[0], strokes[2])
    pencil = sketch(video, invert=False)
    assert torch.allclose(pencil, -strokes, atol=1e-6)
    assert sketch(video, blur_sigma=2.0)[0, 0].gt(-1).sum() > strokes[0, 0].gt(-1).sum()  # wider strokes
    soft = sketch(video * 0.1)  # weak edges give grey strokes, not binary ones
    assert -1 < soft.max() < 1
    with pytest.raises(ValueError):
        sketch(video, gain=0)


def test_normalize_depth():
    d = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]).expand(3, -1, -1)  # (T=3, 2, 2)
    out = normalize_depth(d)
    assert out.shape == (3, 3, 2, 2)
    assert out.min() == -1 and out.max() == 1
    assert torch.allclose(out[0, 0], torch.tensor([[-1.0, -0.5], [0.0, 1.0]]))
    assert torch.equal(normalize_depth(d, invert=True), -out)
    assert torch.equal(normalize_depth(d[None]), out)
    assert torch.equal(normalize_depth(d[None].expand(3, -1, -1, -1)), out)
    # one min/max over the clip: a far frame stays darker than a near one
    clip = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 3.0)])
    assert normalize_depth(clip)[0, 0].max() == -1 and normalize_depth(clip)[0, 1].min() == 1
    assert (normalize_depth(torch.full((2, 4, 4), 7.0)) == 0).all()
    d = d.clone()
    d[0, 0, 0] = float("nan")
    assert torch.isfinite(normalize_depth(d)).all()
    with pytest.raises(ValueError):
        normalize_depth(torch.zeros(4, 4))


def estimate_from_brightness(frames):
    """A stand-in estimator for the plug-in test: brighter = nearer."""
    return frames.mean(dim=0)


def test_depth_from_video_or_estimator():
    video = square_clip()
    with pytest.raises(ValueError, match="estimator"):
        depth(video)
    out = depth(video, estimator=estimate_from_brightness)
    assert out.shape == video.shape and torch.equal(out, video)
    spec = f"{__name__}:estimate_from_brightness"
    assert torch.equal(make_control("depth", video, estimator=load_estimator(spec)), out)
    # without an estimator the clip itself is the depth video
    assert torch.equal(make_control("depth", video * 0.5), video)
    with pytest.raises(ValueError, match="module:function"):
        load_estimator("nocolon")
    with pytest.raises(ValueError, match="cannot load"):
        load_estimator("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="unknown control"):
        make_control("pose", video)
    assert CONTROL_KINDS == ("canny", "sketch", "depth")


def test_save_control(tmp_path):
    control = canny(square_clip(frames=5, size=32))
    path = tmp_path / "control.mp4"
    save_control(path, control[None], fps=8)
    back = read_video(path)
    assert back.shape == control.shape
    assert (back - control).abs().mean() < 0.05  # lossless up to the YUV rounding
    save_control(tmp_path / "first.png", control)
    assert np.allclose(read_video(tmp_path / "first.png")[:, 0].numpy(), control[:, 0].numpy(), atol=1e-6)
