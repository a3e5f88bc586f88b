"""A harness for one element, as gst_check's GstHarness: the test's own source pad feeds the
element's sink pad, the test's own sink pad takes what leaves its src pad, and the test drives
it: caps, segment and other events in, buffers in, buffers and events out, queries answered.
No pipeline, no appsrc/appsink, no threads of its own: a push returns when the element has
handled the buffer (and pushed what it pushes in the same thread).

GstHarness itself cannot be made from Python (its constructors are not introspectable), hence
this small one over the same pad API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from torchstream.gst import Gst
from torchstream.gst.buffers import MappedTensors


class Harness:
    def __init__(self, factory: str, **properties) -> None:
        self.element = Gst.ElementFactory.make(factory)
        assert self.element is not None, f"no element {factory}"
        for name, value in properties.items():
            self.element.set_property(name.replace("_", "-"), value)
        self.bus = Gst.Bus.new()
        self.element.set_bus(self.bus)
        self.buffers: list[Gst.Buffer] = []
        self.events: list[Gst.Event] = []
        self.out_caps: Gst.Caps | None = None
        self.downstream_caps = Gst.Caps.new_any()  # what the harness's sink pad accepts
        self.src = Gst.Pad.new("harness-src", Gst.PadDirection.SRC)
        self.src.set_query_function_full(self._src_query)
        self.sink = Gst.Pad.new("harness-sink", Gst.PadDirection.SINK)
        self.sink.set_chain_function_full(self._chain)
        self.sink.set_event_function_full(self._event)
        self.sink.set_query_function_full(self._sink_query)
        assert self.src.link(self.element.get_static_pad("sink")) == Gst.PadLinkReturn.OK
        assert self.element.get_static_pad("src").link(self.sink) == Gst.PadLinkReturn.OK
        self.src.set_active(True)
        self.sink.set_active(True)
        self.fps = 25
        self.pushed = 0  # buffers pushed: the next one's frame number

    # -- driving it -------------------------------------------------------------------------

    def play(self) -> Gst.StateChangeReturn:
        """The element to PLAYING (an element error on the way shows in :meth:`error`)."""
        return self.element.set_state(Gst.State.PLAYING)

    def start(self, caps: str, fps: int = 25) -> bool:
        """PLAYING, then stream-start, caps and a time segment, as a source would send them;
        -> whether the element took the caps."""
        assert self.play() != Gst.StateChangeReturn.FAILURE, self.error()
        assert self.src.push_event(Gst.Event.new_stream_start("harness"))
        accepted = self.src.push_event(Gst.Event.new_caps(Gst.Caps.from_string(caps)))
        segment = Gst.Segment()
        segment.init(Gst.Format.TIME)
        self.src.push_event(Gst.Event.new_segment(segment))
        self.fps = fps
        self.pushed = 0
        return accepted

    def push(self, data: bytes | np.ndarray | Gst.Buffer) -> Gst.FlowReturn:
        """One buffer in, timestamped as the next frame."""
        if isinstance(data, Gst.Buffer):
            buf = data
        else:
            raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
            buf = Gst.Buffer.new_wrapped(raw)
            buf.pts = self.pushed * Gst.SECOND // self.fps
            buf.duration = Gst.SECOND // self.fps
        self.pushed += 1
        return self.src.push(buf)

    def push_event(self, event: Gst.Event) -> bool:
        return self.src.push_event(event)

    def eos(self) -> bool:
        return self.src.push_event(Gst.Event.new_eos())

    def stop(self) -> None:
        self.element.set_state(Gst.State.NULL)
        self.src.set_active(False)
        self.sink.set_active(False)

    # -- what came out ----------------------------------------------------------------------

    def pull(self) -> Gst.Buffer:
        assert self.buffers, "no buffer left the element"
        return self.buffers.pop(0)

    def arrays(self, buf: Gst.Buffer) -> list[np.ndarray]:
        """The tensors of an other/tensors buffer that left the element, copied."""
        from torchstream.caps import config_from_fields

        config = config_from_fields(self.out_caps.get_structure(0))
        with MappedTensors(buf, config) as arrays:
            return [np.array(a) for a in arrays]

    def event_types(self) -> Sequence[Gst.EventType]:
        return [e.type for e in self.events]

    def error(self) -> str | None:
        """The text of the first error the element posted, if any."""
        while True:
            message = self.bus.pop_filtered(Gst.MessageType.ERROR)
            if message is None:
                return None
            err, _ = message.parse_error()
            return err.message

    # -- pad functions ----------------------------------------------------------------------

    def _chain(self, pad, parent, buf) -> Gst.FlowReturn:
        self.buffers.append(buf)
        return Gst.FlowReturn.OK

    def _event(self, pad, parent, event) -> bool:
        if event.type == Gst.EventType.CAPS:
            self.out_caps = event.parse_caps()
        self.events.append(event)
        return True

    def _sink_query(self, pad, parent, query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            wanted = query.parse_caps()
            caps = self.downstream_caps if wanted is None else \
                self.downstream_caps.intersect(wanted)
            query.set_caps_result(caps)
            return True
        if query.type == Gst.QueryType.ACCEPT_CAPS:
            query.set_accept_caps_result(True)
            return True
        return False

    def _src_query(self, pad, parent, query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            query.set_caps_result(Gst.Caps.new_any())
            return True
        return False
