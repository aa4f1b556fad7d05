"""``opensora-sample`` keeps the error contract (issue 18): every bad input is one ``error:`` line with exit code 2
and leaves the disk as it was; outputs never clobber; SIGTERM leaves no partial file; ``--help`` is fast.

The shipped model (assets/models/opensora-t2v) at 5 frames of 32x32 and 2 steps; bad inputs fail before sampling.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tree_snapshot
import opensora.cli.sample as cli
from opensora.pipelines.defaults import part_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "assets", "models", "opensora-t2v")
SIZE = ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--device", "cpu", "--quiet"]
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _stats(root):
    return {f: (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(root) for f in files}


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error(code, err, expected=""):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (code, err)
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One real sampling run into a folder (with the decode progress bar), keeping its latents."""
    folder = tmp_path_factory.mktemp("first")
    out, lat = folder / "videos", folder / "z.safetensors"
    code = cli.main(["--prompt", "a cat", "--model", MODEL, "--output", str(out), "--save-latents", str(lat)]
                    + [a for a in SIZE if a != "--quiet"])
    assert code == 0
    return out, lat


def _copy_part(src, dst, weights=None, config=None):
    """``dst`` with ``src``'s config.json (or ``config`` text) and weights (or ``weights`` bytes)."""
    os.makedirs(dst)
    with open(os.path.join(src, "config.json")) as fh:
        text = fh.read()
    with open(os.path.join(dst, "config.json"), "w") as fh:
        fh.write(text if config is None else config)
    if weights is not None:
        with open(os.path.join(dst, WEIGHTS), "wb") as fh:
            fh.write(weights)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Broken copies of the shipped VAE and denoiser: {name: folder}."""
    root = tmp_path_factory.mktemp("damaged")
    pickled = root / "pickled.pt"
    torch.save({"weight": torch.zeros(2)}, pickled)
    folders = {}
    for part in ("vae", "transformer"):
        src = os.path.join(MODEL, part)
        with open(os.path.join(src, WEIGHTS), "rb") as fh:
            good = fh.read()
        variants = {"list": dict(config="[1, 2, 3]"), "json": dict(config='{"latent_dim": '),
                    "truncated": dict(weights=good[: len(good) // 3]), "zeros": dict(weights=bytes(len(good))),
                    "pickled": dict(weights=pickled.read_bytes())}
        for name, kw in variants.items():
            folders[f"{part}_{name}"] = str(root / f"{part}_{name}")
            _copy_part(src, folders[f"{part}_{name}"], **kw)
        tensors = load_file(os.path.join(src, WEIGHTS))
        key = sorted(tensors)[-1]
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        folders[f"{part}_nan"] = str(root / f"{part}_nan")
        _copy_part(src, folders[f"{part}_nan"], weights=b"")
        save_file(tensors, os.path.join(folders[f"{part}_nan"], WEIGHTS))
    return folders


def _latents_file(path, latents, meta):
    save_file({"latents": latents.contiguous()}, str(path), metadata={k: str(v) for k, v in meta.items()})
    return str(path)


# Each row: (flags after --prompt/--model/--output, expected text of the error line). A callable row gets
# (tmp_path, damaged, first_run) and returns that pair, making the files it needs in tmp_path (which must be left
# exactly as it was).
def _shipped(part):
    return os.path.join(MODEL, part)


TEXT_ENCODER = part_folder(MODEL, "text_encoder")


def _denoiser(name):
    return lambda tmp, dmg, first: (["--model", dmg[f"transformer_{name}"], "--vae", _shipped("vae"),
                                     "--text-encoder", TEXT_ENCODER], "model")


def _vae(name):
    return lambda tmp, dmg, first: (["--vae", dmg[f"vae_{name}"]], "VAE")


def _readonly(tmp, dmg, first):
    if os.geteuid() == 0:  # root writes anywhere the permissions forbid; /proc takes no new files
        return ["--save-latents", "/proc/self/z.safetensors"], "cannot write the --save-latents in /proc/self"
    os.makedirs(tmp / "ro")
    os.chmod(tmp / "ro", 0o555)
    return ["--save-latents", tmp / "ro" / "z.safetensors"], "cannot write the --save-latents in"


def _existing(name, flag):
    def make(tmp, dmg, first):
        (tmp / name).write_bytes(b"keep me")
        return [flag, tmp / name], "exists: pass --overwrite"
    return make


def _is_input(tmp, dmg, first):
    (tmp / "ref.mp4").write_bytes(b"a video")
    return ["--control-video", tmp / "ref.mp4", "--output", tmp / "ref.mp4", "--overwrite"], "is the input"


def _bad_latents(change, expected):
    """A --from-latents file: the first run's latents and metadata, changed by ``change(latents, meta)``."""
    def make(tmp, dmg, first):
        latents, meta = cli.load_latents(str(first[1]))
        latents, meta = change(latents.clone(), dict(meta))
        return ["--from-latents", _latents_file(tmp / "bad.safetensors", latents, meta)], expected
    return make


def _raw_file(data, expected):
    def make(tmp, dmg, first):
        (tmp / "bad.safetensors").write_bytes(data)
        return ["--from-latents", tmp / "bad.safetensors"], expected
    return make


def _nan_at(latents, meta):
    latents[0, 0, 0, 0, 0] = float("nan")
    return latents, meta


BAD = {
    # non-finite, negative and absurd numbers
    "guidance_nan": (["--guidance", "nan"], "--guidance must be a finite number"),
    "guidance_inf": (["--guidance", "inf"], "--guidance must be a finite number"),
    "guidance_negative": (["--guidance", "-3"], "--guidance must be >= 0"),
    "guidance_huge": (["--guidance", "1e30"], "--guidance must be <= 100"),
    "guidance_rescale_nan": (["--guidance-rescale", "nan"], "--guidance-rescale must be a finite"),
    "fps_inf": (["--fps", "inf"], "--fps must be a finite number"),
    "fps_zero": (["--fps", "0"], "--fps must be > 0"),
    "noise_strength_nan": (["--noise-strength", "nan"], "--noise-strength must be a finite"),
    "control_strength_inf": (["--control-strength=-inf"], "--control-strength must be a finite"),
    "canny_low_nan": (["--canny-low", "nan"], "--canny-low must be a finite"),
    "steps_negative": (["--steps", "-3"], "--steps must be from 1 to 1000"),
    "steps_huge": (["--steps", "100000"], "--steps must be from 1 to 1000"),
    "num_samples_zero": (["--num-samples", "0"], "--num-samples must be from 1"),
    "seed_negative": (["--seed", "-1"], "--seed must be from 0"),
    "max_length_huge": (["--max-length", "100000000"], "--max-length must be from 1 to 4096"),
    "latent_chunk_zero": (["--vae-latent-chunk", "0"], "--vae-latent-chunk must be from 1"),
    "tile_not_8": (["--vae-tile", "12"], "--vae-tile must be a multiple of 8"),
    "frames_not_4n1": (["--frames", "6"], "--frames must be 4n + 1"),
    "width_negative": (["--width", "-32"], "positive multiples of 8"),
    "frames_huge": (["--frames", "100000001"], "--frames must be from 1 to 1000000"),
    "size_huge": (["--height", "800000", "--width", "800000"], "lower --frames, --height or --width"),
    "device_empty": (["--device", ""], "--device is empty"),
    "device_unknown": (["--device", "tpu"], "--device must be cpu, cuda or cuda:i"),
    "dtype_unknown": (["--dtype", "int8"], "invalid choice"),
    # outputs
    "save_latents_readonly": _readonly,
    "save_latents_exists": _existing("z.safetensors", "--save-latents"),
    "save_latents_suffix": (["--save-latents", "z.npy"], "must end with .safetensors"),
    "output_file_exists": _existing("out.mp4", "--output"),
    "output_suffix": (["--output", "out.txt"], "must end with .mp4"),
    "output_is_input": _is_input,
    # damaged models
    "vae_config_list": _vae("list"),
    "vae_config_json": _vae("json"),
    "vae_truncated": _vae("truncated"),
    "vae_zero_filled": _vae("zeros"),
    "vae_pickled": _vae("pickled"),
    "vae_nan_weights": _vae("nan"),
    "model_config_list": _denoiser("list"),
    "model_config_json": _denoiser("json"),
    "model_truncated": _denoiser("truncated"),
    "model_zero_filled": _denoiser("zeros"),
    "model_pickled": _denoiser("pickled"),
    "model_nan_weights": _denoiser("nan"),
    "model_missing": (["--model", "no/such/folder"], "model folder not found"),
    "refiner_missing": (["--refine-prompt", "no/such/lm"], "prompt refiner folder not found"),
    # --from-latents files
    "latents_missing": (["--from-latents", "no/such.safetensors"], "latents file not found"),
    "latents_garbage": _raw_file(b"\x93NUMPY not a safetensors file" * 10, "cannot read latents"),
    "latents_zero_filled": _raw_file(bytes(4096), "cannot read latents"),
    "latents_no_metadata": _bad_latents(lambda z, m: (z, {}), "not an opensora-sample latents file"),
    "latents_bad_prompts": _bad_latents(lambda z, m: (z, {**m, "prompts": "[oops"}), "metadata prompts must be"),
    "latents_no_frames": _bad_latents(lambda z, m: (z, {k: v for k, v in m.items() if k != "num_frames"}),
                                      "metadata lacks 'num_frames'"),
    "latents_bad_samples": _bad_latents(lambda z, m: (z, {**m, "num_samples": "-2"}), "num_samples must be"),
    "latents_channels": _bad_latents(lambda z, m: (torch.cat([z, z], 1), m), "32-channel latents but the VAE"),
    "latents_nan": _bad_latents(_nan_at, "holds 1 NaN or infinite value"),
    "latents_fps_nan": _bad_latents(lambda z, m: (z, {**m, "fps": "nan"}), "metadata fps must be"),
    "latents_with_prompt": (["--from-latents", "x.safetensors", "--prompt", "b"], "do not pass --prompt"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, tmp_path, capsys, damaged, first_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    row = BAD[case]
    flags, expected = row(tmp_path, damaged, first_run) if callable(row) else row
    out = tmp_path / "new" / "dir"
    if "--from-latents" in flags:
        argv = ["--output", out] + SIZE[8:] + flags  # decoding takes no sampling flags
        if "--prompt" not in flags:
            argv += ["--vae", _shipped("vae")]
    else:
        argv = ["--prompt", "a cat", "--model", MODEL, "--output", out] + SIZE + flags
    before, shipped = tree_snapshot(tmp_path), _stats(MODEL)
    code, stdout, err = _run(argv, capsys)
    _one_error(code, err, expected)
    assert stdout == ""
    assert tree_snapshot(tmp_path) == before  # no output, no temporary file, no created folder; inputs unchanged
    assert _stats(MODEL) == shipped


def test_second_run_never_overwrites(first_run, capsys):
    out, _ = first_run
    first = out / "000-a-cat.mp4"
    before = first.read_bytes()
    code, stdout, err = _run(["--prompt", "a cat", "--model", MODEL, "--output", out, "--seed", "5"] + SIZE, capsys)
    # only the shipped model's one-line note: "a cat" is outside what it was trained on (coloured shapes)
    assert code == 0 and err.startswith("note: the shipped model only knows") and err.count("\n") == 1, err
    assert sorted(os.listdir(out)) == ["000-a-cat-1.mp4", "000-a-cat.mp4"]
    assert first.read_bytes() == before and (out / "000-a-cat-1.mp4").read_bytes() != before
    assert stdout.startswith(f"{out / '000-a-cat-1.mp4'}: 5 frames 32x32 @ 8 fps")


def test_first_run_shows_decode_progress_and_model_fps(first_run):
    out, lat = first_run
    _, meta = cli.load_latents(str(lat))
    assert float(meta["fps"]) == 8.0  # the model folder's setting, as --help says
    help_text = " ".join(cli.build_parser().format_help().split())
    assert "--fps FPS frame rate of the files, (0, 1000] (default: the model folder's setting, else 18" in help_text
    assert "--steps STEPS sampling steps, 1..1000 (default: the model folder's setting, else 100)" in help_text


def test_decode_progress_bar_unless_quiet(first_run, tmp_path, capsys):
    _, lat = first_run
    code, _, err = _run(["--from-latents", lat, "--output", tmp_path / "a", "--device", "cpu"], capsys)
    assert code == 0 and "decode" in err and "frame" in err
    code, _, err = _run(["--from-latents", lat, "--output", tmp_path / "b", "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and err == ""


def test_explicit_file_needs_overwrite(first_run, tmp_path, capsys):
    _, lat = first_run
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"precious")
    argv = ["--from-latents", lat, "--output", target, "--quiet", "--device", "cpu"]
    code, _, err = _run(argv, capsys)
    _one_error(code, err, "exists: pass --overwrite")
    assert target.read_bytes() == b"precious"
    code, stdout, err = _run(argv + ["--overwrite"], capsys)
    assert code == 0 and err == "" and stdout.startswith(f"{target}: 5 frames 32x32 @ 8 fps")
    assert target.read_bytes()[4:8] == b"ftyp" and sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_nan_latents_after_sampling_write_nothing(tmp_path, capsys, monkeypatch):
    from opensora.pipelines.text_to_video import OpenSoraPipeline

    monkeypatch.setattr(OpenSoraPipeline, "denoise", lambda self, noise, *a, **k: noise * float("nan"))
    out, lat = tmp_path / "new" / "dir", tmp_path / "z.safetensors"
    code, stdout, err = _run(["--prompt", "a cat", "--model", MODEL, "--output", out, "--save-latents", lat] + SIZE,
                             capsys)
    _one_error(code, err, "the latents sampled for prompt 1 ('a cat') holds")
    assert "nothing was written" in err and os.listdir(tmp_path) == []


def test_nan_frames_are_not_written(first_run, tmp_path, capsys, monkeypatch):
    from wfvae import WFVAE

    def infinite(self, chunks, tile=None, tile_overlap=None):
        for z in chunks:
            yield torch.full((z.shape[0], 3, 1 + 4 * (z.shape[2] - 1), 8 * z.shape[3], 8 * z.shape[4]), float("inf"))

    monkeypatch.setattr(WFVAE, "decode_stream", infinite)  # clamping would hide infinite frames
    out = tmp_path / "new"
    code, stdout, err = _run(["--from-latents", first_run[1], "--output", out, "--quiet", "--device", "cpu"], capsys)
    _one_error(code, err, f"the decoded frames for {out / '000-a-cat.mp4'} holds")
    assert os.listdir(tmp_path) == []


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    import wfvae.io.video as video_io
    import opensora.cli.sample as cli

    def slow_commit(tmp, path, _commit=video_io.commit):  # the video is written, not yet renamed
        print("WRITING", flush=True)
        time.sleep(60)
        _commit(tmp, path)

    video_io.commit = slow_commit
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_while_writing_leaves_nothing(first_run, tmp_path):
    out = tmp_path / "new" / "dir"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, "--from-latents", str(first_run[1]), "--output",
                             str(out), "--quiet", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        assert [n for n in os.listdir(out) if n.startswith(".") and ".part" in n]  # writing had started
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip() == "error: interrupted; no output was written"
    assert os.listdir(tmp_path) == []  # no .part file, and the folders it created are gone


def test_help_imports_no_torch():
    code = ("import sys, opensora.cli.sample as c; c.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_condition_choices_match_the_models():
    from opensora.cli.condition_args import CONTROL_KINDS, MASK_TYPES
    from opensora.pipelines.control_signals import CONTROL_KINDS as KINDS
    from opensora.pipelines.masks import MaskType

    assert MASK_TYPES == tuple(m.value for m in MaskType) and CONTROL_KINDS == KINDS


def test_tools_script_help_is_the_cli():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sample_t2v.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--overwrite" in done.stdout
