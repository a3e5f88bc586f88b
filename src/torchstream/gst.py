"""GStreamer import and initialisation in one place (GI version pins, Gst.init)."""

from __future__ import annotations

# torch goes first: when GLib/GStreamer are loaded before torch, a C++ exception raised inside
# torch while a GStreamer callback is on the stack (a corrupt archive in torch.load, an error in
# a TorchScript forward) aborts the process instead of becoming a Python exception.
import torch  # noqa: F401, I001

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

if not Gst.is_initialized():
    Gst.init(None)

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo"]
