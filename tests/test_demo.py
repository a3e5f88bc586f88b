"""`make demo`'s script on the real videos: annotated H.264 videos and one JSON line a frame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import decode_frames

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def run_demo(part: str, out_dir: Path) -> subprocess.CompletedProcess:
    # the defaults users get: no thread-count variables
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, "-m", "scripts.demo", "--part", part,
                           "--out-dir", str(out_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_demo_writes_an_annotated_video_and_json_lines(tmp_path):
    done = run_demo("classify", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"annotated video: {tmp_path / 'demo.mp4'}" in done.stdout
    lines = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(lines) == 280  # every frame of cockatoo.mp4
    assert [line["frame"] for line in lines] == list(range(280))
    frame200 = lines[200]["classifications"][0]
    assert frame200["label"] == "sulphur-crested cockatoo" and frame200["confidence"] > 0.7
    video = decode_frames(tmp_path / "demo.mp4", 300)
    assert len(video) == 280 and video[0].shape == (720, 1280, 3)


def test_demo_detects_and_classifies_the_cars_of_the_street_video(tmp_path, centernet):
    done = run_demo("detect", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"annotated video: {tmp_path / 'detect.mp4'}" in done.stdout
    lines = [json.loads(line) for line in (tmp_path / "detect.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(250))  # every frame of bikes.mp4
    cars = [r for line in lines for r in line["regions"] if r["label"] == "car"]
    assert len(cars) >= 150  # 186 measured at threshold 0.35 (some stretches have no car)
    assert all(r["confidence"] >= 0.35 for line in lines for r in line["regions"])
    # object_classify labelled every car (object-class=car), and only cars
    assert all(len(r["classifications"]) == 1 for r in cars)
    others = [r for line in lines for r in line["regions"] if r["label"] != "car"]
    assert others and all(r["classifications"] == [] for r in others)
    video = decode_frames(tmp_path / "detect.mp4", 300)
    assert len(video) == 250 and video[0].shape == (272, 640, 3)


def test_demo_draws_the_cyclist_s_pose(tmp_path, movenet):
    done = run_demo("pose", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "pose.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(250))
    posed = [i for i, line in enumerate(lines) if line["regions"]]
    assert len(posed) >= 40  # 59 measured: the frames where a person is clearly in view
    assert 120 in posed  # the picture in the README
    person = lines[120]["regions"][0]
    assert person["label"] == "person" and len(person["keypoints"]["points"]) == 17
    video = decode_frames(tmp_path / "pose.mp4", 300)
    assert len(video) == 250
