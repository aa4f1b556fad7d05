"""The ``wfvae`` command keeps the error contract (issue 18) for every class of bad input a new user tried.

One table of bad inputs: each row must give exit code 2, exactly one stderr line starting ``error:`` (no
traceback, no FFmpeg log line: stderr is captured at the file-descriptor level), leave no output, no temporary
file and no created folder, and leave every input unchanged. Then: still images are one-frame videos, --overwrite,
write failures, SIGTERM while writing, and ``--help`` without torch.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import DATA, tree_snapshot
from wfvae.cli import main
from wfvae.io.video import VideoReader, VideoWriter

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(DATA, "wfvae_tiny")
WEIGHTS = "diffusion_pytorch_model.safetensors"


# ---------------------------------------------------------------------------------------------- the input files
def _clip(path, frames=9, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    with VideoWriter(path, fps=25) as w:
        w.write(torch.rand(3, frames, size, size, generator=g) * 2 - 1)


def _model(root, name, weights=None, config=None):
    """A copy of the tiny model with its weights (a state dict, or raw bytes) and/or config.json (text) replaced."""
    folder = os.path.join(root, name)
    os.makedirs(folder)
    if weights is None:
        shutil.copy(os.path.join(TINY, WEIGHTS), folder)
    elif isinstance(weights, bytes):
        with open(os.path.join(folder, WEIGHTS), "wb") as fh:
            fh.write(weights)
    else:
        save_file(weights, os.path.join(folder, WEIGHTS))
    if config is None:
        shutil.copy(os.path.join(TINY, "config.json"), folder)
    elif config is not False:
        with open(os.path.join(folder, "config.json"), "w") as fh:
            fh.write(config)
    return folder


def _latents_variant(src, dst, meta=None, drop=None, tensor=None):
    with safe_open(src, "pt") as fh:
        m = dict(fh.metadata())
        z = fh.get_tensor("latents")
    m.update(meta or {})
    if drop:
        del m[drop]
    z = tensor(z) if tensor is not None else z
    save_file({"latents": z} if z is not None else {"other": torch.zeros(1)}, dst, metadata=m)
    return dst


@pytest.fixture(scope="module")
def F(tmp_path_factory):
    """Every input file of the table, built once (tiny: 9 frames of 32x32)."""
    root = str(tmp_path_factory.mktemp("inputs"))
    f = {"root": root}
    p = lambda name: os.path.join(root, name)  # noqa: E731
    f["clip"] = p("clip.mp4")
    _clip(f["clip"])
    data = open(f["clip"], "rb").read()
    for name, content in [("corrupt.mp4", os.urandom(4096)), ("zeros.mp4", bytes(5000)), ("empty.mp4", b""),
                          ("truncated.mp4", data[: len(data) // 2]), ("text.png", b"not an image\n")]:
        with open(p(name), "wb") as fh:
            fh.write(content)
        f[name] = p(name)
    mid = bytearray(data)  # valid header and index, garbage frames: decoders log to fd 2 here
    rng = np.random.default_rng(0)
    mid[200:len(mid) - 1000] = rng.integers(0, 256, len(mid) - 1200, dtype=np.uint8).tobytes()
    f["mid.mp4"] = p("mid.mp4")
    open(f["mid.mp4"], "wb").write(bytes(mid))
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p("img.png"))
    os.rename(p("img.png"), p("png_as.mp4"))
    f["png_as.mp4"] = p("png_as.mp4")
    f["link"], f["hard"] = p("link.mp4"), p("hard.mp4")
    os.symlink(f["clip"], f["link"])
    os.link(f["clip"], f["hard"])
    f["model"] = _model(root, "model")
    state = load_file(os.path.join(TINY, WEIGHTS))
    raw = open(os.path.join(TINY, WEIGHTS), "rb").read()
    f["m_trunc"] = _model(root, "m_trunc", weights=raw[: len(raw) // 2])
    f["m_random"] = _model(root, "m_random", weights=os.urandom(10000))
    f["m_zeros"] = _model(root, "m_zeros", weights=bytes(10000))
    f["m_empty"] = _model(root, "m_empty", weights=b"")
    pickled = p("pickled.bin")
    torch.save(state, pickled)
    f["m_pickle"] = _model(root, "m_pickle", weights=open(pickled, "rb").read())
    f["m_badjson"] = _model(root, "m_badjson", config="{not json")
    f["m_list"] = _model(root, "m_list", config="[1, 2, 3]")
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    f["m_badtype"] = _model(root, "m_badtype", config=json.dumps(dict(cfg, latent_dim="eight")))
    f["m_noconfig"] = _model(root, "m_noconfig", config=False)
    f["m_nan"] = _model(root, "m_nan", weights={k: v.float().fill_(float("nan")) if "conv_out" in k else v
                                               for k, v in state.items()})
    # finite weights whose output overflows: the failure shows only in the decoded frames, after writing began
    f["m_huge"] = _model(root, "m_huge", weights={k: v * 1e38 if k == "decoder.conv_out.weight" else v
                                                 for k, v in state.items()})
    f["lat"] = p("lat.safetensors")
    assert main(["encode", f["clip"], f["lat"], "--model", f["model"], "--quiet"]) == 0
    lat = f["lat"]
    for key in ("format", "num_frames", "height", "width", "fps", "model_config"):
        f[f"no_{key}"] = _latents_variant(lat, p(f"no_{key}.safetensors"), drop=key)
    for name, key, value in [("frames_neg", "num_frames", "-5"), ("width_neg", "width", "-1"),
                             ("height_abc", "height", "abc"), ("fps_inf", "fps", "inf"), ("fps_nan", "fps", "nan"),
                             ("fps_zero", "fps", "0"), ("cfg_list", "model_config", "[1, 2]"),
                             ("cfg_bad", "model_config", "{bad"), ("frames_mismatch", "num_frames", "100"),
                             ("height_big", "height", "1000"), ("width_huge", "width", "99999999")]:
        f[name] = _latents_variant(lat, p(f"{name}.safetensors"), meta={key: value})
    other = dict(json.loads(safe_open(lat, "pt").metadata()["model_config"]), base_channels=8)
    f["other_model"] = _latents_variant(lat, p("other_model.safetensors"), meta={"model_config": json.dumps(other)})
    f["channels"] = _latents_variant(lat, p("channels.safetensors"), tensor=lambda z: z[:, :3].contiguous())
    f["zero_hw"] = _latents_variant(lat, p("zero_hw.safetensors"), tensor=lambda z: z[:, :, :, :0].contiguous())
    f["all_nan"] = _latents_variant(lat, p("all_nan.safetensors"), tensor=lambda z: torch.full_like(z, float("nan")))
    f["one_inf"] = _latents_variant(lat, p("one_inf.safetensors"),
                                    tensor=lambda z: z.clone().index_put_((torch.tensor([0]),) * 5,
                                                                          torch.tensor(float("inf"))))
    f["four_d"] = _latents_variant(lat, p("four_d.safetensors"), tensor=lambda z: z[0].contiguous())
    f["int_lat"] = _latents_variant(lat, p("int_lat.safetensors"), tensor=lambda z: z.to(torch.int32))
    f["no_tensor"] = _latents_variant(lat, p("no_tensor.safetensors"), tensor=lambda z: None)
    f["junk.safetensors"] = p("junk.safetensors")
    open(f["junk.safetensors"], "wb").write(b"not a safetensors file")
    return f


# ---------------------------------------------------------------------------------------------- the table
def R(inp, *extra, out=None, model="model"):
    """argv builder of a ``reconstruct`` row: ``out`` defaults to new/dir/o.mp4 (folders that must not appear)."""
    return lambda f, t: ["reconstruct", f.get(inp, inp), out(f, t) if callable(out) else str(t / (out or "new/dir/o.mp4")),
                         "--model", f[model], "--quiet", *extra]


def E(inp, *extra, out=None, model="model"):
    return lambda f, t: ["encode", f.get(inp, inp), out(f, t) if callable(out) else str(t / (out or "new/z.safetensors")),
                         "--model", f[model], "--quiet", *extra]


def D(inp, *extra, out=None, model="model"):
    return lambda f, t: ["decode", f.get(inp, inp), out(f, t) if callable(out) else str(t / (out or "new/dir/o.mp4")),
                         "--model", f[model], "--quiet", *extra]


def _existing(name):
    def make(f, t):
        (t / name).write_bytes(b"precious")
        return str(t / name)
    return make


def _readonly(f, t):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (t / "ro").mkdir()
    (t / "ro").chmod(0o555)
    return str(t / "ro" / "z.safetensors")


def _no_cuda(f, t):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    return str(t / "o.mp4")


BAD = [
    # data loss: an output that is an input, or that exists
    ("output_is_input", R("clip", "--overwrite", out=lambda f, t: f["clip"]), "is the input"),
    ("output_is_symlink_to_input", R("clip", "--overwrite", out=lambda f, t: f["link"]), "is the input"),
    ("input_is_symlink_to_output", R("link", "--overwrite", out=lambda f, t: f["clip"]), "is the input"),
    ("output_is_hardlink_to_input", R("clip", "--overwrite", out=lambda f, t: f["hard"]), "is the input"),
    ("output_is_model_weights", E("clip", "--overwrite", out=lambda f, t: os.path.join(f["model"], WEIGHTS)),
     "is the input"),
    ("reconstruct_output_exists", R("clip", out=_existing("o.mp4")), "exists: pass --overwrite"),
    ("encode_output_exists", E("clip", out=_existing("z.safetensors")), "exists: pass --overwrite"),
    ("decode_output_exists", D("lat", out=_existing("o.mp4")), "exists: pass --overwrite"),
    ("output_is_folder", R("clip", "--overwrite", out=lambda f, t: (t / "d.mp4").mkdir() or str(t / "d.mp4")),
     "is a folder"),
    ("output_name_too_long", R("clip", out=lambda f, t: str(t / ("x" * 300 + ".mp4"))), "longer than 255"),
    ("output_suffix", R("clip", out="new/o.txt"), "must end with .mp4"),
    ("encode_suffix", E("clip", out="new/z.mp4"), "must end with .safetensors"),
    ("encode_readonly_folder", E("clip", out=_readonly), "permission denied"),
    # broken or mislabelled videos (and FFmpeg's log lines: stderr must still be one line)
    ("input_missing", R("nope.mp4"), "input not found"),
    ("video_random_bytes", R("corrupt.mp4"), "cannot read video"),
    ("video_zero_filled", R("zeros.mp4"), "cannot read video"),
    ("video_empty_file", R("empty.mp4"), "cannot read video"),
    ("video_truncated", R("truncated.mp4"), "truncated.mp4"),
    ("video_garbage_frames", R("mid.mp4"), "cannot decode"),
    ("encode_garbage_frames", E("mid.mp4"), "cannot decode"),
    ("image_named_mp4", R("png_as.mp4"), "image, not a video"),
    ("text_named_png", E("text.png"), "cannot read image"),
    # broken models
    ("model_missing", lambda f, t: ["reconstruct", f["clip"], str(t / "o.mp4"), "--model", str(t / "nomodel")],
     "model not found"),
    ("weights_truncated", R("clip", model="m_trunc"), "cannot load model"),
    ("weights_random", R("clip", model="m_random"), "cannot load model"),
    ("weights_zero_filled", E("clip", model="m_zeros"), "cannot load model"),
    ("weights_empty", D("lat", model="m_empty"), "cannot load model"),
    ("weights_pickled", R("clip", model="m_pickle"), "cannot load model"),
    ("config_not_json", R("clip", model="m_badjson"), "cannot load model"),
    ("config_is_list", D("lat", model="m_list"), "cannot load model"),
    ("config_wrong_type", R("clip", model="m_badtype"), "latent_dim"),
    ("config_missing", R("clip", model="m_noconfig"), "config"),
    ("weights_nan", R("clip", model="m_nan"), "NaN"),
    ("weights_overflow_reconstruct", R("clip", model="m_huge"), "NaN or infinite"),
    ("weights_overflow_decode", D("lat", model="m_huge"), "NaN or infinite"),
    ("weights_overflow_encode", E("clip", model="m_huge"), "NaN or infinite"),
    # broken latents files
    ("latents_missing", D("nope.safetensors"), "not found"),
    ("latents_junk", D("junk.safetensors"), "cannot read latents"),
    ("latents_no_tensor", D("no_tensor"), "no 'latents' tensor"),
    ("latents_no_format", D("no_format"), "not a 'wfvae encode' latents file"),
    ("latents_no_num_frames", D("no_num_frames"), "'num_frames' is missing"),
    ("latents_no_height", D("no_height"), "'height' is missing"),
    ("latents_no_width", D("no_width"), "'width' is missing"),
    ("latents_no_fps", D("no_fps"), "'fps' is missing"),
    ("latents_no_model_config", D("no_model_config"), "'model_config' is missing"),
    ("latents_num_frames_negative", D("frames_neg"), "'num_frames' must be from 1"),
    ("latents_width_negative", D("width_neg"), "'width' must be from 1"),
    ("latents_width_absurd", D("width_huge"), "'width' must be from 1 to 16384"),
    ("latents_height_not_int", D("height_abc"), "'height' must be an integer"),
    ("latents_fps_inf", D("fps_inf"), "'fps' must be a number in"),
    ("latents_fps_nan", D("fps_nan"), "'fps' must be a number in"),
    ("latents_fps_zero", D("fps_zero"), "'fps' must be a number in"),
    ("latents_config_list", D("cfg_list"), "not a JSON object"),
    ("latents_config_bad_json", D("cfg_bad"), "not a JSON object"),
    ("latents_frames_inconsistent", D("frames_mismatch"), "metadata says 100 frames"),
    ("latents_height_too_large", D("height_big"), "metadata says 9 frames of 1000x32"),
    ("latents_other_model", D("other_model"), "different WF-VAE"),
    ("latents_wrong_channels", D("channels"), "3 channels"),
    ("latents_zero_size", D("zero_hw"), "empty"),
    ("latents_all_nan", D("all_nan"), "NaN or infinite"),
    ("latents_one_inf", D("one_inf"), "1 NaN or infinite value "),
    ("latents_4d", D("four_d"), "(1, C, t, h, w)"),
    ("latents_int", D("int_lat"), "(1, C, t, h, w)"),
    # flags
    ("fps_inf", R("clip", "--fps", "inf"), "--fps must be a finite number"),
    ("fps_nan", E("clip", "--fps", "nan"), "--fps must be a finite number"),
    ("fps_zero", R("clip", "--fps", "0"), "--fps must be > 0"),
    ("fps_negative", R("clip", "--fps", "-1"), "--fps must be > 0"),
    ("fps_absurd", R("clip", "--fps", "1e6"), "--fps must be <= 1000"),
    ("size_huge", R("clip", "--size", "100000x100000"), "too large"),
    ("size_zero", E("clip", "--size", "0x5"), "--size must be positive"),
    ("size_text", R("clip", "--size", "big"), "--size must look like"),
    ("tile_overlap_without_tile", R("clip", "--tile-overlap", "8"), "--tile-overlap needs --tile"),
    ("tile_overlap_without_tile_decode", D("lat", "--tile-overlap", "8"), "--tile-overlap needs --tile"),
    ("tile_not_multiple", R("clip", "--tile", "12"), "--tile must be a multiple of 8"),
    ("tile_overlap_too_big", R("clip", "--tile", "32", "--tile-overlap", "32"), "--tile-overlap must be"),
    ("device_empty", R("clip", "--device", ""), "--device is empty"),
    ("device_blank", D("lat", "--device", "  "), "--device is empty"),
    ("device_unknown", R("clip", "--device", "tpu"), "--device must be cpu, cuda or cuda:i"),
    ("device_cuda_absent", R("clip", "--device", "cuda", out=_no_cuda), "no CUDA device"),
    ("dtype_unknown", R("clip", "--dtype", "float64"), "invalid choice"),
    ("crf_out_of_range", R("clip", "--crf", "99"), "--crf must be"),
    ("latent_chunk_zero", D("lat", "--latent-chunk", "0"), "--latent-chunk must be >= 1"),
    ("max_memory_nan", R("clip", "--max-memory", "nan"), "--max-memory must be a finite number"),
    ("max_memory_zero", R("clip", "--max-memory", "0"), "--max-memory must be > 0"),
    ("max_memory_too_small", R("clip", "--max-memory", "0.00001"), "too little memory"),
    ("start_negative", R("clip", "--start", "-1"), "--start must be >= 0"),
    ("frames_zero", E("clip", "--frames", "0"), "--frames must be >= 1"),
    ("start_past_end", R("clip", "--start", "1000"), "no frames"),
    ("unknown_flag", R("clip", "--bogus"), "unrecognized arguments: --bogus"),
    ("no_command", lambda f, t: [], "required: command"),
]


def _check_error(capfd, argv, fragment, run=None):
    code = main(argv) if run is None else run()
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    return lines[0]


@pytest.mark.parametrize("build,fragment", [pytest.param(b, m, id=i) for i, b, m in BAD])
def test_bad_input_is_one_error_line_and_leaves_nothing(F, tmp_path, capfd, build, fragment):
    argv = build(F, tmp_path)
    inputs, outputs = tree_snapshot(F["root"]), tree_snapshot(str(tmp_path))
    _check_error(capfd, argv, fragment)
    assert tree_snapshot(F["root"]) == inputs, "an input changed"
    assert tree_snapshot(str(tmp_path)) == outputs, "an output, a temporary file or a folder was left"


# ---------------------------------------------------------------------------------------------- still images
@pytest.mark.parametrize("name,mode,hw", [("photo.jpg", "RGB", (32, 32)), ("grey.png", "L", (32, 32)),
                                          ("rgba.png", "RGBA", (24, 40)), ("dot.png", "RGB", (1, 1)),
                                          ("tiny.bmp", "RGB", (3, 5)), ("pic.webp", "RGB", (16, 16))])
def test_still_image_is_a_one_frame_video(tmp_path, capfd, name, mode, hw):
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    array = np.random.default_rng(1).integers(0, 256, (*hw, channels), dtype=np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(tmp_path / name)
    out = str(tmp_path / "o.mp4")
    assert main(["reconstruct", str(tmp_path / name), out, "--model", TINY, "--quiet"]) == 0, capfd.readouterr().err
    r = VideoReader(out)
    assert (r.num_frames, r.size, r.fps) == (1, hw, 25.0)
    z, video = str(tmp_path / "z.safetensors"), str(tmp_path / "d.mp4")
    assert main(["encode", str(tmp_path / name), z, "--model", TINY, "--fps", "12", "--quiet"]) == 0
    assert main(["decode", z, video, "--model", TINY, "--quiet"]) == 0
    r = VideoReader(video)
    assert (r.num_frames, r.size, r.fps) == (1, hw, 12.0)


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("command", ["reconstruct", "encode", "decode"])
def test_existing_output_refused_then_replaced_with_overwrite(F, tmp_path, capfd, command):
    out = tmp_path / ("z.safetensors" if command == "encode" else "o.mp4")
    out.write_bytes(b"precious")
    source = F["lat"] if command == "decode" else F["clip"]
    argv = [command, source, str(out), "--model", F["model"], "--quiet"]
    _check_error(capfd, argv, "exists: pass --overwrite")
    assert out.read_bytes() == b"precious" and sorted(os.listdir(tmp_path)) == [out.name]
    assert main(argv + ["--overwrite"]) == 0
    assert out.read_bytes() != b"precious" and sorted(os.listdir(tmp_path)) == [out.name]
    assert (out.stat().st_mode & 0o777) == (0o666 & ~_umask())  # safetensors itself writes 0600


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_long_valid_output_name_and_new_folders(F, tmp_path):
    out = tmp_path / "a" / "b" / ("n" * 240 + ".mp4")  # the temporary file's name must stay short
    assert main(["reconstruct", F["clip"], str(out), "--model", F["model"], "--quiet"]) == 0
    assert os.listdir(out.parent) == [out.name] and VideoReader(str(out)).num_frames == 9


def test_write_failure_leaves_no_file_or_folder(F, tmp_path, capfd, monkeypatch):
    import safetensors.torch

    def failing(tensors, path, metadata=None):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    line = _check_error(capfd, ["encode", F["clip"], str(tmp_path / "new" / "z.safetensors"), "--model", F["model"],
                                "--quiet"], "No space left")
    assert os.listdir(tmp_path) == [], line


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    clip = str(tmp_path / "long.mp4")
    _clip(clip, frames=41, size=32)
    out_dir = tmp_path / "new" / "dir"
    proc = subprocess.Popen([sys.executable, "-m", "wfvae.cli", "reconstruct", clip, str(out_dir / "o.mp4"),
                             "--model", TINY, "--latent-chunk", "1", "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out_dir.is_dir() and any(".part" in n for n in os.listdir(out_dir)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the command ended before its temporary file was seen"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["error: interrupted; no output was written"]
    assert sorted(os.listdir(tmp_path)) == ["long.mp4"]  # no .part file, and new/dir removed


def test_help_does_not_import_torch():
    code = ("import sys, wfvae.cli\n"
            "try:\n    wfvae.cli.main(['reconstruct', '--help'])\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--overwrite" in proc.stdout and "--tile-overlap" in proc.stdout


def test_lazy_package_names():
    import wfvae
    from wfvae import DiagonalGaussian, WFVAE, WFVAEConfig, crop_video, pad_video
    from wfvae.models.encoder_decoder import DiagonalGaussian as DG

    assert DiagonalGaussian is DG and WFVAE.__name__ == "WFVAE" and WFVAEConfig and pad_video and crop_video
    assert set(wfvae.__all__) <= set(dir(wfvae))
    with pytest.raises(AttributeError):
        wfvae.not_a_name


# ---------------------------------------------------------------------------------------------- tools
def test_export_tool_refuses_a_non_empty_folder_and_writes_0644(tmp_path, capfd, monkeypatch):
    from tools.export_vae import main as export

    cfg = json.load(open(os.path.join(TINY, "config.json")))
    state = {f"vae.{k}": v for k, v in load_file(os.path.join(TINY, WEIGHTS)).items() if "wavelet" not in k}
    ckpt = str(tmp_path / "run.ckpt")
    torch.save({"state_dict": state, "hyper_parameters": {"vae": cfg}}, ckpt)
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    _check_error(capfd, None, "not empty: pass --overwrite", run=lambda: export([ckpt, str(out)]))
    assert os.listdir(out) == ["notes.txt"]
    _check_error(capfd, None, "not found", run=lambda: export([str(tmp_path / "no.ckpt"), str(tmp_path / "new")]))
    assert sorted(os.listdir(tmp_path)) == ["export", "run.ckpt"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the progress bar shows on terminals only
    assert export([ckpt, str(out), "--overwrite"]) == 0
    assert "export: 100%" in capfd.readouterr().err
    assert sorted(os.listdir(out)) == ["config.json", WEIGHTS, "notes.txt"]
    for name in ("config.json", WEIGHTS):
        assert (os.stat(out / name).st_mode & 0o777) == (0o666 & ~_umask()), name


def test_eval_tool_keeps_an_existing_json(F, tmp_path, capfd, monkeypatch):
    from tools.eval_vae import main as evaluate

    out = tmp_path / "r.json"
    out.write_text("{}")
    argv = [F["model"], F["clip"], "--frames", "9", "--size", "32", "--json", str(out)]
    _check_error(capfd, None, "exists: pass --overwrite", run=lambda: evaluate(argv))
    assert out.read_text() == "{}"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the progress bar shows on terminals only
    assert evaluate(argv + ["--overwrite"]) == 0
    assert json.load(open(out))["count"] == 1 and os.listdir(tmp_path) == ["r.json"]
    assert "evaluate: 100%" in capfd.readouterr().err
