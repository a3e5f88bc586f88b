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
from torchstream.gst.pipeline import run_to_end

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC = "torchstream/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, port: int, args: list[str] | None = None) -> None:
        self.port = port
        self.args = args if args is not None else ["-p", str(port)]
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, *self.args],
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


@pytest.mark.slow
def test_publishing_resumes_after_the_broker_restarts(broker):
    """10 s of live video; the broker is down from 1.5 s to 2.5 s. The pipeline runs to its
    end; the subscriber (which reconnects too) gets the frames from before the cut, and every
    frame of the last 5 s, in order. What the broker passed on before the subscriber had
    subscribed again is lost to it (a broker without persistence keeps no session)."""
    subscriber = Subscriber(broker.port)

    def restart():
        broker.stop()
        time.sleep(1.0)
        broker.start()

    timer = threading.Timer(1.5, restart)
    try:
        pipeline = Gst.parse_launch(
            "videotestsrc is-live=true num-buffers=300 ! video/x-raw,width=64,height=48,"
            f"framerate=30/1 ! meta_publish method=mqtt address=127.0.0.1:{broker.port} "
            f"topic={TOPIC} max-reconnect-interval=1 ! fakesink")
        timer.start()
        result = run_to_end(pipeline, 60)
        timer.join()
        assert result.ok, result.error
        received = subscriber.wait_for(300, timeout=10)
    finally:
        subscriber.close()
    frames = [r["frame"] for r in received]
    print(f"mqtt restart: {len(set(frames))} of 300 frames received, "
          f"{len(frames) - len(set(frames))} twice")
    assert frames and min(frames) == 0 and max(frames) == 299
    before = [f for f in frames if f < 30]
    after = [f for f in frames if f >= 150]
    assert before and after == list(range(150, 300))  # well after the restart: every frame


def make_certificates(folder) -> dict:
    """A CA, and a server certificate for 127.0.0.1 signed by it (openssl)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=torchstream test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    for key in folder.glob("*.key"):
        key.chmod(0o644)  # mosquitto reads them as its own user
    return {name: folder / f"{name}.crt" for name in ("ca", "server")} | {
        "server_key": folder / "server.key"}


def test_publishing_over_tls_with_mqtt_config(tmp_path):
    certs = make_certificates(tmp_path)
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\ncafile {certs['ca']}\ncertfile {certs['server']}\n"
        f"keyfile {certs['server_key']}\nallow_anonymous true\n"
        "user root\n")  # as root, mosquitto would drop to a user who cannot enter tmp_path
    broker = Broker(port, ["-c", str(tmp_path / "mosquitto.conf")])
    broker.start()
    config = tmp_path / "mqtt.json"
    config.write_text(json.dumps({"tls": {"ca-file": str(certs["ca"])}}))
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"tls": {"ca-file": str(make_certificates(other_ca)["ca"])}}))
    try:
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscriber.tls_set(ca_certs=str(certs["ca"]))
        received = []
        subscriber.on_message = lambda c, u, m: received.append(json.loads(m.payload))
        subscriber.connect("127.0.0.1", port)
        subscriber.subscribe(TOPIC, qos=1)
        subscriber.loop_start()
        time.sleep(0.3)
        description = (f"videotestsrc num-buffers=10 ! meta_publish name=pub method=mqtt "
                       f"address=127.0.0.1:{port} topic={TOPIC} mqtt-config={{}} ! fakesink")
        result = run_to_end(Gst.parse_launch(description.format(config)), 30)
        assert result.ok, result.error
        deadline = time.monotonic() + 10
        while len(received) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        subscriber.disconnect()
        subscriber.loop_stop()
        assert [r["frame"] for r in received] == list(range(10))
        # a CA that did not sign the broker's certificate: the handshake fails, named
        refused = run_to_end(Gst.parse_launch(description.format(wrong)), 30)
        assert not refused.ok and "could not connect to the MQTT broker" in refused.error
        assert "CERTIFICATE_VERIFY_FAILED" in refused.error, refused.error
    finally:
        broker.stop()


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "must hold a JSON object"),
    ('{"tls": {"ca": "x"}}', "unknown keys tls.ca"),
    ('{"tls": {"ca-file": "/no/such.crt"}}', "tls.ca-file '/no/such.crt' is not a file"),
    ("{not json", "is not JSON"),
])
def test_a_bad_mqtt_config_is_refused(tmp_path, content, fragment):
    config = tmp_path / "mqtt.json"
    config.write_text(content)
    result = run_to_end(Gst.parse_launch(
        f"videotestsrc num-buffers=1 ! meta_publish name=pub method=mqtt mqtt-config={config} "
        "! fakesink"), 30)
    assert not result.ok and fragment in result.error and "mqtt-config" in result.error, \
        result.error
