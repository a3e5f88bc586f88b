"""`torchstream run`: a list of streams in one process, with shared model instances, restarts
that resume where the stream's records end, a status file, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import BIKES
from tests.helpers import wait_for
from torchstream.gst import GLib, Gst
from torchstream.streams.config import parse
from torchstream.streams.runner import StreamRunner, supervise

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = REPO / ".venv" / "bin" / "torchstream"
BIKES_FRAMES = 250
LABELS = REPO / "src" / "torchstream" / "data" / "labels" / "imagenet_2012.txt"


def classifier(weights: Path) -> str:
    return ('element = "video_inference"\n'
            'properties = { model = "torchvision.models.mobilenet_v2", '
            f'model-weights = "{weights}", labels-file = "{LABELS}" }}\n')


def records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n"), "the file ends inside a record"
    return [json.loads(line) for line in text.splitlines()]


def top1(recs: list[dict]) -> list[tuple[int, str]]:
    return [(r["pts"], r["classifications"][0]["label"]) for r in recs]


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(TORCHSTREAM), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def three_streams_file(tmp_path, weights, run: str = "") -> Path:
    """cam0..cam2 over bikes.mp4 through mobilenet_v2, each to its own JSONL file."""
    streams = "".join(f'[[stream]]\nname = "cam{i}"\nsource = "{BIKES}"\n'
                      f'jsonl = "{tmp_path}/cam{i}.jsonl"\n\n' for i in range(3))
    path = tmp_path / "streams.toml"
    path.write_text(f"[run]\nstatus-file = \"{tmp_path}/status.json\"\n{run}\n"
                    f"[defaults]\n{classifier(weights)}\n{streams}")
    return path


@pytest.mark.slow
def test_three_streams_run_in_one_process_sharing_one_model(tmp_path, mobilenet_weights):
    three_streams_file(tmp_path, mobilenet_weights)
    done = run_cli(["run", str(tmp_path / "streams.toml")])
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["final"] is True
    for i, stream in enumerate(status["streams"]):
        assert (stream["name"], stream["state"], stream["frames"], stream["restarts"]) == \
            (f"cam{i}", "finished", BIKES_FRAMES, 0)
        assert f"torchstream: cam{i}: finished: {BIKES_FRAMES} frames" in done.stderr
    outputs = [records(tmp_path / f"cam{i}.jsonl") for i in range(3)]
    assert [r["frame"] for r in outputs[0]] == list(range(BIKES_FRAMES))
    pts = [r["pts"] for r in outputs[0]]
    assert pts == sorted(set(pts))
    # one model instance, three streams: each gets the results of its own frames
    assert top1(outputs[0]) == top1(outputs[1]) == top1(outputs[2])
    # the labels a single pipeline of its own gives the same file
    reference = tmp_path / "reference.jsonl"
    alone = run_cli(["launch", "-q", f"filesrc location={BIKES} ! decodebin ! video_inference "
                     f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights} "
                     f"labels-file={LABELS} ! meta_publish file-path={reference} ! fakesink"])
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert top1(records(reference)) == top1(outputs[0])


def fail_once(runner: StreamRunner, after_frames: int) -> threading.Thread:
    """Posts one real element error in the runner's pipeline once it let ``after_frames``
    frames out: what a decoder or the model posts when it fails mid-stream."""

    def inject():
        wait_for(lambda: runner.status.frames >= after_frames and runner.pipeline is not None,
                 120, "frames out")
        element = runner.pipeline.get_by_name("infer")
        error = GLib.Error.new_literal(Gst.StreamError.quark(), "injected failure",
                                       Gst.StreamError.FAILED)
        element.post_message(Gst.Message.new_error(element, error, "test"))

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_failed_file_stream_restarts_and_resumes_after_its_last_record(
        tmp_path, mobilenet_weights):
    cfg = parse({
        "run": {"restart-delay": 0.2, "status-interval": 0.5},
        "defaults": {"element": "video_inference", "properties": {
            "model": "torchvision.models.mobilenet_v2", "model-weights": str(mobilenet_weights),
            "labels-file": str(LABELS), "name": "infer"}},
        "stream": [{"name": name, "source": str(BIKES), "jsonl": str(tmp_path / f"{name}.jsonl")}
                   for name in ("steady", "flaky")]})
    stop = threading.Event()
    steady, flaky = (StreamRunner(spec, cfg.run, stop) for spec in cfg.streams)
    injector = fail_once(flaky, 60)
    log = tmp_path / "stderr.txt"
    with log.open("w") as out:
        final = supervise([steady, flaky], cfg.run, stop, out)
    injector.join(1)
    steady_status, flaky_status = final
    assert steady_status["state"] == "finished" and steady_status["restarts"] == 0
    assert flaky_status["state"] == "finished" and flaky_status["restarts"] == 1
    assert flaky_status["runs"] == 2 and flaky_status["error"].endswith("injected failure")
    text = log.read_text()
    assert "flaky: failed: " in text and "restart 1 of 5 follows" in text
    assert "flaky: running (run 2, resumed after PTS" in text
    # the second run carried on after the first one's last record: every frame once, in order
    first, second = records(tmp_path / "steady.jsonl"), records(tmp_path / "flaky.jsonl")
    assert [r["frame"] for r in second] == list(range(BIKES_FRAMES))
    assert top1(second) == top1(first)
    published_before = flaky_status["skipped"]
    assert 60 <= published_before < BIKES_FRAMES - 10
    assert flaky_status["resumed_after"] == second[published_before - 1]["pts"]
    assert flaky_status["frames"] == BIKES_FRAMES


@pytest.mark.slow
def test_a_stream_that_keeps_failing_is_reported_and_the_others_finish(
        tmp_path, mobilenet_weights):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(200_000))
    (tmp_path / "streams.toml").write_text(
        f"[run]\nrestart-delay = 0.1\nmax-restarts = 2\nstatus-file = \"{tmp_path}/s.json\"\n"
        f"[defaults]\n{classifier(mobilenet_weights)}\n"
        f'[[stream]]\nname = "good"\nsource = "{BIKES}"\njsonl = "{tmp_path}/good.jsonl"\n'
        f'[[stream]]\nname = "broken"\nsource = "{broken}"\njsonl = "{tmp_path}/b.jsonl"\n'
        '[[stream]]\nname = "typo"\npipeline = "videotestsrc ! no_such_element ! fakesink"\n')
    done = run_cli(["run", str(tmp_path / "streams.toml")])
    assert done.returncode == 1, done.stderr[-3000:]
    good, bad, typo = json.loads((tmp_path / "s.json").read_text())["streams"]
    assert (good["state"], good["frames"]) == ("finished", BIKES_FRAMES)
    assert len(records(tmp_path / "good.jsonl")) == BIKES_FRAMES
    assert (bad["state"], bad["restarts"], bad["runs"], bad["frames"]) == ("failed", 2, 3, 0)
    assert "broken: failed: " in done.stderr and "not restarted" in done.stderr
    assert bad["error"], bad
    # a pipeline that cannot be built is not retried
    assert (typo["state"], typo["restarts"], typo["runs"]) == ("failed", 0, 0)
    assert "no element \"no_such_element\"" in typo["error"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_stream_with_its_records_complete(
        tmp_path, mobilenet_weights, signum):
    live = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
            "framerate=25/1 ! video_inference model=torchvision.models.mobilenet_v2 "
            f"model-weights={mobilenet_weights} labels-file={LABELS} ! {{publish}} ! fakesink")
    (tmp_path / "streams.toml").write_text(
        f"[run]\nstatus-file = \"{tmp_path}/s.json\"\nstatus-interval = 0.5\n"
        f"[defaults]\n{classifier(mobilenet_weights)}\n"
        f'[[stream]]\nname = "file"\nsource = "{BIKES}"\njsonl = "{tmp_path}/file.jsonl"\n'
        f'[[stream]]\nname = "camera"\npipeline = "{live}"\njsonl = "{tmp_path}/cam.jsonl"\n')
    proc = subprocess.Popen([str(TORCHSTREAM), "run", str(tmp_path / "streams.toml")],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)

    def both_running() -> bool:
        try:
            streams = json.loads((tmp_path / "s.json").read_text())["streams"]
        except (OSError, ValueError):
            return False
        return all(s["frames"] >= 20 for s in streams)

    try:
        wait_for(both_running, 180, "frames from both streams")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{signal.Signals(signum).name}: stopping every stream (EOS)" in stderr
    status = json.loads((tmp_path / "s.json").read_text())
    assert status["final"] is True
    for stream, path in zip(status["streams"], ("file.jsonl", "cam.jsonl"), strict=True):
        assert stream["state"] == "stopped", stream
        recs = records(tmp_path / path)  # every line whole, the file closed
        # every frame that came out was written
        assert len(recs) == stream["frames"] > 0
        assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert status["streams"][1]["live"] is True and status["streams"][0]["live"] is False
