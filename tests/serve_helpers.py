"""A ``torchstream serve`` process for the tests: started on a free port in its own process,
read through a real HTTP client (httpx), stopped with SIGTERM as an operator would."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.conftest import BIKES, COCKATOO, MOBILENET_V2_WEIGHTS
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = REPO / ".venv" / "bin" / "torchstream"
LABELS = REPO / "src" / "torchstream" / "data" / "labels" / "imagenet_2012.txt"
MEDIA = [BIKES.parent, COCKATOO.parent]
MODELS = [MOBILENET_V2_WEIGHTS.parent, REPO / "models"]


def classifier(source: Path | str, name: str, **keys) -> dict:
    """A mobilenet_v2 stream as the API takes it."""
    return {"name": name, "source": str(source), "element": "video_inference",
            "properties": {"model": "torchvision.models.mobilenet_v2",
                           "model-weights": str(MOBILENET_V2_WEIGHTS),
                           "labels-file": str(LABELS)}, **keys}


class Service:
    """``torchstream serve`` with the given arguments, out-dir and state file in ``folder``."""

    def __init__(self, folder: Path, *args: str, token: str = "") -> None:
        self.folder = folder
        self.lines: list[str] = []
        command = [str(TORCHSTREAM), "serve", "--port", "0", "--out-dir", str(folder / "out"),
                   "--state-file", str(folder / "state.json")]
        for media in MEDIA:
            command += ["--media-dir", str(media)]
        for models in MODELS:
            command += ["--models-dir", str(models)]
        if token:
            command += ["--token", token]
        self.process = subprocess.Popen([*command, *args], cwd=REPO, stderr=subprocess.PIPE,
                                        text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = wait_for(lambda: next((x for x in self.lines if "serving" in x), None), 120,
                        "the service to listen (or it ended)" if self.process.poll() is None
                        else "the service, which ended")
        self.url = re.search(r"http://\S+?/", line).group(0).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def streams(self) -> dict[str, dict]:
        answer = self.client.get("/api/streams")
        assert answer.status_code == 200, answer.text
        return {s["name"]: s for s in answer.json()}

    def add(self, stream: dict) -> dict:
        answer = self.client.post("/api/streams", json=stream)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            self.process.kill()
            self.client.close()
        self._reader.join(5)
        return code


def jsonl_records(path: Path) -> list[dict]:
    text = path.read_text()
    assert not text or text.endswith("\n"), "the file ends inside a record"
    return [json.loads(line) for line in text.splitlines()]
