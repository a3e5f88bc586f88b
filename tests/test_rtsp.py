"""An RTSP camera end to end: a real RTSP server (GStreamer's rtsp-server, in its own process)
serves bikes.mp4 as H.264 on 127.0.0.1; rtspsrc ! decodebin ! object_detect ! meta_publish
receives it; the server going away ends the stream cleanly, with rtspsrc's warning."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import BIKES
from torchstream.environment import MODEL_PROC_DIR
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end

REPO = Path(__file__).resolve().parents[1]
BIKES_FRAMES = 250


class Server:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.rtsp_server", str(BIKES), "0"], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("ready "), line + self.process.stdout.read()
        self.url = f"rtsp://127.0.0.1:{int(line.split()[1])}/video"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def server():
    running = Server()
    yield running
    running.stop()


def detect_from(url: str, centernet: Path, out: Path):
    pipeline = Gst.parse_launch(
        f"rtspsrc location={url} protocols=tcp ! decodebin ! "
        f"object_detect name=det model={centernet} "
        f"model-proc={MODEL_PROC_DIR / 'centernet_coco.json'} threshold=0.35 ! "
        f"meta_publish file-path={out} ! fakesink name=sink")
    counted = []
    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, lambda pad, info: counted.append(1) or Gst.PadProbeReturn.OK)
    return pipeline, counted


@pytest.mark.slow
def test_objects_are_detected_on_an_rtsp_stream(server, centernet, tmp_path):
    out = tmp_path / "rtsp.jsonl"
    pipeline, counted = detect_from(server.url, centernet, out)
    result = run_to_end(pipeline, 90)
    assert result.ok, result.error
    skipped = pipeline.get_by_name("det").get_property("inference-skipped")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # the stream ends when the file does: every frame received comes out, in order
    assert len(lines) == len(counted) >= BIKES_FRAMES - 10
    assert [f["pts"] for f in lines] == sorted(f["pts"] for f in lines)
    labels = [r["label"] for f in lines for r in f["regions"]]
    assert labels.count("car") > 20, labels[:50]
    # rtspsrc is live: the detector (slower than 25 fps here) takes the newest frame
    with_regions = sum(bool(f["regions"]) for f in lines)
    print(f"rtsp: {len(lines)} frames, {skipped} passed without inference, {with_regions} "
          f"with regions")
    assert with_regions <= len(lines) - skipped


@pytest.mark.slow
def test_the_server_going_away_ends_the_stream_cleanly(server, centernet, tmp_path):
    out = tmp_path / "cut.jsonl"
    pipeline, counted = detect_from(server.url, centernet, out)
    threading.Timer(6.0, server.stop).start()
    result = run_to_end(pipeline, 60)
    assert not result.timed_out
    assert result.ok, result.error  # rtspsrc ends the stream (EOS) after a warning
    assert any("rtspsrc" in w and "Could not read from resource" in w
               for w in result.warnings), result.warnings
    lines = out.read_text().splitlines()
    assert 0 < len(lines) == len(counted) < BIKES_FRAMES
