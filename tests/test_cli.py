"""The environment and the command line: plain gst-launch/gst-inspect and `torchstream`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIKES, IMAGENET_MEAN, IMAGENET_STD
from torchstream.elements import ELEMENTS

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = REPO / ".venv" / "bin" / "torchstream"



def clean_shell(script: str, timeout: int = 240, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` in bash with no environment but HOME, a minimal PATH and ``env``.

    The time limit is applied inside the shell, so a stuck command still returns its output.
    """
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(["timeout", "-k", "5", str(timeout), "bash", "-c", script], env=env,
                          cwd=cwd, capture_output=True, text=True)


def test_gst_inspect_lists_every_element_after_env():
    done = clean_shell(f'eval "$({TORCHSTREAM} env)" && gst-inspect-1.0 python')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ELEMENTS:
        assert f"{name}:" in done.stdout


def test_gst_inspect_documents_properties():
    done = clean_shell(f'eval "$({TORCHSTREAM} env)" && gst-inspect-1.0 pytorch_tensor_inference')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for prop in ("model", "model-weights", "device", "batch-size"):
        assert f"  {prop} " in done.stdout
    assert 'Default: "cpu"' in done.stdout


@pytest.mark.slow
def test_gst_launch_runs_the_inference_pipeline(mobilenet_weights):
    pipeline = (
        f"filesrc location={BIKES} ! decodebin ! videoconvert ! videoscale ! "
        "video/x-raw,format=RGBP,width=96,height=96 ! tensor_convert ! "
        f'opencv_tensor_normalize range="<0,1>" mean="{IMAGENET_MEAN}" std="{IMAGENET_STD}" ! '
        "pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} ! fakesink sync=false"
    )
    done = clean_shell(f'eval "$({TORCHSTREAM} env)" && OMP_NUM_THREADS=1 '
                       f"gst-launch-1.0 -v {pipeline}", timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pytorch_tensor_inference0.GstPad:src: caps = other/tensors" in done.stdout
    assert 'dimensions=(string)1000' in done.stdout
    assert "Got EOS" in done.stdout


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchstream.command.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_launch_reports_progress_and_succeeds():
    done = run_cli("launch", "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=64,"
                   "height=48 ! tensor_convert ! fakesink")
    assert done.returncode == 0, done.stderr
    assert "frames: 30" in done.stderr and "fps:" in done.stderr


def test_launch_fails_with_the_error_message():
    done = run_cli("launch", "videotestsrc num-buffers=3 ! video/x-raw,format=RGBP,width=32,"
                   "height=32 ! tensor_convert ! opencv_tensor_normalize ! "
                   "pytorch_tensor_inference model=/no/such/model.pt ! fakesink")
    assert done.returncode == 1
    assert "ERROR from" in done.stderr and "'/no/such/model.pt' does not exist" in done.stderr


def test_inspect_lists_elements():
    done = run_cli("inspect")
    assert done.returncode == 0
    for name in ELEMENTS:
        assert name in done.stdout
