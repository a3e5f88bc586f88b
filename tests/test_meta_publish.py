"""meta_publish: each frame's results as one JSON line, the video passed through untouched."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIKES
from tests.results_helpers import run_results
from tests.test_meta import results_for
from torchstream.gst import Gst
from torchstream.gst.meta import write_results
from torchstream.results.data import FrameResults
from torchstream.results.publish import CLOCK_TIME_NONE, frame_record

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = REPO / ".venv" / "bin" / "torchstream"
W, H = 640, 272  # bikes.mp4
EMPTY_FRAME = 2


def write_varied(buf, index):
    if index != EMPTY_FRAME:
        write_results(buf, results_for(index), W, H)


def classification_dict(c) -> dict:
    return {"attribute": c.attribute, "label": c.label, "label_id": c.label_id,
            "confidence": c.confidence}


def test_one_line_per_frame_with_the_values_written_upstream(bikes_frames, tmp_path):
    out = tmp_path / "results.jsonl"
    frames = bikes_frames[:5]
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! video/x-raw,format=I420 ! "
        f"meta_publish file-path={out} ! videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=sink",
        frames, writers={"w": write_varied},
    )
    assert run.result.ok, run.error
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(frames) == len(run.per_sink["sink"])
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["frame"] == i
        assert record["pts"] == i * Gst.SECOND // 25 == run.per_sink["sink"][i].pts
        assert record["duration"] == Gst.SECOND // 25
        assert (record["width"], record["height"]) == (W, H)
        if i == EMPTY_FRAME:
            assert (record["regions"], record["classifications"], record["models"]) == (
                [], [], [])
            continue
        want = results_for(i)
        assert record["classifications"] == [classification_dict(c)
                                             for c in want.classifications]
        assert record["models"] == [{"name": m.name, "layers": list(m.layers)}
                                    for m in want.models]
        assert len(record["regions"]) == len(want.regions) == 3
        for got, region in zip(record["regions"], want.regions, strict=True):
            assert got["id"] == region.region_id and got["parent_id"] == region.parent_id
            assert (got["label"], got["label_id"]) == (region.label, region.label_id)
            assert got["confidence"] == region.confidence  # bit for bit
            assert got["box"] == {"x_min": region.x_min, "y_min": region.y_min,
                                  "x_max": region.x_max, "y_max": region.y_max}
            x, y, w, h = region.pixels(W, H)
            assert got["pixels"] == {"x": x, "y": y, "w": w, "h": h}
            assert got["classifications"] == [classification_dict(c)
                                               for c in region.classifications]
    # non-ASCII labels are written as UTF-8 text
    assert "rouge foncé" in lines[0]


def test_the_video_passes_through_untouched(bikes_frames, tmp_path):
    out = tmp_path / "results.jsonl"
    frames = bikes_frames[:3]
    run = run_results(
        f"appsrc name=src ! test_meta_writer name=w ! meta_publish file-path={out} ! "
        "appsink name=sink",
        frames, writers={"w": write_varied},
    )
    assert run.result.ok, run.error
    received = run.per_sink["sink"]
    assert len(received) == len(frames)
    for i, (got, frame) in enumerate(zip(received, frames, strict=True)):
        assert np.array_equal(got.arrays[0], frame.reshape(-1))
        assert got.results == (results_for(i) if i != EMPTY_FRAME else FrameResults())
        assert "format=(string)RGB" in got.caps
    assert len(out.read_text().splitlines()) == len(frames)


@pytest.mark.slow
def test_stdout_mode_with_torchstream_launch():
    done = subprocess.run(
        [str(TORCHSTREAM), "launch", "-q",
         f"filesrc location={BIKES} ! decodebin ! meta_publish ! fakesink sync=false"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]  # nothing else there
    assert len(records) == 250  # every frame of bikes.mp4
    assert [r["frame"] for r in records] == list(range(250))
    pts = [r["pts"] for r in records]
    # the decoder's timestamps (25 fps, the stream starts at 80 ms)
    assert pts == [80_000_000 + i * 40_000_000 for i in range(250)]
    assert {(r["width"], r["height"]) for r in records} == {(W, H)}
    assert all(r["regions"] == [] and r["classifications"] == [] for r in records)


def test_an_unwritable_path_is_an_error_naming_it(bikes_frames, tmp_path):
    for path in (tmp_path / "no-such-dir" / "out.jsonl", tmp_path):
        start = time.monotonic()
        run = run_results(f"appsrc name=src ! meta_publish file-path={path} ! appsink name=sink",
                          bikes_frames[:2], timeout=20)
        assert not run.result.ok
        assert not run.result.timed_out
        assert time.monotonic() - start < 5
        assert "meta_publish" in run.error and f"'{path}'" in run.error
        assert run.per_sink["sink"] == []


def test_unknown_times_and_sizes_are_null():
    record = frame_record(results_for(0), 7, CLOCK_TIME_NONE, CLOCK_TIME_NONE, None, None)
    assert (record["frame"], record["pts"], record["duration"]) == (7, None, None)
    assert (record["width"], record["height"]) == (None, None)
    assert [r["pixels"] for r in record["regions"]] == [None, None, None]
    assert record["regions"][0]["box"]["x_min"] == results_for(0).regions[0].x_min


def test_the_dlstreamer_layout_holds_the_same_results(bikes_frames, tmp_path):
    """format=dlstreamer: gvametaconvert's layout (resolution, timestamp, objects with pixel
    box, region_id, roi_type, detection, each region classification under its attribute;
    frame classifications as tensors), the values those of the default layout."""
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "dls.jsonl"
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! "
        f"meta_publish file-path={ours} ! meta_publish format=dlstreamer file-path={theirs} ! "
        "appsink name=sink", bikes_frames[:4], writers={"w": write_varied})
    assert run.result.ok, run.error
    for mine, line in zip(ours.read_text().splitlines(), theirs.read_text().splitlines(),
                          strict=True):
        a, b = json.loads(mine), json.loads(line)
        assert b["resolution"] == {"width": W, "height": H} and b["timestamp"] == a["pts"]
        assert len(b["objects"]) == len(a["regions"])
        for obj, region in zip(b["objects"], a["regions"], strict=True):
            assert (obj["x"], obj["y"], obj["w"], obj["h"]) == tuple(region["pixels"].values())
            assert obj["region_id"] == region["id"] and obj["roi_type"] == region["label"]
            assert obj["detection"] == {"bounding_box": region["box"],
                                        "confidence": region["confidence"],
                                        "label_id": region["label_id"],
                                        "label": region["label"]}
            for c in region["classifications"]:
                assert obj[c["attribute"]] == {"label": c["label"], "label_id": c["label_id"],
                                               "confidence": c["confidence"]}
        assert b.get("tensors", []) == [
            {"name": c["attribute"], "label": c["label"], "label_id": c["label_id"],
             "confidence": c["confidence"]} for c in a["classifications"]]
    assert any(b["objects"] for b in map(json.loads, theirs.read_text().splitlines()))


def test_an_unknown_format_is_refused(bikes_frames):
    run = run_results("appsrc name=src ! meta_publish name=pub format=xml ! appsink name=sink",
                      bikes_frames[:1])
    assert not run.result.ok
    assert "property 'format' must be one of torchstream, dlstreamer" in run.error
