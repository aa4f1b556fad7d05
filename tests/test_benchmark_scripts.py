"""The benchmark plumbing that the GPU table relies on, checked on the CPU (the table itself needs a GPU:
``benchmarks/gpu_table.sh``; ``GPU_TABLE_SMOKE=1`` runs it on tiny models by hand)."""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402


def _child(case, run_case, capsys):
    args = argparse.Namespace(case=json.dumps(case))
    assert common.run_child_case(args, run_case)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_grouped_child_runs_every_case_and_keeps_going_after_a_failure(capsys):
    def run_case(spec):
        if spec["n"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 64 GiB\nmore lines")
        return {"median_s": spec["n"] / 10}

    out = _child([{"n": 1}, {"n": 2}, {"n": 3}], run_case, capsys)
    assert out == [{"median_s": 0.1}, {"error": "RuntimeError: CUDA out of memory. Tried to allocate 64 GiB"},
                   {"median_s": 0.3}]
    assert _child({"n": 3}, run_case, capsys) == {"median_s": 0.3}  # one case: one dict, as before
    assert not common.run_child_case(argparse.Namespace(case=None), run_case)


def test_failed_grouped_child_reports_an_error_for_each_case(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import sys\nsys.stderr.write('boom: no device\\n')\nsys.exit(1)\n")
    assert common.run_in_subprocess(str(script), [{"a": 1}, {"a": 2}]) == [{"error": "boom: no device"}] * 2
    assert common.run_in_subprocess(str(script), {"a": 1}) == {"error": "boom: no device"}


def test_gpu_table_refuses_a_folder_that_is_not_the_published_checkout(tmp_path):
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_table.sh"), str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error:") and str(tmp_path) in out.stderr
