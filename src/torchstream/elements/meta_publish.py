"""meta_publish: one JSON object per frame (JSON Lines) to a file or stdout; video untouched.

A passthrough transform: buffers go downstream as they came (never mapped, never made
writable); each one's results (``torchstream.meta.read_results``) become a line written by
:class:`torchstream.publish.JsonLinesWriter`.
"""

from __future__ import annotations

from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    gproperties,
    guarded,
    pad_templates,
    string_prop,
)
from torchstream.gst import Gst, GstBase
from torchstream.gstlog import DebugCategory
from torchstream.meta import read_results
from torchstream.publish import JsonLinesWriter, frame_record

CAT = DebugCategory("torchstream-publish", "meta_publish: JSON lines written")


class MetaPublish(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "meta_publish"
    __gstmetadata__ = (
        "Results publisher",
        "Filter/Metadata",
        "Writes each frame's results (timestamp, frame size, regions, classifications) as one "
        "JSON object per line to a file or stdout; the video passes through untouched",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES = {
        "file-path": string_prop(
            "File path", "File the JSON Lines are written to (created or truncated at start); "
            "empty = stdout", ""),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.set_in_place(True)
        self.set_passthrough(True)
        self.writer: JsonLinesWriter | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.frame = 0

    @guarded(False)
    def do_start(self):
        self.frame = 0
        writer = JsonLinesWriter(self.settings["file-path"])
        writer.open()
        self.writer = writer
        CAT.info(self, f"writing JSON lines to {self.settings['file-path'] or 'stdout'}")
        return True

    @guarded(False)
    def do_stop(self):
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
        return True

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        s = incaps.get_structure(0)
        self.width = self.height = None
        if s.has_field("width") and s.has_field("height"):
            w, h = s.get_value("width"), s.get_value("height")
            if isinstance(w, int) and isinstance(h, int):
                self.width, self.height = w, h
        return True

    @guarded(False)
    def do_sink_event(self, event):
        if event.type == Gst.EventType.EOS and self.writer is not None:
            self.writer.flush()  # complete on disk as soon as the stream ends
        return GstBase.BaseTransform.do_sink_event(self, event)

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        record = frame_record(read_results(buf), self.frame, buf.pts, buf.duration,
                              self.width, self.height)
        self.writer.write(record)
        CAT.log(self, lambda: f"frame {self.frame}: {len(record['regions'])} regions")
        self.frame += 1
        return Gst.FlowReturn.OK
