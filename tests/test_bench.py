"""The benchmark entry point keeps working: a real --quick run (tiny model, a few frames)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e  # the whole benchmark program, one process per side
def test_quick_benchmark_reports_every_side(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--frames", "8",
                           "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = done.stdout
    for heading in ("Frames per second", "Engines chosen by engine=auto", "Peak RSS",
                    "Against the expert's loop", "CPU milliseconds per frame",
                    "Targets", "Where the time goes", "YOLO decode + NMS, 8400 candidates"):
        assert heading in table, table
    for column in ("torch fps", "best fps", "plain fps", "procbin fps", "bin fps",
                   "decode fps", "exp-sync fps", "exp-async fps", "bound fps", "bin/exp-async",
                   "procbin/torch", "procbin/best", "bin/plain"):
        assert column in table, table
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["model"] == "mobilenet_v3_small" and row["batch"] == 1
    assert row["threads"] == "default"
    for side in ("bare-torch", "bare-best", "decode", "plain", "expert-sync", "expert-async",
                 "processbin", "bin"):
        figures = row["sides"][side]
        assert figures["errors"] == [], figures
        assert math.isfinite(figures["fps"]) and figures["fps"] > 0, (side, figures)
        assert math.isfinite(figures["peak_rss_mb"]) and figures["peak_rss_mb"] > 50
        assert math.isfinite(figures["cpu_ms_per_frame"]) and figures["cpu_ms_per_frame"] > 0
    # decoding alone is faster than any loop that also runs the model
    assert row["sides"]["decode"]["fps"] > row["sides"]["expert-async"]["fps"]
    # the bare side and both pipelines name the engine they ran, and it is the same one
    (best,) = row["sides"]["bare-best"]["engines"]
    assert best.split(" ")[0] in ("torch", "torchscript", "openvino")
    for side in ("processbin", "bin"):
        assert len(row["sides"][side]["engines"]) == 1, row["sides"][side]
    assert row["sides"]["bare-torch"]["engines"] == ["torch"]
    assert row["frames"] == 8
    kinds = {e["kind"] for b in report["breakdown"] for e in b["elements"]}
    assert {"pytorch_tensor_inference", "opencv_tensor_normalize", "tensor_convert"} <= kinds
    assert all(b["thread_cpu"] for b in report["breakdown"])
    assert report["postproc"]["detections"] > 0 and report["postproc"]["median_ms"] > 0


def test_cuda_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: there is no missing CUDA to refuse")
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--device", "cuda"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "CUDA is not available" in done.stderr, done.stderr
