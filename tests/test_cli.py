"""The ``wfvae`` command end to end on the bundled clip: odd lengths and sizes, streaming, bad inputs."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import DATA, make_tiny_vae
from wfvae.cli import main, read_latents
from wfvae.evaluation.metrics import video_psnr
from wfvae.io.video import VideoReader, read_video

ROOT = os.path.join(os.path.dirname(__file__), "..")
CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")
MODEL = os.path.join(DATA, "wfvae_tiny")


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("frames,size", [(10, "30x42"), (1, "16x16"), (13, "24x40")])
def test_reconstruct_keeps_frames_size_fps(tmp_path, capsys, frames, size):
    out = str(tmp_path / "rec.mp4")
    code, stdout, _ = _run(["reconstruct", CLIP, out, "--model", MODEL, "--frames", str(frames), "--size", size,
                            "--start", "3", "--latent-chunk", "1", "--quiet"], capsys)
    assert code == 0 and "PSNR" in stdout and "SSIM" in stdout
    r = VideoReader(out)
    assert (r.num_frames, r.size, r.fps) == (frames, tuple(int(v) for v in size.split("x")), 25.0)


def test_encode_decode_round_trip_matches_model(tmp_path, capsys):
    lat = str(tmp_path / "z.safetensors")
    assert _run(["encode", CLIP, lat, "--model", MODEL, "--frames", "14", "--size", "32x48", "--quiet"], capsys)[0] == 0
    from wfvae import WFVAE, pad_video

    vae = WFVAE.from_pretrained(MODEL)
    z, meta = read_latents(lat, vae)
    assert meta["num_frames"] == "14" and (meta["height"], meta["width"]) == ("32", "48")
    video = read_video(CLIP, num_frames=14, size=(32, 48)).unsqueeze(0)
    padded, _ = pad_video(video)
    with torch.no_grad():
        ref = vae.encode(padded).latent_dist.mean
    assert z.shape == ref.shape and (z - ref).abs().max() < 1e-4  # streamed CLI == whole-video model call
    for chunk in ("1", "3"):
        path = str(tmp_path / f"dec{chunk}.mp4")
        assert _run(["decode", lat, path, "--model", MODEL, "--latent-chunk", chunk, "--lossless", "--quiet"],
                    capsys)[0] == 0
        r = VideoReader(path)
        assert (r.num_frames, r.size) == (14, (32, 48))
    a, b = read_video(str(tmp_path / "dec1.mp4")), read_video(str(tmp_path / "dec3.mp4"))
    # same frames up to 8-bit rounding: lossy H.264 of noisy 32x48 frames can turn a 1-LSB difference into a
    # large one (and x264's choices vary between runs), so the files are lossless here
    assert (a - b).abs().max() <= 2 / 255 * 2


def test_lossless_output_holds_the_printed_psnr(tmp_path, capsys):
    out = str(tmp_path / "rec.mp4")
    argv = ["reconstruct", CLIP, out, "--model", MODEL, "--frames", "9", "--size", "32x48", "--quiet"]
    code, stdout, _ = _run(argv + ["--lossless"], capsys)
    assert code == 0
    printed = float(stdout.split("PSNR ")[1].split(" dB")[0])
    clip = read_video(CLIP, num_frames=9, size=(32, 48))
    assert abs(video_psnr(clip[None], read_video(out)[None]).item() - printed) < 0.1
    code, _, err = _run(argv + ["--crf", "60"], capsys)
    assert code == 2 and err.startswith("error: --crf") and len(err.strip().splitlines()) == 1


def test_max_memory_plans_or_refuses(tmp_path, capsys):
    out = str(tmp_path / "rec.mp4")
    code, _, err = _run(["reconstruct", CLIP, out, "--model", MODEL, "--frames", "9", "--size", "32x32",
                         "--max-memory", "0.5", "--quiet"], capsys)
    assert code == 0 and "memory plan: latent chunk" in err
    # 64x96 frames: the planner tries the tiled fallback (down to 64x64 tiles) before it refuses; on the clip's
    # 270x480 frames the same refusal simulates dozens of tiles per frame (minutes on a busy 2-core machine)
    code, _, err = _run(["reconstruct", CLIP, out + "2.mp4", "--model", MODEL, "--frames", "9", "--size", "64x96",
                         "--max-memory", "0.00001", "--quiet"], capsys)
    assert code == 2 and err.startswith("error:") and "too little memory" in err
    assert not os.path.exists(out + "2.mp4")


def _bad(tmp_path, capsys, argv, needle):
    code, _, err = _run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_bad_inputs_fail_cleanly(tmp_path, capsys):
    out = str(tmp_path / "out.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    other = tmp_path / "other"
    make_tiny_vae().save_pretrained(str(other))
    lat = str(tmp_path / "z.safetensors")
    assert main(["encode", CLIP, lat, "--model", MODEL, "--frames", "5", "--size", "16x16", "--quiet"]) == 0
    capsys.readouterr()
    _bad(tmp_path, capsys, ["reconstruct", str(tmp_path / "missing.mp4"), out, "--model", MODEL], "not found")
    _bad(tmp_path, capsys, ["reconstruct", str(corrupt), out, "--model", MODEL], "corrupt.mp4")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, out, "--model", MODEL, "--size", "big"], "--size")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, out, "--model", MODEL, "--latent-chunk", "0"], "--latent-chunk")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, out, "--model", str(tmp_path / "nomodel")], "model not found")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, str(tmp_path / "out.txt"), "--model", MODEL], "must end with")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, out, "--model", MODEL, "--start", "100000"], "no frames")
    _bad(tmp_path, capsys, ["reconstruct", CLIP, out, "--bogus"], "unrecognized")
    _bad(tmp_path, capsys, ["decode", str(junk), out, "--model", MODEL], "cannot read latents")
    _bad(tmp_path, capsys, ["decode", lat, out, "--model", str(other)], "different WF-VAE")
    _bad(tmp_path, capsys, ["encode", CLIP, str(tmp_path / "z.mp4"), "--model", MODEL], ".safetensors")
    assert sorted(os.listdir(tmp_path)) == ["corrupt.mp4", "junk.safetensors", "other", "z.safetensors"]


def test_tool_script_runs_as_a_program(tmp_path):
    out = str(tmp_path / "rec.mp4")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "wfvae_codec.py"), "reconstruct", CLIP, out,
                           "--model", MODEL, "--frames", "5", "--size", "16x24", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "wfvae_codec.py"), "decode", "nope.safetensors",
                           out, "--model", MODEL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- several inputs
def _copies(tmp_path, names):
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        shutil.copy(CLIP, folder / name)
    return [str(folder / n) for n in names]


SMALL = ["--model", MODEL, "--frames", "5", "--size", "32x32", "--quiet"]


def test_several_inputs_into_a_folder(tmp_path, capsys):
    a, b = _copies(tmp_path, ["a.mp4", "b.mkv"])
    out = tmp_path / "rec"
    code, stdout, _ = _run(["reconstruct", a, b, str(out), *SMALL], capsys)
    assert code == 0 and stdout.count("PSNR") == 2
    assert sorted(os.listdir(out)) == ["a.mp4", "b.mp4"]
    single = tmp_path / "single.mp4"
    assert _run(["reconstruct", a, str(single), *SMALL], capsys)[0] == 0
    assert torch.equal(read_video(str(out / "a.mp4")), read_video(str(single)))  # same as one input at a time


@pytest.mark.parametrize("case", ["file output", "same names", "existing output"])
def test_several_inputs_errors_before_any_work(tmp_path, capsys, case):
    a, b, c = _copies(tmp_path, ["a.mp4", "b.mp4", "a.mkv"])
    out = tmp_path / "lat"
    argv = {"file output": ["encode", a, b, str(tmp_path / "z.safetensors")],
            "same names": ["encode", a, c, str(out)],
            "existing output": ["encode", a, b, str(out)]}[case]
    if case == "existing output":
        out.mkdir()
        (out / "b.safetensors").write_bytes(b"keep")
    code, _, err = _run(argv + SMALL, capsys)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out / "a.safetensors")  # nothing was done
    if case == "existing output":
        assert (out / "b.safetensors").read_bytes() == b"keep"


def test_processes_split_the_inputs(tmp_path, capsys, monkeypatch):
    paths = _copies(tmp_path, ["a.mp4", "b.mp4", "c.mp4"])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run(["encode", *paths, str(tmp_path / "lat"), *SMALL], capsys)[0] == 0
    assert os.listdir(tmp_path / "lat") == ["b.safetensors"]  # rank 1 of 2 takes inputs 1, 3, ...


# test_torchrun_encodes_a_list_across_two_processes: in tests/test_multiprocess.py (shares its torchrun launch)


def test_allocation_settings_keep_a_value_already_set(monkeypatch):
    from wfvae.cli_support import cpu_allocation_settings

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    cpu_allocation_settings()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    cpu_allocation_settings()
    assert os.environ.get("THP_MEM_ALLOC_ENABLE") == ("1" if sys.platform.startswith("linux") else None)


_FAULTS = """
import resource, sys
from wfvae.cli_support import cpu_allocation_settings
cpu_allocation_settings()
import torch
torch.empty(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.empty(64 * 2 ** 20 // 4).fill_(1.0)  # 64 MiB, every page written
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "never"


@pytest.mark.skipif(_thp_mode() == "never", reason="no transparent huge pages on this machine")
def test_allocation_settings_cut_page_faults_of_large_tensors():
    """A 64 MiB tensor is 16384 pages of 4 KiB; on huge pages it is 32 of 2 MiB (a few more for the allocator)."""
    faults = {}
    for value in ("0", None):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        if value is not None:
            env["THP_MEM_ALLOC_ENABLE"] = value
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
        faults[value] = int(out.stdout.split()[-1])
    assert faults["0"] >= 16384
    assert faults[None] * 8 < faults["0"], faults


def test_default_latent_chunk_is_the_one_constant(capsys):
    """Without --latent-chunk or --max-memory the command, its help and the evaluation protocol use one value."""
    from wfvae.cli import _plan, build_parser
    from wfvae.evaluation.evaluate import Protocol
    from wfvae.inference import DEFAULT_LATENT_CHUNK

    args = build_parser().parse_args(["decode", "in.safetensors", "out.mp4"])
    assert _plan(args, None, 64, 64, 9, "decode") == (DEFAULT_LATENT_CHUNK, None, None, None)
    args = build_parser().parse_args(["decode", "in.safetensors", "out.mp4", "--latent-chunk", "3"])
    assert _plan(args, None, 64, 64, 9, "decode")[0] == 3
    assert Protocol().latent_chunk == DEFAULT_LATENT_CHUNK
    with pytest.raises(SystemExit):
        build_parser().parse_args(["decode", "--help"])
    assert f"default {DEFAULT_LATENT_CHUNK}" in " ".join(capsys.readouterr().out.split())
