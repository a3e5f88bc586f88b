"""The core imports without GStreamer: caps, tensors' shapes and types, model loading, engines,
preprocessing maths, post-processing, aggregation, the results data model and its JSON,
model-proc parsing. Only the buffer and pipeline I/O modules (and the elements) load gi."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torchstream

PACKAGE = Path(torchstream.__file__).parent
# GStreamer I/O: buffers, metas, the debug log, running pipelines and streams; a new module is core
# unless it is named here
GSTREAMER_IO = {"gst", "gstlog", "meta", "tensors", "pipeline", "runner"}
CORE = sorted(p.stem for p in PACKAGE.glob("*.py")
              if p.stem not in GSTREAMER_IO and p.stem != "__init__")
SCRIPT = """
import sys
for name in {modules!r}:
    __import__("torchstream." + name)
loaded = sorted(m for m in sys.modules if m == "gi" or m.startswith("gi.")
                or m in ("torchstream." + n for n in {io!r}))
print(loaded)
"""


def test_the_core_modules_import_without_gstreamer():
    assert {"results", "caps", "model", "engines", "inference", "postproc", "detection",
            "aggregate", "publish", "overlay", "modelproc", "bins", "resize"} <= set(CORE)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(modules=CORE, io=sorted(GSTREAMER_IO))],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_buffer_io_does_load_gstreamer():
    """The check above can fail: the meta module, imported the same way, loads gi."""
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(modules=["meta"], io=[])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'gi'" in done.stdout.strip().splitlines()[-1]
