"""A camera that goes away comes back: an RTSP server (GStreamer's rtsp-server, in its own
process) is stopped for 5 s and started again on the same port; the service shows the
stream ``reconnecting`` within the stall time, ``running`` again within 10 s of the server's
return with its frames counting on, and the other stream never stops."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import BIKES
from tests.serve_helpers import LABELS, REPO, Service, wait_for
from tests.test_serve import metrics

pytestmark = pytest.mark.e2e
STALL = 3.0


class RtspServer:
    def __init__(self, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.rtsp_server", str(BIKES), str(port)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("ready "), line + self.process.stdout.read()
        self.port = int(line.split()[1])
        self.url = f"rtsp://127.0.0.1:{self.port}/video"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def test_a_camera_that_goes_away_is_shown_reconnecting_and_comes_back(tmp_path,
                                                                      mobilenet_weights):
    camera = RtspServer()
    streams = tmp_path / "streams.toml"
    streams.write_text(
        f"[run]\nstall-timeout = {STALL}\nrestart-delay = 0.5\nreconnect-max-delay = 2\n"
        "[defaults]\nelement = \"video_inference\"\n"
        f"properties = {{ model = \"torchvision.models.mobilenet_v2\", "
        f"model-weights = \"{mobilenet_weights}\", labels-file = \"{LABELS}\" }}\n"
        f"[[stream]]\nname = \"camera\"\nsource = \"{camera.url}\"\n"
        f"[[stream]]\nname = \"file\"\nsource = \"{BIKES}\"\nloop = true\nsync = true\n")
    service = Service(tmp_path, str(streams))
    counts: list[tuple[float, int]] = []  # the file stream's frames, twice a second
    watching = threading.Event()

    def watch() -> None:
        while not watching.wait(0.5):
            counts.append((time.monotonic(), service.streams()["file"]["frames"]))

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        wait_for(lambda: service.streams()["camera"]["state"] == "running"
                 and service.streams()["camera"]["frames"] > 20, 120, "the camera's frames")
        watcher.start()
        before = service.streams()["camera"]
        camera.stop()
        stopped = time.monotonic()
        wait_for(lambda: service.streams()["camera"]["state"] == "reconnecting", STALL + 2,
                 "the camera shown reconnecting")
        shown = time.monotonic() - stopped
        figures = metrics(service)
        assert figures[("torchstream_stream_up", (("stream", "camera"),))] == 0
        assert service.client.get("/readyz").status_code == 503
        assert "camera" in service.client.get("/readyz").json()["detail"]
        time.sleep(max(0.0, stopped + 5 - time.monotonic()))
        camera = RtspServer(camera.port)
        back = time.monotonic()
        wait_for(lambda: service.streams()["camera"]["state"] == "running"
                 and service.streams()["camera"]["frames"] > before["frames"] + 5, 10,
                 "the camera running again within 10 s of its return")
        running_again = time.monotonic() - back
        after = service.streams()["camera"]
        assert after["restarts"] > before["restarts"]
        assert metrics(service)[("torchstream_stream_up", (("stream", "camera"),))] == 1
        time.sleep(1.0)
    finally:
        watching.set()
        camera.stop()
        code = service.stop()
    assert code == 0, service.log[-3000:]
    print(f"reconnecting shown {shown:.1f} s after the server stopped, running again "
          f"{running_again:.1f} s after it came back")
    assert "torchstream: camera: reconnecting" in service.log
    # the file stream never stopped: more frames in every second of the camera's outage
    assert len(counts) >= 10
    for (t0, n0), (t1, n1) in zip(counts, counts[2:], strict=False):
        assert n1 > n0, f"the file stream stood still from {t0:.1f} to {t1:.1f} s"
