"""Annotation builder: the sample clip's fields, scene cuts on a synthetic clip, the CLI's errors, and round trip
into the data module."""
import importlib.util
import json
import os

import pytest
import torch

from opensora.data.annotations import annotate, build_annotations, motion_and_cuts
from opensora.data.datasets import load_entries
from wfvae.io.video import VideoWriter

ROOT = os.path.join(os.path.dirname(__file__), "..")
CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")



def load_tool():
    spec = importlib.util.spec_from_file_location("build_annotations",
                                                  os.path.join(ROOT, "tools", "build_annotations.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    os.makedirs(folder / "sub")
    os.symlink(os.path.abspath(CLIP), folder / "sub" / "bunny.mp4")
    (folder / "sub" / "bunny.txt").write_text("a big rabbit wakes up\n")
    return folder


def test_tool_on_the_sample_clip(clip_folder, tmp_path):
    out = tmp_path / "anno.json"
    assert load_tool().main([str(clip_folder), "-o", str(out)]) == 0
    entries = json.loads(out.read_text())
    assert len(entries) == 1
    entry = entries[0]
    assert {"path", "cap", "resolution", "num_frames", "fps", "motion_score", "scene_cuts"} <= set(entry)
    assert entry["path"] == os.path.join("sub", "bunny.mp4") and entry["cap"] == "a big rabbit wakes up"
    assert entry["fps"] == 25 and entry["num_frames"] == 75
    assert entry["resolution"] == {"height": 270, "width": 480}
    assert entry["motion_score"] > 0 and isinstance(entry["scene_cuts"], list)
    loaded = load_entries([f"{out}"])  # a JSON's paths are relative to its own folder
    assert loaded[0]["path"] == str(tmp_path / "sub" / "bunny.mp4")


def test_tool_errors(tmp_path, capsys):
    tool = load_tool()
    assert tool.main([str(tmp_path / "missing"), "-o", str(tmp_path / "a.json")]) == 2
    os.makedirs(tmp_path / "empty")
    assert tool.main([str(tmp_path / "empty"), "-o", str(tmp_path / "a.json")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.mp4").write_bytes(b"not a video")
    assert tool.main([str(tmp_path / "bad"), "-o", str(tmp_path / "a.json")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert not (tmp_path / "a.json").exists()


def test_scene_cuts_and_motion_on_a_synthetic_clip(tmp_path):
    path = tmp_path / "two_scenes.mp4"
    frames = torch.full((3, 16, 32, 32), -0.8)
    frames[:, 8:] = 0.8  # a hard cut at frame 8
    frames[:, 8:, :, :4] = -0.8
    with VideoWriter(path, fps=8) as writer:
        writer.write(frames)
    (tmp_path / "two_scenes.txt").write_text("cut")
    diffs, cuts = motion_and_cuts(str(path))
    assert cuts == [8] and len(diffs) == 15 and max(diffs) == diffs[7]
    scenes = annotate(str(path), str(tmp_path), split_scenes=True)
    assert [s["cut"] for s in scenes] == [[0, 8], [8, 16]]
    assert all(s["motion_score"] < 1 for s in scenes)  # no motion inside a scene
    entries = build_annotations([str(tmp_path)])
    assert entries[0]["scene_cuts"] == [8] and entries[0]["fps"] == 8
