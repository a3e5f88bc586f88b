"""GStreamer import and initialisation in one place (GI version pins, Gst.init)."""

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

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

if not Gst.is_initialized():
    Gst.init(None)

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo"]
