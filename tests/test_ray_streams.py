"""`torchstream run --ray local`: each stream a Ray actor in its own process on a Ray cluster
started on this machine; an actor whose process is killed is restarted by Ray and its file
stream carries on after its last record."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.test_run_streams import (
    BIKES_FRAMES,
    REPO,
    TORCHSTREAM,
    records,
    three_streams_file,
    top1,
    wait_for,
)


@pytest.mark.e2e
def test_a_killed_actor_is_restarted_and_its_stream_completes(tmp_path, mobilenet_weights):
    three_streams_file(tmp_path, mobilenet_weights, "status-interval = 0.5\n")
    proc = subprocess.Popen([str(TORCHSTREAM), "run", str(tmp_path / "streams.toml"),
                             "--ray", "local"], cwd=REPO, stderr=subprocess.PIPE, text=True)

    def victim() -> dict | None:
        try:
            cam1 = json.loads((tmp_path / "status.json").read_text())["streams"][1]
        except (OSError, ValueError):
            return None
        return cam1 if cam1["frames"] >= 60 and cam1["pid"] else None

    try:
        wait_for(victim, 240, "60 frames out of cam1")
        killed = victim()["pid"]
        assert killed != os.getpid()
        os.kill(killed, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["final"] is True
    names = [s["name"] for s in status["streams"]]
    assert names == ["cam0", "cam1", "cam2"]
    pids = {s["pid"] for s in status["streams"]}
    assert len(pids) == 3 and os.getpid() not in pids and killed not in pids  # own processes
    for stream in status["streams"]:
        assert stream["state"] == "finished", stream
        assert stream["process_restarts"] == (1 if stream["name"] == "cam1" else 0), stream
    cam1 = status["streams"][1]
    # the new process carried on after the last record the killed one had written
    assert cam1["resumed_after"] is not None and cam1["skipped"] >= 1
    outputs = [records(tmp_path / f"cam{i}.jsonl") for i in range(3)]
    for recs in outputs:
        assert [r["frame"] for r in recs] == list(range(BIKES_FRAMES))
    assert top1(outputs[0]) == top1(outputs[1]) == top1(outputs[2])


def test_each_actor_sizes_its_engines_to_its_share_of_the_cluster():
    from torchstream.model.engines import resolve_threads, set_cpu_share, usable_cpus
    from torchstream.streams.ray_actors import cpus_per_actor

    assert cpus_per_actor(0, 2.0, 3) == 1  # 3 streams on 2 cores: one each, not two
    assert cpus_per_actor(0, 16.0, 3) == 5
    assert cpus_per_actor(2, 16.0, 3) == 2  # what it reserves
    every = usable_cpus()
    try:
        set_cpu_share(1)
        assert usable_cpus() == 1 and resolve_threads(0, "openvino") == 1
        set_cpu_share(every + 8)  # a share never adds CPUs the process may not use
        assert usable_cpus() == every
    finally:
        set_cpu_share(None)
    assert usable_cpus() == every
