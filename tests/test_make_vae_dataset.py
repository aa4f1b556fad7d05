"""The VAE training-set tool (tools/make_vae_dataset.py): extra photos and footage, and the held-out guard."""
import os
import sys

import numpy as np
import pytest
import torch

from wfvae.io.video import VideoReader, VideoWriter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import make_vae_dataset  # noqa: E402


def _photo(path, size, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _video(path, frames, hw):
    clip = torch.linspace(-1, 1, frames).view(1, frames, 1, 1).expand(3, frames, *hw).contiguous()
    with VideoWriter(str(path), fps=10) as w:
        w.write(clip)


def test_extra_photos_and_footage(tmp_path):
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    _photo(photos / "a.png", (80, 60), 0)
    _photo(photos / "b.jpg", (60, 90), 1)
    (photos / "notes.txt").write_text("not an image")
    other = tmp_path / "other"
    other.mkdir()
    _photo(other / "a.png", (64, 64), 2)           # same stem as photos/sub/a.png: gets a distinct name
    _video(tmp_path / "walk.mp4", 30, (48, 64))
    out = tmp_path / "out"
    rc = make_vae_dataset.main([str(out), "--only-extra", "--clips-per-image", "2", "--frames", "9", "--size", "32",
                                "--photos", str(tmp_path / "photos"), str(other / "a.png"), "--photo-short-side", "40",
                                "--videos", str(tmp_path / "walk.mp4"), "--video-heights", "32,100",
                                "--segment", "12"])
    assert rc == 0
    names = sorted(os.listdir(out))
    photo_clips = [n for n in names if n.startswith("extra_")]
    assert len(photo_clips) == 3 * 2 and len({n.rsplit("_", 1)[0] for n in photo_clips}) == 3
    for n in photo_clips:
        r = VideoReader(str(out / n))
        assert r.num_frames == 9 and r.size == (32, 32)
    # footage: short sides 32 and 48 (100 is capped at the source's 48, never upscaled); 30 frames in segments
    # of 12 -> 12, 12, 6 and the 6-frame tail is dropped; each segment also flipped
    footage = [n for n in names if n.startswith("footage_")]
    assert len(footage) == 2 * 2 * 2
    r = VideoReader(str(out / "footage_walk_32p_1.mp4"))
    assert r.size == (32, 42) and r.num_frames == 12
    a = VideoReader(str(out / "footage_walk_48p_0.mp4")).read()
    b = VideoReader(str(out / "footage_walk_48p_0_flip.mp4")).read()
    assert a.shape == (3, 12, 48, 64)
    assert (a.flip(-1) - b).abs().mean() < 0.02
    assert not [n for n in names if n.startswith(("photo_", "bbb_"))]


def test_held_out_footage_refused(tmp_path, capsys):
    _video(tmp_path / "bikes.mp4", 9, (32, 32))
    code = make_vae_dataset.main([str(tmp_path / "out"), "--only-extra", "--videos", str(tmp_path / "bikes.mp4")])
    assert code == 2 and "held-out evaluation footage" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--photos", "--videos"])
def test_missing_input_path(tmp_path, capsys, flag):
    code = make_vae_dataset.main([str(tmp_path / "out"), "--only-extra", flag, str(tmp_path / "nope")])
    assert code == 2 and "nope does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_inputs(tmp_path, capsys):
    """A corrupt video named on the command line is a one-line exit-2 error before anything is written; a corrupt
    photo among good ones is skipped with a warning."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    code = make_vae_dataset.main([str(tmp_path / "out"), "--only-extra", "--videos", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "broken.mp4" in err and "give readable video files" in err
    assert not (tmp_path / "out").exists()

    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "good.png", (40, 40), 0)
    (photos / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    rc = make_vae_dataset.main([str(tmp_path / "out"), "--only-extra", "--clips-per-image", "1", "--frames", "9",
                                "--size", "16", "--photos", str(photos)])
    assert rc == 0 and sorted(os.listdir(tmp_path / "out")) == ["extra_good_0.mp4"]
    assert "1 of 2 photos could not be read" in capsys.readouterr().err
