"""What gst-launch-1.0's embedded Python needs from torchstream's imports."""

from __future__ import annotations

import subprocess
import sys

KEEPS_SYS_PATH = """
import sys
path = sys.path
from torchstream.elements import gst_element_factory
for name in ("meta_overlay", "opencv_tensor_normalize", "object_detect"):
    gst_element_factory(name)
print(sys.path is path)
"""


def test_loading_the_elements_keeps_the_sys_path_list():
    """gst-python's plugin loader inserts its plugin folders into the sys.path list it held
    before importing the loader files; a module that replaces the list (OpenCV's loader does)
    makes those inserts write into freed memory: a model-proc file then failed its schema
    check with a folder name as a required key under gst-launch-1.0."""
    done = subprocess.run([sys.executable, "-c", KEEPS_SYS_PATH], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.split()[-1] == "True", done.stdout + done.stderr
