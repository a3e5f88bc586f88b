"""meta_publish method=mqtt against a real broker (Debian's mosquitto, started on a free
loopback port for each test): every frame's record arrives once and in order, with the same
content as the file output; no broker is a named error; a broker restarted mid-stream leaves
the pipeline running and publishing resumes."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import MOBILENET_V2_WEIGHTS
from torchstream.gst import Gst
from torchstream.pipeline import run_to_end

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC = "torchstream/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class Subscriber:
    """Collects the records published to TOPIC; subscribes again after a reconnection."""

    def __init__(self, port: int) -> None:
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the subscription is acknowledged

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.records.append(json.loads(message.payload))

    def wait_for(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= count:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # anything more (a duplicate) would arrive now
        with self.lock:
            return list(self.records)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker():
    running = Broker(free_port())
    running.start()
    yield running
    running.stop()


def test_every_frame_is_published_once_in_order(broker, tmp_path):
    subscriber = Subscriber(broker.port)
    out = tmp_path / "frames.jsonl"
    try:
        result = run_to_end(Gst.parse_launch(
            "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=320,height=240 ! "
            "video_inference model=torchvision.models.mobilenet_v2 "
            f"model-weights={MOBILENET_V2_WEIGHTS} engine=torch ! "
            f"meta_publish file-path={out} ! meta_publish method=mqtt "
            f"address=127.0.0.1:{broker.port} topic={TOPIC} ! fakesink"), 120)
        assert result.ok, result.error
        received = subscriber.wait_for(20)
    finally:
        subscriber.close()
    assert [r["frame"] for r in received] == list(range(20))
    # the same records as the file method writes, classifications included
    assert received == [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["classifications"] for r in received)


def test_no_broker_is_a_named_error():
    port = free_port()
    start = time.monotonic()
    result = run_to_end(Gst.parse_launch(
        f"videotestsrc num-buffers=5 ! meta_publish name=pub method=mqtt "
        f"address=127.0.0.1:{port} topic={TOPIC} max-connect-attempts=2 ! fakesink"), 60)
    assert not result.ok
    assert f"could not connect to the MQTT broker at 127.0.0.1:{port} after 2 attempts" \
        in result.error and "pub" in result.error, result.error
    assert time.monotonic() - start < 20


def test_publishing_resumes_after_the_broker_restarts(broker):
    """5 s of live video; the broker is down from 1.5 s to 2.5 s. The pipeline runs to its
    end; the subscriber (which reconnects too) gets frames from before the cut and up to the
    last one after it."""
    subscriber = Subscriber(broker.port)

    def restart():
        broker.stop()
        time.sleep(1.0)
        broker.start()

    timer = threading.Timer(1.5, restart)
    try:
        pipeline = Gst.parse_launch(
            "videotestsrc is-live=true num-buffers=150 ! video/x-raw,width=64,height=48,"
            f"framerate=30/1 ! meta_publish method=mqtt address=127.0.0.1:{broker.port} "
            f"topic={TOPIC} max-reconnect-interval=1 ! fakesink")
        timer.start()
        result = run_to_end(pipeline, 60)
        timer.join()
        assert result.ok, result.error
        received = subscriber.wait_for(150, timeout=10)
    finally:
        subscriber.close()
    frames = [r["frame"] for r in received]
    print(f"mqtt restart: {len(set(frames))} of 150 frames received, "
          f"{len(frames) - len(set(frames))} twice")
    assert frames and min(frames) == 0 and max(frames) == 149
    before = [f for f in frames if f < 30]
    after = [f for f in frames if f > 90]
    assert before and after == list(range(91, 150))  # after the restart: every frame, in order
