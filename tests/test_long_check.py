"""The long-video checker on rendered chains: right windows and seamless boundaries pass; a jump, a colour change
or a reversed window fail."""
import numpy as np
import pytest

from opensora.synthetic.long_check import analyse_long, object_track, summarise, window_starts
from opensora.synthetic.shapes import ClipSpec, make_spec, render_clip


def traverse(motion="right", colour="red", rgb=(230, 40, 40), frames=129, seed=0):
    """A slow object crossing the whole frame in ``frames`` frames."""
    x0, x1 = (0.15, 0.85) if motion == "right" else (0.85, 0.15)
    spec = ClipSpec(colour, "circle", motion, "gray", seed, x0, 0.5, x1, 0.5, 0.12, 0.12, rgb, True)
    return render_clip(spec, frames, 96)


def test_window_starts():
    assert window_starts(129, 17, 1) == [0, 17, 33, 49, 65, 81, 97, 113]
    assert window_starts(65, 17, 2) == [0, 17, 29, 41, 53]


def test_rendered_traverse_is_right_and_seamless():
    r = analyse_long(traverse(), 17, 1, "red", "right")
    assert len(r["windows"]) == 8 and r["windows_ok"] == 1.0 and r["seamless"] and r["ok"]
    assert r["max_boundary_step"] == pytest.approx(r["mean_inside_step"], rel=0.2)


def test_a_jump_at_a_boundary_is_not_seamless():
    video = traverse()
    jumped = np.concatenate([video[:49], np.roll(video[49:], 6, axis=2)])   # 6 px at the start of window 3
    r = analyse_long(jumped, 17, 1, "red", "right")
    assert not r["seamless"] and r["max_boundary_step"] > 3 * r["max_inside_step"] and not r["ok"]


def test_a_colour_change_or_reversal_fails_the_window():
    video = traverse()
    blue = traverse(colour="blue", rgb=(40, 90, 235))
    changed = np.concatenate([video[:65], blue[65:]])
    r = analyse_long(changed, 17, 1, "red", "right")
    assert [w["colour"] for w in r["windows"]][4:] == ["blue"] * 4 and not r["seamless"]
    back = np.concatenate([video[:33], video[33:17:-1], video[33:][:129 - 49]])
    r = analyse_long(back, 17, 1, "red", "right")
    assert r["windows"][2]["motion"] == "left" and not r["ok"]
    assert summarise([r])["windows_ok"] < 1


def test_track_of_an_empty_video_is_nan():
    track = object_track(np.full((3, 32, 32, 3), 128, np.uint8))
    assert np.isnan(track["x"]).all() and (track["area"] == 0).all()
    rng = np.random.default_rng(0)
    clip = render_clip(make_spec("green", "square", "up", rng, slow=True), 17, 96)
    assert np.isfinite(object_track(clip)["x"]).all()


def test_travel_ratio_of_a_continuation():
    """1 for the rendered clip itself, 0 for a frozen one, negative for a reversed one, about 0.5 for half the
    speed; refused for a growing clip or mismatched lengths."""
    from opensora.synthetic.long_check import travel_ratio

    spec = make_spec("blue", "square", "left", np.random.default_rng(3), slow=True)
    clip = render_clip(spec, 17, 96)
    assert travel_ratio(clip, clip, "left") == pytest.approx(1.0)
    frozen = np.repeat(clip[:1], 17, axis=0)
    assert abs(travel_ratio(frozen, clip, "left")) < 0.05
    assert travel_ratio(clip[::-1].copy(), clip, "left", kept=1) < -0.9
    half = clip[np.arange(17) // 2]
    assert 0.4 < travel_ratio(half, clip, "left") < 0.6
    assert travel_ratio(clip, clip, "left", kept=5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="translations"):
        travel_ratio(clip, clip, "grow")
    with pytest.raises(ValueError, match="same length"):
        travel_ratio(clip[:9], clip, "left")
    with pytest.raises(ValueError, match="does not move"):
        travel_ratio(clip, clip, "right")
