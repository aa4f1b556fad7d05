"""Video I/O: reading (decord and PyAV), resampling, resizing, streamed writing, errors. CPU, a few seconds."""
import math
import os
import sys

import numpy as np
import pytest
import torch

from wfvae.io.video import VideoReadError, VideoReader, VideoWriter, read_video, write_image
from wfvae.io.frames import to_tensor, to_uint8

ASSET = os.path.join(os.path.dirname(__file__), "..", "assets", "bigbuckbunny.mp4")
STEP = 5  # synthetic frame i is a flat grey of value i * STEP


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) / 2).pow(2).mean())  # [-1, 1] -> [0, 1] scale
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def grey_clip(n: int, h: int, w: int) -> torch.Tensor:
    """(3, n, h, w) in [-1, 1]; frame i is flat grey i * STEP (out of 255)."""
    values = torch.arange(n, dtype=torch.float32) * STEP / 127.5 - 1
    return values.view(1, n, 1, 1).expand(3, n, h, w).contiguous()


def frame_ids(video: torch.Tensor) -> list:
    """Recovers the source index of each frame of a decoded grey_clip."""
    return [round((float(v) + 1) * 127.5 / STEP) for v in video.mean(dim=(0, 2, 3))]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """48 frames 64x80 at 24 fps, near-lossless, a keyframe every 8 frames (so seeking is exercised)."""
    path = str(tmp_path_factory.mktemp("vid") / "indexed.mp4")
    with VideoWriter(path, fps=24, lossless=True, options={"g": 8}) as writer:
        clip = grey_clip(48, 64, 80)
        writer.write(clip[:, :20])
        writer.write(clip[:, 20:])
    return path


@pytest.fixture(scope="module")
def natural():
    """20 frames of the asset at 72x128, (3, 20, 72, 128)."""
    return read_video(ASSET, start=10, num_frames=20, size=(72, 128))


# -------------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_asset_metadata(backend):
    assert os.path.getsize(ASSET) < 2 * 1024 * 1024
    r = VideoReader(ASSET, backend=backend)
    assert r.backend == backend
    assert (r.source_num_frames, r.source_fps, r.source_size) == (75, 25.0, (270, 480))
    assert (r.num_frames, r.fps, r.size) == (75, 25.0, (270, 480))


def test_chunked_equals_whole():
    r = VideoReader(ASSET, start=3, num_frames=20, size=(64, 112))
    chunks = list(r.iter_chunks(7))
    assert [c.shape[1] for c in chunks] == [7, 7, 6]
    assert all(c.shape == (3, c.shape[1], 64, 112) and c.dtype == torch.float32 for c in chunks)
    whole = read_video(ASSET, start=3, num_frames=20, size=(64, 112))
    assert torch.equal(torch.cat(chunks, dim=1), whole)
    assert torch.equal(torch.cat(list(r.iter_chunks(64)), dim=1), whole)  # a second pass starts over
    assert whole.min() >= -1 and whole.max() <= 1


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_start_and_num_frames(indexed, backend):
    assert frame_ids(read_video(indexed, backend=backend)) == list(range(48))
    assert frame_ids(read_video(indexed, start=10, num_frames=5, backend=backend)) == [10, 11, 12, 13, 14]
    assert frame_ids(read_video(indexed, start=45, num_frames=10, backend=backend)) == [45, 46, 47]
    r = VideoReader(indexed, start=48, backend=backend)
    assert r.num_frames == 0 and list(r.iter_chunks(4)) == []
    assert read_video(indexed, start=100, backend=backend).shape == (3, 0, 64, 80)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("start, fps, expected", [
    (0, 10, [math.floor(k * 2.4 + 0.5) for k in range(20)]),        # ceil(48 * 10 / 24) = 20, drops frames
    (0, 48, [min(math.floor(k / 2 + 0.5), 47) for k in range(96)]),  # every frame twice (nearest timestamp)
    (6, 12, list(range(6, 48, 2))),                                  # from frame 6, every other frame
    (0, 24, list(range(48))),
])
def test_fps_resampling(indexed, backend, start, fps, expected):
    r = VideoReader(indexed, start=start, fps=fps, backend=backend)
    assert r.fps == fps and r.source_fps == 24 and r.num_frames == len(expected)
    assert r.frame_indices == expected
    assert frame_ids(torch.cat(list(r.iter_chunks(7)), dim=1)) == expected


def test_fps_with_num_frames(indexed):
    assert frame_ids(read_video(indexed, start=1, num_frames=4, fps=8)) == [1, 4, 7, 10]


def test_resize_and_crop(tmp_path):
    r = VideoReader(ASSET, num_frames=3, size=(64, 64))
    assert r.size == (64, 64) and read_video(ASSET, num_frames=3, size=(64, 64)).shape == (3, 3, 64, 64)
    assert read_video(ASSET, num_frames=2, size=(51, 33), resize_mode="resize").shape == (3, 2, 51, 33)
    assert read_video(ASSET, num_frames=1, size=(800, 900)).shape == (3, 1, 800, 900)  # upscaling
    # crop keeps the centre: red | green | blue thirds of a 40x120 image -> a centred 40x40 crop is all green
    image = torch.full((3, 40, 120), -1.0)
    image[0, :, :40] = image[1, :, 40:80] = image[2, :, 80:] = 1
    write_image(tmp_path / "bands.png", image)
    crop = read_video(tmp_path / "bands.png", size=(20, 20))
    assert crop.shape == (3, 1, 20, 20)
    inner = crop[:, 0, :, 2:-2]  # the outermost columns blend with the neighbouring bands
    assert torch.allclose(inner, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand_as(inner), atol=0.02)
    squeezed = read_video(tmp_path / "bands.png", size=(20, 30), resize_mode="resize")
    assert squeezed[0, 0, :, :8].min() > 0.9 and squeezed[2, 0, :, -8:].min() > 0.9  # all three bands kept


def test_image_and_png_roundtrip(tmp_path):
    frame = torch.rand(3, 1, 17, 23) * 2 - 1
    write_image(tmp_path / "f.png", frame)
    r = VideoReader(tmp_path / "f.png")
    assert (r.backend, r.num_frames, r.size, r.fps) == ("image", 1, (17, 23), None)
    back = r.read()
    assert np.array_equal(to_uint8(back), to_uint8(frame))
    assert sorted(os.listdir(tmp_path)) == ["f.png"]
    with pytest.raises(ValueError):
        write_image(tmp_path / "g.png", torch.zeros(3, 2, 4, 4))


def test_uint8_helpers():
    x = torch.rand(3, 2, 5, 6, dtype=torch.float64) * 2 - 1
    assert to_uint8(x).shape == (2, 5, 6, 3) and to_uint8(x).dtype == np.uint8
    assert torch.allclose(to_tensor(to_uint8(x)), x.float(), atol=1 / 127.5)


# -------------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("lossless, min_psnr", [(True, 45), (False, 30)])  # default crf 18 on tiny frames
def test_write_read_roundtrip(tmp_path, natural, lossless, min_psnr):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=25, lossless=lossless) as writer:
        for i in range(0, 20, 6):
            writer.write(natural[:, i:i + 6].to(torch.bfloat16 if i == 6 else torch.float32))
    assert writer.frames_written == 20
    for backend in ("decord", "pyav"):
        r = VideoReader(path, backend=backend)
        assert (r.num_frames, r.size, r.fps) == (20, (72, 128), 25.0)
        assert psnr(r.read(), natural) > min_psnr
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions despite the temporary file


def test_fractional_fps(tmp_path):
    with VideoWriter(tmp_path / "ntsc.mp4", fps=30000 / 1001) as writer:
        writer.write(grey_clip(5, 16, 16))
    assert VideoReader(tmp_path / "ntsc.mp4").source_fps == pytest.approx(29.97, abs=1e-3)


@pytest.mark.parametrize("h, w, lossless", [(33, 47, True), (34, 47, False), (33, 48, False), (1, 1, False),
                                             (64, 48, False)])
def test_odd_sizes_roundtrip(tmp_path, natural, h, w, lossless):
    clip = natural[:, :4, :h, :w]
    with VideoWriter(tmp_path / "odd.mp4", fps=25, lossless=lossless) as writer:  # yuv420p -> yuv444p if odd
        writer.write(clip)
    for backend in ("auto", "pyav"):
        r = VideoReader(tmp_path / "odd.mp4", backend=backend)
        assert (r.num_frames, r.size) == (4, (h, w))
        back = r.read()
        assert back.shape == (3, 4, h, w)
        assert psnr(back, clip) > (45 if lossless else 30)


def test_decord_row_padding_falls_back(tmp_path):
    """decord mis-copies frames of some widths (1, 2, 6, 16, 48, ...): such files are read with PyAV."""
    clip = grey_clip(3, 16, 48)
    with VideoWriter(tmp_path / "w48.mp4", fps=25, lossless=True) as writer:
        writer.write(clip)
    with pytest.raises(VideoReadError, match="w48.mp4"):
        VideoReader(tmp_path / "w48.mp4", backend="decord")
    r = VideoReader(tmp_path / "w48.mp4")
    assert r.backend == "pyav" and frame_ids(r.read()) == [0, 1, 2]
    with VideoWriter(tmp_path / "w47.mp4", fps=25, lossless=True) as writer:
        writer.write(clip[..., :47])
    r = VideoReader(tmp_path / "w47.mp4")
    assert r.backend == "decord" and frame_ids(r.read()) == [0, 1, 2]


def test_exception_and_abort_leave_nothing(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, fps=25) as writer:
            writer.write(grey_clip(3, 16, 16))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    writer = VideoWriter(path, fps=25)
    writer.write(grey_clip(3, 16, 16))
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(path, fps=25):
            pass
    assert os.listdir(tmp_path) == []
    # a failed rewrite leaves the existing file untouched
    with VideoWriter(path, fps=25) as writer:
        writer.write(grey_clip(3, 16, 16))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="16x16"):
        with VideoWriter(path, fps=25) as writer:
            writer.write(grey_clip(3, 16, 16))
            writer.write(grey_clip(3, 18, 16))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["x.mp4"]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "a.mp4", fps=0)
    with VideoWriter(tmp_path / "a.mp4", fps=25) as writer:
        with pytest.raises(ValueError, match="float"):
            writer.write(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
        with pytest.raises(ValueError, match=r"\(3, t, H, W\)"):
            writer.write(torch.zeros(1, 3, 1, 8, 8))
        writer.write(torch.zeros(3, 1, 8, 8))
    assert os.listdir(tmp_path) == ["a.mp4"]


# --------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_missing_and_corrupt_files(tmp_path, backend):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match="missing.mp4.*not found"):
        VideoReader(missing, backend=backend)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(ASSET, "rb").read()[:200_000])
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not a png")
    for path in (corrupt, truncated, bad_image):
        with pytest.raises(VideoReadError) as info:
            VideoReader(path, backend=backend)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, ValueError)


def test_bad_arguments():
    for kwargs in ({"start": -1}, {"fps": 0}, {"size": (0, 4)}, {"resize_mode": "pad"}, {"backend": "cv2"}):
        with pytest.raises(ValueError):
            VideoReader(ASSET, **kwargs)


def test_decord_missing_falls_back_to_pyav(monkeypatch, indexed):
    reference = read_video(ASSET, start=30, num_frames=9, size=(64, 112), backend="decord")
    seeked = read_video(indexed, start=21, num_frames=6, backend="decord")
    monkeypatch.setitem(sys.modules, "decord", None)  # "import decord" now raises ImportError
    r = VideoReader(ASSET, start=30, num_frames=9, size=(64, 112))
    assert r.backend == "pyav"
    assert (r.num_frames, r.fps, r.source_num_frames) == (9, 25.0, 75)
    assert (r.read() - reference).abs().max() <= 2 / 127.5
    assert (read_video(indexed, start=21, num_frames=6) - seeked).abs().max() <= 2 / 127.5
    with pytest.raises(VideoReadError, match="decord"):
        VideoReader(ASSET, backend="decord")
