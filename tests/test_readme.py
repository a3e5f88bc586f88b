"""The README's inference-bin examples run as written (on a short clip of the same video)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIKES, MOBILENET_V2_WEIGHTS
from tests.helpers import decode_frames, feed_frames
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 12


def bin_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The inference bins"):text.index("## The elements")]
    commands = []
    for block in re.findall(r"((?:\n    .*)+)", section):
        lines = [line[4:] for line in block.strip("\n").splitlines()]
        command = " ".join(line.rstrip("\\").strip() for line in lines)
        if command.startswith("gst-launch-1.0"):
            commands.append(command)
    return commands


def test_the_readme_has_one_example_per_bin():
    examples = bin_examples()
    for element in ("video_inference", "object_detect", "object_classify"):
        assert any(f" {element} " in e for e in examples), element


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    pipeline = Gst.parse_launch(f"appsrc name=src ! videoconvert ! x264enc ! mp4mux ! "
                                f"filesink location={path}")
    feed_frames(pipeline.get_by_name("src"), decode_frames(BIKES, CLIP_FRAMES, start=140))
    assert run_to_end(pipeline, 60).ok
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("index", range(len(bin_examples())))
def test_readme_bin_example_runs(index, clip, tmp_path, centernet):
    command = bin_examples()[index]
    command = command.replace("location=out/", f"location={tmp_path}/")
    command = command.replace("file-path=out/", f"file-path={tmp_path}/")
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin",
           "VIDEO": str(clip), "WEIGHTS": str(MOBILENET_V2_WEIGHTS)}
    done = subprocess.run(["bash", "-c", f'eval "$(.venv/bin/torchstream env)" && {command}'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (output,) = tmp_path.glob("*.mp4")
    assert len(decode_frames(output, 100)) == CLIP_FRAMES
    for jsonl in tmp_path.glob("*.jsonl"):  # the tracking example: ids on the cars
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(records) == CLIP_FRAMES
        ids = {r["object_id"] for rec in records for r in rec["regions"] if r["label"] == "car"}
        assert ids and None not in ids, ids
