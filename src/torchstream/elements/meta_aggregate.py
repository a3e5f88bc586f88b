"""meta_aggregate: original frames out, with the results of their inference buffers attached.

A GstAggregator: the always ``sink`` pad takes the original frames, request ``tensor_%u`` pads
take the inference branches' buffers (tensors carrying results metadata). Buffers are matched
by running time (:class:`torchstream.results.aggregate.ResultsMatcher`); each frame leaves
once every tensor pad has shown what it holds for that frame, with the results merged onto it
(:func:`torchstream.results.aggregate.merge_results`). The frame is made writable by a
shallow copy
(memory shared) only when it is shared; output caps are the ``sink`` pad's caps. With
``attach-tensor-data`` the matched tensor buffers themselves are kept on the frame too
(:func:`torchstream.gst.meta.attach_tensor_data`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    bool_prop,
    gproperties,
    guarded,
)
from torchstream.errors import TorchstreamError
from torchstream.gst import GObject, Gst, GstBase
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import attach_tensor_data, is_writable, read_results, write_results
from torchstream.results.aggregate import (
    Contribution,
    ResultsMatcher,
    contribution,
    merge_results,
    repeat_contribution,
)
from torchstream.results.data import FrameResults

_PAD = GstBase.AggregatorPad.__gtype__


def _template(name: str, direction, presence) -> Gst.PadTemplate:
    return Gst.PadTemplate.new_with_gtype(name, direction, presence, Gst.Caps.new_any(), _PAD)


def _running_time(segment, buf) -> int | None:
    if segment is None or buf.pts == Gst.CLOCK_TIME_NONE:
        return None
    if segment.format != Gst.Format.TIME:
        return None
    rt = segment.to_running_time(Gst.Format.TIME, buf.pts)
    return None if rt == Gst.CLOCK_TIME_NONE else int(rt)


_SHALLOW = (Gst.BufferCopyFlags.FLAGS | Gst.BufferCopyFlags.TIMESTAMPS
            | Gst.BufferCopyFlags.META | Gst.BufferCopyFlags.MEMORY)
_WHOLE = ctypes.c_size_t(-1).value


def _shallow_copy(buf: Gst.Buffer) -> Gst.Buffer:
    """What gst_buffer_copy does: a new buffer sharing the memory, with its own metadata.

    (PyGObject's ``Gst.Buffer.copy`` is the boxed copy, a second reference to the same
    buffer, which stays unwritable.)
    """
    return buf.copy_region(_SHALLOW, 0, _WHOLE)


CAT = DebugCategory("torchstream-aggregate", "meta_aggregate: results matched to frames")


@dataclass
class _Run:
    """What one run (start to stop) keeps: made at start, dropped at stop (its counters kept in
    ``MetaAggregate.counts``)."""

    matcher: ResultsMatcher = field(default_factory=ResultsMatcher)
    segments: dict[str, Gst.Segment] = field(default_factory=dict)  # pad name -> its segment
    caps: dict[str, Gst.Caps] = field(default_factory=dict)  # pad name -> its buffers' caps
    video_caps: Gst.Caps | None = None  # the caps of the frames being aggregated
    segment_sent: Gst.Segment | None = None
    frames_out: int = 0
    frames_copied: int = 0  # frames copied (shallow) because they were not writable
    last: dict[str, Contribution] = field(default_factory=dict)  # pad -> its last result's


@dataclass

class _Found:
    """One tensor buffer's contribution to a frame."""

    results: FrameResults
    source: str
    caps: str
    buffer: Gst.Buffer | None


class MetaAggregate(FactoryMade, PropertyStore, GstBase.Aggregator):
    __gtype_name__ = "meta_aggregate"
    __gstmetadata__ = (
        "Results aggregator",
        "Filter/Video/Aggregator",
        "Outputs each frame of the sink pad with the results of the tensor_%u pads' buffers of "
        "the same running time attached as metadata (frames the inference branches skipped "
        "pass without results)",
        "torchstream",
    )
    __gsttemplates__ = (
        _template("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS),
        _template("tensor_%u", Gst.PadDirection.SINK, Gst.PadPresence.REQUEST),
        _template("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS),
    )
    PROPERTIES = {
        "attach-tensor-data": bool_prop(
            "Attach tensor data",
            "Also keep the matched inference buffers (the raw output tensors, not copied) on "
            "each frame, readable with torchstream.gst.meta.read_tensor_data", True),
        "repeat-metadata": bool_prop(
            "Repeat metadata",
            "On a frame a tensor pad has no result for (the inference branch skipped it), "
            "repeat what that pad's last result added: its frame classifications and regions, "
            "and its region classifications on the regions of the same label that overlap "
            "(IoU >= 0.5)", False,
            doc=(
                'on a frame a `tensor_%u` pad has no result for (its branch skipped the frame), '
                "repeat what that pad's last result added to its own frame: frame-level "
                'classifications and new regions as they were, and classifications of existing '
                "regions onto this frame's region of the same label that overlaps the classified "
                'box most (IoU >= 0.5), if any. Cleared by a flush (a seek): results from before '
                'it go on no later frame'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.video_pad = GObject.new(_PAD, name="sink", template=self.get_pad_template("sink"),
                                     direction=Gst.PadDirection.SINK)
        self.add_pad(self.video_pad)
        self.next_pad = 0
        self.run: _Run | None = None  # from start (READY -> PAUSED) to stop
        self.counts = (0, 0)  # frames out, frames copied: the last run's, kept after its stop

    @guarded(None)
    def do_request_new_pad(self, templ, name, caps):
        # GstAggregator's own request function would name the pad sink_N whatever the template
        if templ.name_template != "tensor_%u":
            return None
        if name is None or not name.startswith("tensor_") or "%" in name:
            while self.get_static_pad(f"tensor_{self.next_pad}") is not None:
                self.next_pad += 1
            name = f"tensor_{self.next_pad}"
        elif self.get_static_pad(name) is not None:
            return None
        pad = GObject.new(_PAD, name=name, template=templ, direction=Gst.PadDirection.SINK)
        if self.get_state(0)[1] != Gst.State.NULL:
            pad.set_active(True)
        self.add_pad(pad)
        return pad

    @guarded(False)
    def do_sink_event(self, pad, event):
        if event.type == Gst.EventType.SEGMENT:
            self.run.segments[pad.get_name()] = event.parse_segment().copy()
        elif event.type == Gst.EventType.CAPS:
            # in stream order (a pad's current caps may already be those of later buffers)
            self.run.caps[pad.get_name()] = event.parse_caps()
            if pad is self.video_pad:
                self.run.video_caps = event.parse_caps()
        elif event.type == Gst.EventType.FLUSH_STOP:
            self.run.segments.pop(pad.get_name(), None)
        handled = GstBase.Aggregator.do_sink_event(self, pad, event)
        if pad is self.video_pad and event.type == Gst.EventType.CAPS:
            self.srcpad.mark_reconfigure()  # new frame caps: renegotiate the output
        return handled

    def _tensor_pads(self):
        return [p for p in self.sinkpads if p is not self.video_pad]

    # --- caps: the output is the sink pad's video, whatever the tensor pads carry ------------

    @guarded(False)
    def do_sink_query(self, pad, query):
        if pad is self.video_pad and query.type == Gst.QueryType.CAPS:
            caps = self.srcpad.peer_query_caps(query.parse_caps())
            query.set_caps_result(caps)
            return True
        if pad is self.video_pad and query.type == Gst.QueryType.ACCEPT_CAPS:
            caps = query.parse_accept_caps()
            allowed = self.srcpad.peer_query_caps(None)
            query.set_accept_caps_result(caps.can_intersect(allowed))
            return True
        return GstBase.Aggregator.do_sink_query(self, pad, query)

    @guarded((Gst.FlowReturn.ERROR, None))
    def do_update_src_caps(self, caps):
        if self.run.video_caps is None:
            return Gst.FlowReturn.NOT_NEGOTIATED, None  # the sink pad's caps come first
        return Gst.FlowReturn.OK, self.run.video_caps

    # --- state --------------------------------------------------------------------------

    @guarded(False)
    def do_start(self):
        self.run = _Run()
        return True

    def do_stop(self):
        run, self.run = self.run, None
        if run is not None:
            self.counts = (run.frames_out, run.frames_copied)
            CAT.info(self, f"{run.frames_out} frames out, {run.frames_copied} of them copied "
                           "(not writable)")
        return True

    @guarded(Gst.FlowReturn.ERROR)
    def do_flush(self):
        self.run.matcher.clear()
        self.run.last = {}  # results from before a seek belong to no frame after it
        self.run.segment_sent = None
        return Gst.FlowReturn.OK

    # --- matching ---------------------------------------------------------------------------

    def _collect(self, frame_rt: int | None, drain: bool = False) -> None:
        """Take from each tensor pad the buffers up to ``frame_rt`` (every buffer when
        ``drain``) into the matcher; a later buffer stays queued on its pad, which tells that
        the pad is past the frame and keeps GstAggregator calling us for the next frames."""
        keys = set()
        keep = self.settings.attach_tensor_data
        for pad in self._tensor_pads():
            key = pad.get_name()
            keys.add(key)
            head = None
            while True:
                buf = pad.peek_buffer()
                if buf is None:
                    break
                rt = _running_time(self.run.segments.get(key), buf)
                if rt is not None and not drain and (frame_rt is None or rt > frame_rt):
                    head = rt
                    break
                pad.pop_buffer()
                if rt is not None and not drain:
                    caps = self.run.caps.get(key) if keep else None
                    self.run.matcher.push(key, rt, _Found(
                        read_results(buf), key, caps.to_string() if caps else "",
                        buf if keep else None))
            self.run.matcher.set_state(key, pad.is_eos() and not pad.has_buffer(), head)
        for key in list(self.run.matcher.streams):
            if key not in keys:
                self.run.matcher.remove_stream(key)

    @guarded(FLOW_ERROR)
    def do_aggregate(self, timeout):
        frame = self.video_pad.peek_buffer()
        if frame is None:
            if self.video_pad.is_eos():
                self._collect(None, drain=True)
                return Gst.FlowReturn.EOS
            return Gst.FlowReturn.OK
        rt = _running_time(self.run.segments.get("sink"), frame)
        if rt is not None:
            self._collect(rt)
            if self.run.matcher.waiting_on(rt) and not timeout:
                return Gst.FlowReturn.OK  # wait for the tensor pads to pass this frame
        frame = self.video_pad.pop_buffer()
        found = self.run.matcher.take(rt)
        repeat = self._repeats(found) if rt is not None else []
        if found or repeat:
            if not is_writable(frame):
                frame = _shallow_copy(frame)
                self.run.frames_copied += 1
            width, height = self._frame_size()
            base = read_results(frame)
            if self.settings.repeat_metadata:
                for f in found:
                    self.run.last[f.source] = contribution(base, f.results)
            merged = merge_results(base, [f.results for f in found])
            for added in repeat:
                merged = repeat_contribution(merged, added)
            write_results(frame, merged, width, height)
            kept = [f for f in found if f.buffer is not None]
            if kept:
                attach_tensor_data(frame, _unique_sources(kept))
        self._update_segment()
        CAT.log(self, lambda: f"frame {self.run.frames_out}: {len(found)} results matched, "
                              f"{len(repeat)} repeated")
        self.run.frames_out += 1
        return self.finish_buffer(frame)

    def _repeats(self, found: list[_Found]) -> list[Contribution]:
        """The last contributions of the pads that have no result for this frame."""
        if not self.settings.repeat_metadata:
            return []
        fresh = {f.source for f in found}
        return [added for key, added in self.run.last.items() if key not in fresh]

    def _frame_size(self) -> tuple[int, int]:
        caps = self.run.video_caps
        s = caps.get_structure(0) if caps is not None and caps.get_size() else None
        if s is None:
            raise TorchstreamError("meta_aggregate: a frame arrived before the sink pad's caps")
        ok_w, width = s.get_int("width")
        ok_h, height = s.get_int("height")
        if not (ok_w and ok_h):
            raise TorchstreamError(
                f"meta_aggregate: the sink pad's caps give no frame size ({caps.to_string()})")
        return width, height

    def _update_segment(self) -> None:
        """Output in the sink pad's segment, so the frames keep their timestamps."""
        segment = self.run.segments.get("sink")
        if segment is None:
            return
        if self.run.segment_sent is None or not segment.is_equal(self.run.segment_sent):
            self.update_segment(segment)
            self.run.segment_sent = segment.copy()


def _unique_sources(found: list[_Found]) -> list[tuple[str, str, Gst.Buffer]]:
    """(source, caps, buffer) per tensor buffer; a second buffer of the same pad for the same
    frame is named ``tensor_0.1``."""
    items, seen = [], {}
    for f in found:
        n = seen.get(f.source, 0)
        seen[f.source] = n + 1
        items.append((f.source if n == 0 else f"{f.source}.{n}", f.caps, f.buffer))
    return items
