"""Chunked video reading and streamed video writing.

Tensor convention: a clip is a float tensor ``(3, T, H, W)`` (RGB, frames on dim 1) with values in ``[-1, 1]``.
``to_tensor`` / ``to_uint8`` convert from / to the ``uint8 (T, H, W, 3)`` arrays that decoders produce.

Reading (:class:`VideoReader`) uses decord and falls back to PyAV when decord is missing or cannot open the file;
both give the same frames (up to decoder rounding). Still images (jpg/png/webp/bmp) read as one-frame clips.
Frames are decoded ``chunk_frames`` at a time, so a video is never held whole in memory.

Writing (:class:`VideoWriter`, :func:`write_image`) goes to a hidden temporary file in the destination folder that
is renamed onto the final path only when writing succeeds; on error or :meth:`VideoWriter.abort` nothing is left.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from wfvae.cli_support import commit, discard, temp_path
from wfvae.io.frames import resize_frames, to_uint8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_CRF_CODECS = ("libx264", "libx264rgb", "libx265", "libvpx-vp9")
_LOSSLESS = {"libx264": {"qp": "0"}, "libx264rgb": {"qp": "0"}, "libx265": {"x265-params": "lossless=1"},
             "libvpx-vp9": {"lossless": "1"}}


class VideoReadError(ValueError):
    """A video or image is missing, unreadable or corrupt; the one-line message names the file."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _quiet_stderr():
    """Sends file descriptor 2 to /dev/null for the block: decord's bundled FFmpeg logs straight to it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _as_fraction(value) -> Fraction:
    return Fraction(value).limit_denominator(10000)


class VideoReader:
    """Reads a video (or a still image) chunk by chunk as float ``(3, t, H, W)`` tensors in ``[-1, 1]``.

    Args:
        path: video file (anything decord/FFmpeg decodes) or image (jpg/jpeg/png/webp/bmp: a one-frame clip).
        start: first source frame to read (0-based). A start past the end gives ``num_frames == 0``.
        num_frames: at most this many output frames (default: to the end).
        fps: output frame rate. Output frame ``k`` (time ``k / fps`` after the start frame) is the source frame
            with the nearest timestamp, ``start + floor(k * source_fps / fps + 1/2)``: frames are dropped or
            repeated, never blended. ``None`` keeps the source rate. Ignored for images.
        size: output ``(H, W)``; ``None`` keeps the source size.
        resize_mode: ``"crop"`` scales so the frame covers ``(H, W)`` (short side first) and centre-crops to exactly
            ``(H, W)``; ``"resize"`` scales to ``(H, W)`` ignoring the aspect ratio. Antialiased bilinear on the
            8-bit frames (as PIL / torchvision do).
        backend: ``"auto"`` (decord, else PyAV), ``"decord"`` or ``"pyav"``.

    Attributes: ``source_fps`` (float, ``None`` for images), ``source_num_frames``, ``source_size`` ``(H, W)`` of
    the file; ``fps``, ``num_frames``, ``size`` ``(H, W)`` of the output; ``backend`` (``"decord"``, ``"pyav"`` or
    ``"image"``); ``path``.

    Raises:
        VideoReadError: the file is missing or cannot be decoded (also when a later chunk fails to decode).
        ValueError: invalid arguments.
    """

    def __init__(self, path: Union[str, os.PathLike], start: int = 0, num_frames: Optional[int] = None,
                 fps: Optional[float] = None, size: Optional[Tuple[int, int]] = None, resize_mode: str = "crop",
                 backend: str = "auto"):
        self.path = os.fspath(path)
        size = None if size is None else (int(size[0]), int(size[1]))
        if (start < 0 or (num_frames is not None and num_frames < 0) or (fps is not None and not fps > 0)
                or (size is not None and min(size) < 1) or resize_mode not in ("crop", "resize")
                or backend not in ("auto", "decord", "pyav")):
            raise ValueError(f"invalid VideoReader arguments: start={start} num_frames={num_frames} fps={fps} "
                             f"size={size} resize_mode={resize_mode!r} backend={backend!r}")
        if not os.path.isfile(self.path):
            raise VideoReadError(f"cannot read {self.path}: file not found")
        self.start, self._size, self.resize_mode = start, size, resize_mode
        self._vr = self._image = None
        if self.path.lower().endswith(IMAGE_EXTENSIONS):
            self._open_image()
        else:
            self._open_video(backend)
        self._target_fps = None if fps is None or self._src_fps is None else _as_fraction(fps)
        left = max(0, self._src_count - start)
        count = left if self._target_fps is None else math.ceil(left * self._target_fps / self._src_fps)
        self.num_frames = count if num_frames is None else min(count, num_frames)
        self.source_num_frames, self.source_size = self._src_count, tuple(int(v) for v in self._src_hw)
        self.source_fps = None if self._src_fps is None else float(self._src_fps)
        self.fps = self.source_fps if self._target_fps is None else float(self._target_fps)
        self.size = self._size if self._size is not None else self.source_size

    # ----------------------------------------------------------------------------------------- opening
    def _open_image(self) -> None:
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                self._image = np.array(im.convert("RGB"))[None]
        except Exception as exc:
            raise VideoReadError(f"cannot read image {self.path}: {_one_line(exc)}") from None
        self.backend, self._src_fps, self._src_count = "image", None, 1
        self._src_hw = self._image.shape[1:3]

    def _open_video(self, backend: str) -> None:
        try:  # header-only check: broken files fail here quietly (decord would also log to stderr)
            import av

            with av.open(self.path) as container:
                if not container.streams.video:
                    raise RuntimeError("no video stream")
                fmt = container.format.name
                codec = container.streams.video[0].codec_context.name
        except ImportError:
            fmt = codec = ""
        except Exception as exc:
            raise VideoReadError(f"cannot read video {self.path}: {_one_line(exc)}") from None
        if fmt.endswith("_pipe") or fmt.startswith("image2"):  # e.g. a PNG renamed .mp4
            raise VideoReadError(f"{self.path} is a {codec.upper() or 'still'} image, not a video: give it an image "
                                 f"extension ({', '.join(IMAGE_EXTENSIONS)}) to read it as a one-frame clip")
        errors = []
        if backend in ("auto", "decord"):
            try:
                import decord

                with _quiet_stderr():
                    vr = decord.VideoReader(self.path, ctx=decord.cpu(0))
                    count, fps = len(vr), vr.get_avg_fps()
                    if count < 1:
                        raise RuntimeError("no frames")
                    # decord mis-copies frames whose rows FFmpeg pads (some widths, e.g. 16 or 48): it fails here
                    self._src_hw = tuple(vr.get_batch([0]).shape[1:3])
                    vr.seek(0)
                self._vr, self.backend, self._src_count = vr, "decord", count
                self._src_fps = _as_fraction(fps) if fps > 0 else None
                return
            except Exception as exc:  # ImportError or DECORDError: try PyAV
                errors.append(f"decord: {_one_line(exc)}")
        if backend in ("auto", "pyav"):
            try:
                self._open_pyav()
                return
            except Exception as exc:
                errors.append(f"pyav: {_one_line(exc)}")
        raise VideoReadError(f"cannot read video {self.path}: {'; '.join(errors)}")

    def _open_pyav(self) -> None:
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            count = stream.frames
            if count <= 0:  # container does not store it: count the packets
                count = sum(1 for p in container.demux(stream) if p.size)
            if count < 1:
                raise RuntimeError("no frames")
            self.backend, self._src_count = "pyav", count
            self._src_fps = _as_fraction(rate) if rate else None
            self._src_hw = (stream.codec_context.height, stream.codec_context.width)
            if min(self._src_hw) < 1:
                raise RuntimeError("invalid frame size")

    # ---------------------------------------------------------------------------------------- indexing
    def source_index(self, k: int) -> int:
        """Source frame shown as output frame ``k`` (nearest timestamp when resampling)."""
        if self._target_fps is None:
            return self.start + k
        return min(self.start + math.floor(k * self._src_fps / self._target_fps + Fraction(1, 2)),
                   self._src_count - 1)

    @property
    def frame_indices(self) -> List[int]:
        """Source frame index of every output frame (a list of ``num_frames`` ints)."""
        return [self.source_index(k) for k in range(self.num_frames)]

    # ------------------------------------------------------------------------------------------- reading
    def iter_chunks(self, chunk_frames: int = 16) -> Iterator[torch.Tensor]:
        """Yields float32 CPU tensors ``(3, t, H, W)`` in ``[-1, 1]``, ``t <= chunk_frames``, ``num_frames`` in all.

        Only one chunk of decoded frames is held at a time. Each call starts again from the first output frame.
        """
        for frames in self.iter_uint8_chunks(chunk_frames):
            x = resize_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), self._size, self.resize_mode)
            yield x.permute(1, 0, 2, 3).contiguous().float().mul_(1 / 127.5).sub_(1.0)

    def iter_uint8_chunks(self, chunk_frames: int = 16) -> Iterator[np.ndarray]:
        """Like :meth:`iter_chunks` but yields the decoded frames as uint8 ``(t, h, w, 3)`` at the SOURCE size."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if self.backend == "image":
            if self.num_frames:
                yield self._image
            return
        if self._vr is None and self.backend == "decord":
            raise VideoReadError(f"cannot read {self.path}: the reader is closed")
        try:
            if self.backend == "decord":
                yield from self._decord_chunks(chunk_frames)
            else:
                yield from self._pyav_chunks(chunk_frames)
        except VideoReadError:
            raise
        except Exception as exc:
            raise VideoReadError(f"cannot decode {self.path}: {_one_line(exc)}") from None

    def _decord_chunks(self, chunk_frames: int) -> Iterator[np.ndarray]:
        for a in range(0, self.num_frames, chunk_frames):
            idx = [self.source_index(k) for k in range(a, min(a + chunk_frames, self.num_frames))]
            unique = sorted(set(idx))
            with _quiet_stderr():
                batch = self._vr.get_batch(unique).asnumpy()
            pos = {i: j for j, i in enumerate(unique)}
            yield batch if len(unique) == len(idx) else batch[[pos[i] for i in idx]]

    def _pyav_chunks(self, chunk_frames: int) -> Iterator[np.ndarray]:
        if self.num_frames == 0:
            return
        wanted = (self.source_index(k) for k in range(self.num_frames))
        need = next(wanted)
        buf = []
        for index, frame in self._pyav_frames(need):
            array = None  # converted only when used: resampling may skip frames
            while need is not None and need == index:
                array = frame.to_ndarray(format="rgb24") if array is None else array
                buf.append(array)
                if len(buf) == chunk_frames:
                    yield np.stack(buf)
                    buf = []
                need = next(wanted, None)
            if need is None:
                break
        if need is not None:
            raise VideoReadError(f"cannot decode {self.path}: frame {need} is missing (file truncated?)")
        if buf:
            yield np.stack(buf)

    def _pyav_frames(self, first: int) -> Iterator[tuple]:
        """(source index, ``av.VideoFrame``) for the frames from ``first`` on, seeking near it when possible."""
        import av

        for use_seek in ((True, False) if first > 0 and self._src_fps else (False,)):
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb, t0 = stream.time_base, stream.start_time or 0
                index = 0
                if use_seek:
                    container.seek(t0 + math.floor((first - Fraction(1, 2)) / self._src_fps / tb),
                                   stream=stream, backward=True)
                    index = None
                for frame in container.decode(stream):
                    if index is None:  # after a seek, the frame index comes from the timestamp
                        if frame.pts is None:
                            break
                        index = round((frame.pts - t0) * tb * self._src_fps)
                        if index > first:
                            break  # seek overshot: decode from the beginning instead
                    if index >= first:
                        yield index, frame
                    index += 1
                else:
                    return

    def read(self) -> torch.Tensor:
        """All output frames as one float32 tensor ``(3, num_frames, H, W)``: for short clips only."""
        return torch.cat([torch.empty(3, 0, *self.size)] + list(self.iter_chunks(64)), dim=1)

    def close(self) -> None:
        """Releases the decoder (decord keeps the file open between chunks)."""
        self._vr = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoReader({self.path!r}, {self.backend}: {self.num_frames} frames {self.size} @ {self.fps} fps "
                f"from {self.source_num_frames} frames {self.source_size} @ {self.source_fps} fps)")


def read_video(path: Union[str, os.PathLike], start: int = 0, num_frames: Optional[int] = None,
               fps: Optional[float] = None, size: Optional[Tuple[int, int]] = None, resize_mode: str = "crop",
               backend: str = "auto") -> torch.Tensor:
    """Whole clip as float32 ``(3, T, H, W)`` in ``[-1, 1]`` (arguments as :class:`VideoReader`); short clips only."""
    with VideoReader(path, start, num_frames, fps, size, resize_mode, backend) as reader:
        return reader.read()


class VideoWriter:
    """Streams float ``(3, t, H, W)`` clips in ``[-1, 1]`` to a video file; a context manager.

    Args:
        path: output file; the container follows the extension (.mp4, .mkv, .mov, ...).
        fps: frame rate (float or Fraction; 29.97 and 30000/1001 are both understood).
        size: ``(H, W)`` of every frame; ``None`` takes it from the first :meth:`write`.
        crf: constant rate factor for libx264/libx265/libvpx-vp9 (default 18: visually lossless).
        codec: FFmpeg encoder name.
        pix_fmt: encoder pixel format. ``yuv420p`` (default, plays everywhere) needs even width and height: when
            either is odd it is switched to ``yuv444p`` (H.264 High 4:4:4 profile), which stores any size, so the
            file decodes at exactly the written size.
        lossless: ``yuv444p`` and the encoder's lossless mode (x264 ``qp=0``; x265, vp9): only the RGB <-> YUV
            rounding is lost (~50 dB PSNR). Overrides ``crf`` and ``pix_fmt``.
        preset: encoder speed/size trade-off for x264/x265.
        options: extra encoder options (strings), applied last.

    Frames are encoded as they arrive. The file is written to a hidden temporary file in the same folder and
    renamed onto ``path`` by :meth:`close`; :meth:`abort`, an exception inside the ``with`` block, or closing
    without any frame remove it and leave no output. Colours: BT.601 limited-range conversion (FFmpeg's default,
    as decord and PyAV assume when decoding).
    """

    def __init__(self, path: Union[str, os.PathLike], fps: Union[float, Fraction],
                 size: Optional[Tuple[int, int]] = None, crf: int = 18, codec: str = "libx264",
                 pix_fmt: str = "yuv420p", lossless: bool = False, preset: str = "medium",
                 options: Optional[dict] = None):
        if fps is None or not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = os.fspath(path)
        self.fps = _as_fraction(fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.codec, self.pix_fmt, self.crf, self.lossless = codec, pix_fmt, crf, lossless
        self.preset, self.options = preset, dict(options or {})
        self.frames_written = 0
        self._container = self._stream = None
        self._tmp, self._done = temp_path(self.path), False

    def _open(self, height: int, width: int) -> None:
        import av

        pix_fmt = "yuv444p" if self.lossless else self.pix_fmt
        if (height % 2 or width % 2) and pix_fmt in ("yuv420p", "yuv422p", "nv12", "yuvj420p", "yuvj422p"):
            pix_fmt = "yuvj444p" if pix_fmt.startswith("yuvj") else "yuv444p"
        options = {"preset": self.preset} if self.codec in ("libx264", "libx264rgb", "libx265") else {}
        if self.lossless:
            options.update(_LOSSLESS.get(self.codec, {}))
        elif self.codec in _CRF_CODECS:
            options["crf"] = str(self.crf)
        options.update({k: str(v) for k, v in self.options.items()})
        with open(self._tmp, "wb"):  # the muxer creates the file only with its first packet (x264 buffers ~50 frames)
            pass
        self._container = av.open(self._tmp, mode="w")
        stream = self._container.add_stream(self.codec, rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        self._stream = stream

    def write(self, frames: torch.Tensor) -> None:
        """Encodes float ``(3, t, H, W)`` frames in ``[-1, 1]`` (any float dtype, any device; clamped)."""
        self.write_uint8(to_uint8(frames))

    def write_uint8(self, array: np.ndarray) -> None:
        """Encodes uint8 ``(t, H, W, 3)`` frames (what :func:`wfvae.io.frames.to_uint8` gives)."""
        if self._done:
            raise RuntimeError(f"VideoWriter for {self.path} is already closed")
        import av

        hw = tuple(array.shape[1:3])
        if self.size is None:
            self.size = hw
        if hw != self.size:
            raise ValueError(f"frames are {hw[0]}x{hw[1]} but {self.path} is being written at "
                             f"{self.size[0]}x{self.size[1]}")
        if self._stream is None:
            self._open(*self.size)
        for image in array:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames_written
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoder and moves the file onto ``path``. Without any written frame: aborts, ValueError."""
        if self._done:
            return
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; no file was created")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            commit(self._tmp, self.path)
            self._done = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stops writing and deletes the temporary file; ``path`` is left untouched."""
        self._done = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        discard(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not getattr(self, "_done", True):
            self.abort()


def write_image(path: Union[str, os.PathLike], frame: torch.Tensor) -> None:
    """Saves one float frame ``(3, H, W)`` or ``(3, 1, H, W)`` in ``[-1, 1]`` as an image (PNG for .png; format
    from the extension), via a temporary file renamed onto ``path`` only when saving succeeds."""
    from PIL import Image

    path = os.fspath(path)
    if frame.dim() == 3:
        frame = frame.unsqueeze(1)
    if frame.dim() != 4 or frame.shape[1] != 1:
        raise ValueError(f"expected one frame (3, H, W) or (3, 1, H, W), got {tuple(frame.shape)}")
    image = Image.fromarray(to_uint8(frame)[0])
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    tmp = temp_path(path)
    try:
        image.save(tmp, format=fmt)
        commit(tmp, path)
    finally:
        discard(tmp)
