"""GStreamer I/O: the GStreamer import and initialisation in one place (GI version pins,
Gst.init: this module), metadata on buffers (``meta``), tensors in buffers (``buffers``), the
elements' debug categories (``log``) and running a pipeline to its end (``pipeline``).

The only package besides ``elements`` and ``streams`` that imports gi; may import every core
package (results, decode, preprocess, model, plan).
"""

# ruff: noqa: I001

from __future__ import annotations

# torch goes first: when GLib/GStreamer are loaded before torch, a C++ exception raised inside
# torch while a GStreamer callback is on the stack (a corrupt archive in torch.load, an error in
# a TorchScript forward) aborts the process instead of becoming a Python exception.
# torchvision is imported here too, at module level: a first import of it inside a GStreamer
# callback (the pad query that proposes a model's input size while gst-launch links the
# pipeline) crashed the embedded interpreter of gst-launch-1.0 -v.
import torch  # noqa: F401
import torchvision  # noqa: F401

import sys

# OpenCV's package loader ends by replacing sys.path with a copy of itself. gst-python's plugin
# loader (gst-launch-1.0, gst-inspect-1.0) keeps a pointer to the sys.path list it found while
# it imports the plugin files, and inserts its plugin folders into that list afterwards: with
# the list freed by OpenCV, the inserts land in whatever object reuses its memory (seen: a list
# of the model-proc JSON schema, which then "required" a folder name). cv2 is imported here,
# before any element module, and the original list object is put back.
_sys_path = sys.path
import cv2  # noqa: E402, F401

if sys.path is not _sys_path:
    _sys_path[:] = sys.path
    sys.path = _sys_path
del _sys_path

# C++ code that throws and catches its own exceptions (OpenVINO's compiler and converter do,
# on every model) aborts when its unwinding runs half in libgcc_s and half in libunwind, which
# libgstreamer links and which exports the same _Unwind_* functions. With libgcc_s made global
# before GLib and GStreamer are loaded, every library loaded later finds its _Unwind_* first.
import ctypes  # noqa: E402
import os  # noqa: E402

try:
    ctypes.CDLL("libgcc_s.so.1", mode=os.RTLD_GLOBAL)
except OSError:
    pass

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

if not Gst.is_initialized():
    Gst.init(None)

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo"]
