"""What the service refuses, and that a refusal starts nothing: a token on /api and
/metrics, gst-launch templates, files outside the output, media and models folders, keys and
values that are wrong, names and files in use. And a fuzz run of the OpenAPI document
(schemathesis) that finds no server error, with the service answering after it."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import BIKES
from tests.serve_helpers import REPO, Service, classifier, wait_for

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = Service(tmp_path_factory.mktemp("serve-api"), token=TOKEN)
    running.add(classifier(BIKES, "bikes", jsonl="bikes.jsonl"))
    yield running
    assert running.stop() == 0, running.log[-3000:]


def test_a_token_is_needed_on_the_api_and_metrics_but_not_the_probes(service):
    import httpx

    bare = httpx.Client(base_url=service.url, timeout=30)
    for path in ("/api/streams", "/metrics", "/api/streams/bikes/frame.jpg"):
        answer = bare.get(path)
        assert answer.status_code == 401 and "bearer token" in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"
    assert bare.get("/api/streams", headers={"Authorization": "Bearer wrong"}
                    ).status_code == 401
    assert bare.get(f"/api/streams?token={TOKEN}").status_code == 200  # <img>, EventSource
    assert bare.get("/healthz").status_code == 200
    assert bare.get("/").status_code == 200 and "<title>torchstream" in bare.get("/").text
    assert bare.get("/openapi.json").json()["paths"]["/api/streams"]


OUTSIDE = str(REPO / "README.md")
REFUSED = [
    ({"pipeline": "videotestsrc ! filesink location=/tmp/x"}, 403, "--allow-pipelines"),
    ({"jsonl": "../escape.jsonl"}, 403, "'..'"),
    ({"jsonl": "/tmp/elsewhere.jsonl"}, 403, "outside the output folder"),
    ({"source": "/etc/hostname"}, 403, "not a file inside the media folders"),
    ({"source": "ftp://example.com/video.mp4"}, 403, "scheme 'ftp'"),
    ({"source": "v4l2:///etc/passwd"}, 403, "/dev/videoN"),
    ({"properties": {"model": "/etc/model.pt"}}, 403, "outside the models and media"),
    ({"properties": {"labels-file": OUTSIDE}}, 403, "properties.labels-file"),
    ({"properties": {"cache-dir": "cache"}}, 403, "properties.cache-dir"),
    ({"mqtt": {"address": "localhost:1883", "mqtt-config": "/etc/mqtt.json"}}, 403,
     "mqtt.mqtt-config"),
    ({"element": "filesink"}, 422, "not an inference bin"),
    ({"properties": {"threshold": "high"}}, 422, "threshold"),
    ({"properties": {"no-such-property": 1}}, 422, "no property \"no-such-property\""),
    ({"source": "video\x00.mp4"}, 422, "NUL"),
    ({"restart": "sometimes"}, 422, "restart"),
    ({"sourse": str(BIKES)}, 422, "sourse"),
    ({"name": "../x"}, 422, "name"),
    ({"loop": "yes"}, 422, "loop"),
]


@pytest.mark.parametrize(("change", "status", "reason"), REFUSED,
                         ids=[next(iter(c)) + f"-{s}" for c, s, _ in REFUSED])
def test_a_refused_stream_is_said_why_and_nothing_starts(service, change, status, reason):
    stream = classifier(BIKES, "refused", jsonl="refused.jsonl") | change
    if "element" in change or "pipeline" in change:
        stream.pop("properties")
    answer = service.client.post("/api/streams", json=stream)
    assert answer.status_code == status, answer.text
    assert reason in str(answer.json()["detail"]), answer.text
    assert set(service.streams()) == {"bikes"}
    assert not (service.folder / "out" / "refused.jsonl").exists()


def test_a_name_or_a_file_in_use_is_a_conflict(service):
    again = service.client.post("/api/streams", json=classifier(BIKES, "bikes"))
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    same_file = service.client.post("/api/streams",
                                    json=classifier(BIKES, "other", jsonl="bikes.jsonl"))
    assert same_file.status_code == 409 and "bikes.jsonl" in same_file.json()["detail"]
    assert set(service.streams()) == {"bikes"}


def test_a_stream_that_is_not_there_is_404(service):
    for method, path in (("GET", "/api/streams/nope"), ("DELETE", "/api/streams/nope"),
                         ("POST", "/api/streams/nope/restart"),
                         ("GET", "/api/streams/nope/frame.jpg"),
                         ("GET", "/api/streams/nope/video.mjpeg"),
                         ("GET", "/api/streams/nope/results")):
        answer = service.client.request(method, path)
        assert answer.status_code == 404 and "nope" in answer.json()["detail"], (method, path)


def test_readiness_follows_the_streams(service):
    wait_for(lambda: service.streams()["bikes"]["state"] == "finished", 120, "bikes to end")
    assert service.client.get("/readyz").status_code == 200  # a finished file is not owed
    assert service.client.get("/healthz").json() == {"status": "alive"}


@pytest.mark.slow
def test_a_service_that_cannot_start_says_why(tmp_path):
    """A damaged state file or streams file, a port in use: exit status 2 and the reason,
    before anything runs."""
    state = tmp_path / "state.json"
    state.write_text("{not json")
    streams = tmp_path / "streams.toml"
    streams.write_text('[[stream]]\nname = "x"\nsource = "nowhere.mp4"\n'
                       'element = "video_inference"\n')
    cases = (([f"--state-file={state}"], "cannot read the state file"),
             ([str(streams), f"--state-file={tmp_path / 'none.json'}"], "does not exist"),
             (["--port", "-1"], "cannot listen"))
    for arguments, reason in cases:
        done = subprocess.run([str(REPO / ".venv" / "bin" / "torchstream"), "serve",
                               "--out-dir", str(tmp_path / "out"), *arguments],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 2 and reason in done.stderr, (arguments, done.stderr[-2000:])


@pytest.mark.slow
def test_a_fuzz_run_of_the_openapi_document_finds_no_server_error(service, tmp_path):
    """Run in a folder of its own: schemathesis keeps a cache of what it found there, and a
    run must not depend on an earlier one."""
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "st"), "run", f"{service.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "40", "--seed", "1",
         "--header", f"Authorization: Bearer {TOKEN}", "--workers", "1",
         "--exclude-path-regex", "(video\\.mjpeg|results)$", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert service.client.get("/healthz").status_code == 200
    service.streams()  # still answers (its stateful phase may have removed the stream)
