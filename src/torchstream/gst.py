"""GStreamer import and initialisation in one place (GI version pins, Gst.init)."""

from __future__ import annotations

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

if not Gst.is_initialized():
    Gst.init(None)

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo"]
