"""The elements write to GStreamer's debug log under their own categories: decisions at INFO
and DEBUG, one LOG line per buffer, nothing at the default threshold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MOBILENET_V2_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
FRAMES = 3
PIPELINE = (f"videotestsrc num-buffers={FRAMES} ! video/x-raw,width=320,height=240 ! "
            "video_inference model=torchvision.models.mobilenet_v2 "
            f"model-weights={MOBILENET_V2_WEIGHTS} engine=torch ! meta_overlay ! fakesink")
# (torchstream launch's progress line may share a line of stderr with a log line)
LINE = re.compile(r"\d+:\d\d:\d\d\.\d+\s+\d+\s+\S+\s+(ERROR|WARN|INFO|DEBUG|LOG)\s+"
                  r"(torchstream-[a-z-]+) (\S+?):(\d+):(\w+):<([^>]*)> (.*)$")


def launch(debug: str | None) -> list[tuple[str, ...]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GST_DEBUG")}
    env["GST_DEBUG_NO_COLOR"] = "1"
    if debug is not None:
        env["GST_DEBUG"] = debug
    done = subprocess.run([str(Path(sys.executable).with_name("torchstream")), "launch",
                           PIPELINE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [m.groups() for m in map(LINE.search, done.stderr.splitlines()) if m]


@pytest.mark.slow
def test_decisions_and_buffers_are_logged_under_the_element_categories():
    lines = launch("torchstream*:6")
    by_category: dict[str, list[tuple[str, ...]]] = {}
    for level, category, *_rest in lines:
        by_category.setdefault(category, []).append((level, *_rest))
    info = {c: [r[-1] for r in rows if r[0] == "INFO"] for c, rows in by_category.items()}
    assert any("video_inference: preprocess: videoconvert" in m
               for m in info["torchstream-bins"]), info["torchstream-bins"]
    assert any(m.startswith("loaded torchvision.models.mobilenet_v2 on cpu")
               for m in info["torchstream-inference"])
    assert any("engine torch" in m for m in info["torchstream-inference"])
    assert any("-> tensor [3, 240, 320]" in m for m in info["torchstream-convert"])
    assert any("[3, 240, 320] -> [3, 224, 224]" in m for m in info["torchstream-resize"])
    assert info["torchstream-processbin"] and info["torchstream-normalize"]
    assert info["torchstream-overlay"]
    ran = [r for r in by_category["torchstream-inference"]
           if r[0] == "LOG" and r[-1].startswith("ran 1 buffers")]
    assert len(ran) == FRAMES
    matched = [r for r in by_category["torchstream-aggregate"] if r[0] == "LOG"]
    assert len(matched) == FRAMES
    # the element each line is about, and the Python code that wrote it
    level, file, line, function, element, message = ran[0]
    assert (file, function, element) == ("tensor_inference.py", "_finish", "inference")
    assert int(line) > 0


@pytest.mark.slow
def test_the_threshold_selects_the_levels():
    info_only = launch("torchstream*:4")
    assert info_only and {level for level, *_ in info_only} == {"INFO"}
    assert launch(None) == []


def test_every_category_is_in_the_docs():
    from torchstream.elements import ELEMENTS, element_class
    from torchstream.gst.log import CATEGORIES

    for name in ELEMENTS:
        element_class(name)
    doc = (REPO / "docs" / "debug-log.md").read_text()
    missing = [name for name in CATEGORIES if f"`{name}`" not in doc]
    assert not missing and len(CATEGORIES) >= 12, missing
