"""frame_skip: lets one buffer in ``interval`` through and drops the others.

The inference bins put it at the head of their inference branch for ``inference-interval``:
the skipped frames still reach meta_aggregate by the frames' branch (without results, or with
the last results repeated), so every frame comes out while the model runs on one in N.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.elements._base import (
    FactoryMade,
    Prop,
    PropertyStore,
    gproperties,
    guarded,
    pad_templates,
    uint_prop,
)
from torchstream.gst import Gst, GstBase
from torchstream.gst.log import DebugCategory

_DROPPED = Gst.FlowReturn.CUSTOM_SUCCESS  # GST_BASE_TRANSFORM_FLOW_DROPPED


CAT = DebugCategory("torchstream-frameskip", "frame_skip: buffers passed and skipped")


class FrameSkip(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "frame_skip"
    __gstmetadata__ = (
        "Frame skip",
        "Filter",
        "Passes the first buffer of every 'interval' buffers and drops the others (counted)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES = {
        "interval": uint_prop("Interval", "Pass one buffer in this many (1: every buffer)", 1,
                              1_000_000, 1),
        "passed": Prop("uint64", "Passed", "Buffers passed since the element started", 0,
                       readable_only=True),
        "dropped": Prop("uint64", "Dropped", "Buffers dropped since the element started", 0,
                        readable_only=True),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.set_passthrough(True)
        self.run: _Run | None = None
        self.counts = (0, 0)  # passed, dropped: the last run's, readable after it stopped

    def do_get_property(self, prop):
        if prop.name in ("passed", "dropped"):
            counts = (self.run.passed, self.run.dropped) if self.run else self.counts
            return counts[prop.name == "dropped"]
        return PropertyStore.do_get_property(self, prop)

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        self.run = _Run(max(1, int(self.settings.interval)))
        return True

    def do_sink_event(self, event):
        if event.type == Gst.EventType.FLUSH_STOP and self.run is not None:
            self.run.seen = 0  # after a seek the first frame is inferred again
        return GstBase.BaseTransform.do_sink_event(self, event)

    def do_transform_ip(self, buf):
        run = self.run
        keep = run.seen % run.interval == 0
        run.seen += 1
        if keep:
            run.passed += 1
            CAT.log(self, "buffer passed")
            return Gst.FlowReturn.OK
        run.dropped += 1
        CAT.log(self, "buffer skipped")
        return _DROPPED

    def do_stop(self):
        run, self.run = self.run, None
        if run is not None:
            self.counts = (run.passed, run.dropped)
            CAT.info(self, f"{run.passed} buffers passed, {run.dropped} skipped")
        return True


@dataclass
class _Run:
    """What one run (start to stop) keeps."""

    interval: int
    seen: int = 0
    passed: int = 0
    dropped: int = 0
