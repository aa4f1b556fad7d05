"""The shared command-line contract (wfvae.cli_support): output checks, temporary files, folders, signals."""
import math
import os
import signal

import pytest
import torch

import wfvae.cli_support as cs


def _run(body):
    return cs.run_cli(body)


def test_usage_error_is_one_line_and_exit_2(capsys):
    def body():
        raise cs.UsageError("--foo must be > 0")

    assert _run(body) == 2
    err = capsys.readouterr().err
    assert err == "error: --foo must be > 0\n"


def test_unexpected_errors_are_one_line_too(capsys):
    def body():
        raise RuntimeError("shape mismatch\nlong torch detail\nmore")

    assert _run(body) == 2
    assert capsys.readouterr().err == "error: shape mismatch\n"


def test_output_checks(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    out = cs.Outputs(overwrite=False, inputs=[str(src)])
    with pytest.raises(cs.UsageError, match="is the input"):
        out.check(str(src))
    with pytest.raises(cs.UsageError, match="is the input"):
        out.check(str(link))  # a link to the input is the input
    with pytest.raises(cs.UsageError, match="is the input"):
        out.check(str(tmp_path / "." / "in.mp4"))
    other = tmp_path / "other.mp4"
    other.write_bytes(b"keep")
    with pytest.raises(cs.UsageError, match="--overwrite"):
        out.check(str(other))
    assert cs.Outputs(overwrite=True).check(str(other)) == str(other)
    with pytest.raises(cs.UsageError, match="must end with"):
        out.check(str(tmp_path / "x.avi"), suffixes=(".mp4",))
    with pytest.raises(cs.UsageError, match="longer than"):
        out.check(str(tmp_path / ("a" * 300 + ".mp4")))
    assert out.check(str(tmp_path / ("a" * 240 + ".mp4")))  # long but valid
    with pytest.raises(cs.UsageError, match="is a folder"):
        out.check(str(tmp_path))
    with pytest.raises(cs.UsageError, match="not a folder"):
        out.check(str(other / "sub" / "x.mp4"))
    with pytest.raises(cs.UsageError, match="cannot write"):
        out.check("/proc/x.mp4")  # read-only for everyone, root included
    assert other.read_bytes() == b"keep" and src.read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "link.mp4", "other.mp4"]  # probes removed


def test_failed_command_removes_its_folders_and_temp_files(tmp_path, capsys):
    target = tmp_path / "new" / "dir" / ("b" * 240 + ".mp4")
    seen = {}

    def body():
        out = cs.Outputs()
        out.check(str(target))
        out.make_parent(str(target))
        tmp = cs.temp_path(str(target))
        assert len(os.path.basename(tmp)) < 30
        open(tmp, "wb").write(b"partial")
        seen["tmp"] = tmp
        raise ValueError("broke while writing")

    assert _run(body) == 2
    assert not os.path.exists(seen["tmp"])
    assert list(tmp_path.iterdir()) == []  # new/ and new/dir/ are gone
    assert capsys.readouterr().err == "error: broke while writing\n"


def test_success_keeps_folders_and_commits(tmp_path):
    target = tmp_path / "a" / "out.bin"

    def body():
        out = cs.Outputs()
        out.make_parent(str(target))
        tmp = cs.temp_path(str(target))
        open(tmp, "wb").write(b"done")
        cs.commit(tmp, str(target))

    assert _run(body) == 0
    assert target.read_bytes() == b"done"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["out.bin"]


def test_sigterm_cleans_up_and_exits_143(tmp_path, capsys):
    target = tmp_path / "made" / "out.bin"

    def body():
        out = cs.Outputs()
        out.make_parent(str(target))
        open(cs.temp_path(str(target)), "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached: the handler raises")

    old = signal.getsignal(signal.SIGTERM)
    assert _run(body) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == old  # handler restored
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.startswith("error: interrupted")


def test_number_and_tensor_checks():
    cs.check_finite_number(7.5, "--guidance", 0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(cs.UsageError, match="finite"):
            cs.check_finite_number(bad, "--guidance", 0)
    with pytest.raises(cs.UsageError, match="> 0"):
        cs.check_finite_number(0.0, "--fps", 0, low_open=True)
    with pytest.raises(cs.UsageError, match="<= 1"):
        cs.check_finite_number(2.0, "--x", 0, 1)
    cs.check_finite_tensor(torch.zeros(3), "latents")
    cs.check_finite_tensor(torch.zeros(3, dtype=torch.long), "ids")
    z = torch.zeros(4)
    z[2] = math.nan
    with pytest.raises(cs.UsageError, match="latents holds 1 NaN"):
        cs.check_finite_tensor(z, "latents")


@pytest.mark.parametrize("text", ["", "  ", "gpu", "cuda:x", "mps", "tpu:0"])
def test_bad_devices(text):
    with pytest.raises(cs.UsageError, match="--device"):
        cs.parse_device(text)


def test_devices_and_dtypes():
    assert cs.parse_device("cpu").type == "cpu"
    assert cs.parse_dtype(None, torch.device("cpu")) is torch.float32
    assert cs.parse_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(cs.UsageError, match="--dtype"):
        cs.parse_dtype("float64", torch.device("cpu"))
