"""`make demo`'s script on the real video: an annotated H.264 video and one JSON line a frame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import decode_frames

REPO = Path(__file__).resolve().parents[1]


def test_demo_writes_an_annotated_video_and_json_lines(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "scripts.demo", "--out-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"annotated video: {tmp_path / 'demo.mp4'}" in done.stdout
    lines = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(lines) == 280  # every frame of cockatoo.mp4
    assert [line["frame"] for line in lines] == list(range(280))
    frame200 = lines[200]["classifications"][0]
    assert frame200["label"] == "sulphur-crested cockatoo" and frame200["confidence"] > 0.7
    video = decode_frames(tmp_path / "demo.mp4", 300)
    assert len(video) == 280 and video[0].shape == (720, 1280, 3)
