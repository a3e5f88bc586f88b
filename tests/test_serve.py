"""``torchstream serve`` end to end: the service in its own process on a free port, a real
HTTP client; streams added over the API run real models on real video, the metrics equal the
status, the preview is the stream's frames as JPEG and MJPEG, results arrive as server-sent
events, a removed stream's file is complete and a restarted service brings its streams
back, carrying on where their files end."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BIKES, COCKATOO
from tests.serve_helpers import Service, classifier, jsonl_records, wait_for
from torchstream.environment import MODEL_PROC_DIR

pytestmark = pytest.mark.e2e
COCKATOO_FRAMES = 280


def metrics(service: Service) -> dict[tuple[str, tuple], float]:
    answer = service.client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def mjpeg_parts(service: Service, name: str, seconds: float) -> list[bytes]:
    """The JPEGs of ``seconds`` of a stream's MJPEG."""
    body = b""
    end = time.monotonic() + seconds
    with service.client.stream("GET", f"/api/streams/{name}/video.mjpeg") as answer:
        assert answer.status_code == 200
        boundary = answer.headers["content-type"].split("boundary=")[1]
        for chunk in answer.iter_bytes():
            body += chunk
            if time.monotonic() > end:
                break
    parts = []
    for part in body.split(f"--{boundary}\r\n".encode())[1:]:
        head, _, rest = part.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if len(rest) >= length:  # the last part may be cut off
            parts.append(rest[:length])
    return parts


def events(service: Service, name: str, count: int) -> list[tuple[str, dict]]:
    import json

    got = []
    with service.client.stream("GET", f"/api/streams/{name}/results") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in answer.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                got.append((event_id, json.loads(line[6:])))
                if len(got) >= count:
                    break
    return got


def test_streams_added_watched_removed_and_brought_back(tmp_path, centernet):
    service = Service(tmp_path)
    try:
        street = {"name": "street", "source": str(BIKES), "element": "object_detect",
                  "properties": {"model": str(centernet), "threshold": 0.35,
                                 "model-proc": str(MODEL_PROC_DIR / "centernet_coco.json")},
                  "loop": True, "jsonl": "street.jsonl"}
        added = service.add(street)
        assert added["name"] == "street" and added["state"] in ("starting", "running")
        service.add(classifier(COCKATOO, "bird", jsonl="bird.jsonl"))
        service.add(classifier(BIKES, "yard", jsonl="yard.jsonl", loop=True, sync=True))
        assert set(service.streams()) == {"street", "bird", "yard"}
        wait_for(lambda: service.streams()["bird"]["state"] == "finished", 180,
                 "bird to finish")
        wait_for(lambda: all(s["frames"] > 20 for s in service.streams().values()), 120,
                 "frames from every stream")

        # the metrics are the status: exactly, for a stream that has ended; between two
        # readings of the status for one that runs
        before = service.streams()
        figures = metrics(service)
        after = service.streams()
        bird = after["bird"]
        assert bird["frames"] == COCKATOO_FRAMES == len(jsonl_records(tmp_path / "out" /
                                                                      "bird.jsonl"))
        assert figures[("torchstream_frames_total", (("stream", "bird"),))] == bird["frames"]
        assert figures[("torchstream_stream_up", (("stream", "bird"),))] == 0
        running = figures[("torchstream_frames_total", (("stream", "street"),))]
        assert before["street"]["frames"] <= running <= after["street"]["frames"]
        assert figures[("torchstream_stream_up", (("stream", "street"),))] == 1
        assert figures[("torchstream_stream_restarts_total", (("stream", "street"),))] == 0

        def street_objects() -> dict[str, float]:
            return {dict(labels)["label"]: v for (n, labels), v in metrics(service).items()
                    if n == "torchstream_objects_total" and dict(labels)["stream"] == "street"}

        # CenterNet finds cars on bikes.mp4 (the counts grow as the stream runs)
        wait_for(lambda: street_objects().get("car", 0) > 5, 60,
                 "cars counted on the street stream")
        passes = [v for (n, labels), v in figures.items()
                  if n == "torchstream_inference_seconds_count"]
        assert passes and sum(passes) >= COCKATOO_FRAMES
        assert figures[("torchstream_latency_seconds_count", (("stream", "bird"),))] \
            == COCKATOO_FRAMES
        assert ("process_resident_memory_bytes", ()) in figures

        # the preview: one frame, and 3 s of MJPEG, each a JPEG of the frame's size
        answer = service.client.get("/api/streams/street/frame.jpg")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert jpeg(answer.content).shape == (272, 640, 3)
        parts = mjpeg_parts(service, "street", 3.0)
        assert len(parts) >= 4, len(parts)
        assert all(jpeg(p).shape == (272, 640, 3) for p in parts)
        assert len({p for p in parts}) > 1, "the preview moves"
        answer = service.client.get("/api/streams/bird/frame.jpg")  # ended: nothing new
        assert answer.status_code == 409 and "finished" in answer.json()["detail"]

        # results as server-sent events: the meta_publish record, numbered by frame
        got = events(service, "street", 5)
        numbers = [record["frame"] for _, record in got]
        assert numbers == sorted(numbers) and [int(i) for i, _ in got] == numbers
        assert all(record["width"] == 640 and "regions" in record for _, record in got)

        # a restart ends the run through EOS and starts the next; its records carry on
        runs = service.streams()["street"]["runs"]
        answer = service.client.post("/api/streams/street/restart")
        assert answer.status_code == 200, answer.text
        wait_for(lambda: service.streams()["street"]["runs"] == runs + 1
                 and service.streams()["street"]["state"] == "running", 60, "the next run")
        assert service.streams()["street"]["restarts"] == 1
        wait_for(lambda: "torchstream: street: restarting on request" in service.log, 5,
                 "the restart said in the log (the status line comes each second)")

        # removing a running stream ends it through EOS: its file complete
        answer = service.client.delete("/api/streams/yard")
        assert answer.status_code == 200, answer.text
        final = answer.json()
        assert final["state"] == "stopped" and final["frames"] > 0
        records = jsonl_records(tmp_path / "out" / "yard.jsonl")
        assert [r["frame"] for r in records] == list(range(final["frames"]))
        assert service.client.get("/api/streams/yard").status_code == 404
        assert set(service.streams()) == {"street", "bird"}
        street_frames = service.streams()["street"]["frames"]
    finally:
        code = service.stop()
    assert code == 0, service.log[-3000:]
    stopped = jsonl_records(tmp_path / "out" / "street.jsonl")
    assert len(stopped) >= street_frames
    for _, record in got:  # an event is the record meta_publish wrote for that frame
        assert stopped[record["frame"]] == record

    # a restarted service brings back what was left: street carries on after its last
    # record, bird (finished) publishes nothing again
    service = Service(tmp_path)
    try:
        assert set(service.streams()) == {"street", "bird"}
        wait_for(lambda: service.streams()["street"]["frames"] > len(stopped) + 10, 120,
                 "street to carry on")
        assert "2 streams from the state file" in service.log
    finally:
        assert service.stop() == 0, service.log[-3000:]
    records = jsonl_records(tmp_path / "out" / "street.jsonl")
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert len(jsonl_records(tmp_path / "out" / "bird.jsonl")) == COCKATOO_FRAMES
