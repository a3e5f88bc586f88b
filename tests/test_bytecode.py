"""gst-inspect-1.0's embedded Python loads the elements when it must byte-compile every
torchstream source itself (no bytecode to find), run after run, with a fresh registry each
time so that the plugin scanner really imports them."""

from __future__ import annotations

import os
import subprocess

import pytest

from torchstream.elements import ELEMENTS
from torchstream.environment import gst_environment

pytestmark = pytest.mark.e2e

RUNS = 3


@pytest.mark.parametrize("write_bytecode", [True, False])
def test_the_elements_load_with_no_bytecode(tmp_path, write_bytecode):
    listed = []
    for run in range(RUNS):
        env = {**os.environ, **gst_environment()}
        env["GST_REGISTRY"] = str(tmp_path / f"registry-{run}.bin")
        # an empty cache folder: no .pyc of torchstream (or of anything else) is found
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / f"pycache-{run}")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if not write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        done = subprocess.run(["gst-inspect-1.0", "python"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        names = {name for name in ELEMENTS if f"{name}:" in done.stdout}
        listed.append(len(names))
        assert names == set(ELEMENTS), (run, sorted(set(ELEMENTS) - names))
        if write_bytecode:  # the sources were compiled by the embedded interpreter itself
            assert list((tmp_path / f"pycache-{run}").rglob("torchstream/elements/*.pyc"))
    assert listed == [len(ELEMENTS)] * RUNS
