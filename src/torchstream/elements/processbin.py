"""processbin: a bin that wires preprocess, process, postprocess, aggregate and postaggregate.

With ``aggregate``::

    sink -> tee -> [queue] preprocess -> [queue] process -> [queue] postprocess
                                                                 -> aggregate.tensor_%u
                -> [queue] -> aggregate.sink
    aggregate -> postaggregate -> src

Without it the chain is linear: sink -> [queue] preprocess -> [queue] process -> [queue]
postprocess -> postaggregate -> src. The elements come from GstElement-typed properties
(gst-launch builds them from description strings; a description with ``!`` arrives as a bin,
whose unlinked pads are ghosted here). The bin is assembled when it goes from NULL to READY;
a missing ``process`` or elements that cannot be linked fail that state change with an error.
"""

from __future__ import annotations

from torchstream.elements._base import (
    FactoryMade,
    Prop,
    PropertyStore,
    gproperties,
    int_prop,
    pad_templates,
)
from torchstream.errors import ConfigError, post_error
from torchstream.gst import GLib, Gst
from torchstream.gstlog import DebugCategory

STAGES = ("preprocess", "process", "postprocess", "aggregate", "postaggregate")
QUEUED = ("preprocess", "process", "postprocess", "aggregate")
DEFAULT_QUEUE_SIZE = {"preprocess": 4, "process": 4, "postprocess": 4, "aggregate": 0}

CAT = DebugCategory("torchstream-processbin", "processbin and the inference bins: assembly")

_STAGE_BLURBS = {
    "preprocess": "Frames to model input (e.g. \"videoscale ! videoconvert ! "
                  "video/x-raw,format=RGBP ! tensor_convert ! opencv_tensor_normalize ...\")",
    "process": "The inference element (e.g. \"pytorch_tensor_inference model=...\"); required",
    "postprocess": "Model output to results (e.g. \"tensor_postproc_label ...\")",
    "aggregate": "Puts the results on the original frames (meta_aggregate); without it the "
                 "chain is linear and its output is the postprocess output",
    "postaggregate": "Runs after aggregate (or after postprocess without aggregate)",
}
_QUEUE_BLURBS = {
    "preprocess": "queue before preprocess",
    "process": "queue before process",
    "postprocess": "queue before postprocess",
    "aggregate": "queue on the frames' branch, from the tee to aggregate's sink pad (only with "
                 "aggregate; it holds the frames while inference runs)",
}


def _element_prop(stage: str) -> Prop:
    return Prop("element", stage.capitalize(), _STAGE_BLURBS[stage])


def queue_prop(stage: str) -> Prop:
    return int_prop(f"{stage.capitalize()} queue size",
                    f"Buffers in the {_QUEUE_BLURBS[stage]}: -1 no queue (same thread), 0 "
                    "unbounded, N at most N buffers", -1, GLib.MAXINT, DEFAULT_QUEUE_SIZE[stage])


def queue_for(size: int, name: str) -> Gst.Element | None:
    """A queue holding at most ``size`` buffers (0: unbounded), or None for -1."""
    if size < 0:
        return None
    queue = Gst.ElementFactory.make("queue", name)
    queue.set_property("max-size-buffers", size)
    queue.set_property("max-size-bytes", 0)
    queue.set_property("max-size-time", 0)
    return queue


def ghost_unlinked(element: Gst.Element) -> None:
    """Give a bin built from a description (``a ! b``) ghost pads for its free ends."""
    if not isinstance(element, Gst.Bin) or element.sinkpads or element.srcpads:
        return
    for direction, name in ((Gst.PadDirection.SINK, "sink"), (Gst.PadDirection.SRC, "src")):
        pad = element.find_unlinked_pad(direction)
        if pad is not None:
            element.add_pad(Gst.GhostPad.new(name, pad))


class StagedBin:
    """The assembly of a processbin, shared with the inference bins (which make their stages
    themselves): ``self.settings`` holds the stage elements under the stage names and the queue
    sizes under ``<stage>-queue-size``. Subclasses define ``_build`` (fill the stages, then
    ``_assemble``) and forward ``do_change_state`` to ``_change_state`` (PyGObject hooks up
    vfuncs defined on the GObject class itself, not on a mixin)."""

    def _init_staged(self) -> None:
        # ghost pads exist from the start so that gst-launch can link the bin before it is built
        self.ghost_sink = Gst.GhostPad.new_no_target("sink", Gst.PadDirection.SINK)
        self.ghost_src = Gst.GhostPad.new_no_target("src", Gst.PadDirection.SRC)
        self.add_pad(self.ghost_sink)
        self.add_pad(self.ghost_src)
        self.built = False

    def _change_state(self, transition):
        """Build on the first NULL -> READY; a configuration error fails that change."""
        if transition == Gst.StateChange.NULL_TO_READY and not self.built:
            try:
                self._build()
                self.built = True
            except Exception as exc:  # noqa: BLE001 - the error boundary of this vfunc
                post_error(self, exc)
                return Gst.StateChangeReturn.FAILURE
        return Gst.Bin.do_change_state(self, transition)

    # --- assembly ---------------------------------------------------------------------------

    def _stage(self, stage: str) -> Gst.Element | None:
        element = self.settings[stage]
        if element is None:
            return None
        if element.get_parent() is not None and element.get_parent() is not self:
            raise ConfigError(f"processbin: the {stage} element '{element.get_name()}' is "
                              "already inside another bin")
        ghost_unlinked(element)
        if element.get_parent() is None:
            self.add(element)
        return element

    def _queue(self, stage: str) -> Gst.Element | None:
        queue = queue_for(self.settings[f"{stage}-queue-size"], f"{stage}_queue")
        if queue is not None:
            self.add(queue)
        return queue

    def _link(self, upstream: Gst.Element, downstream: Gst.Element, what: str,
              sink_pad: Gst.Pad | None = None) -> None:
        if sink_pad is None:
            linked = upstream.link(downstream)
        else:
            src = upstream.get_static_pad("src") or upstream.get_compatible_pad(sink_pad, None)
            linked = src is not None and src.link(sink_pad) == Gst.PadLinkReturn.OK
        if not linked:
            raise ConfigError(f"processbin: cannot link {what}: '{upstream.get_name()}' to "
                              f"'{downstream.get_name()}' (missing pads or incompatible caps)")

    def _chain(self, first: Gst.Element | None, stages, what: str) -> tuple:
        """Link ``first`` then each (queue, element) of ``stages``; (head, tail) of the chain."""
        head, tail = first, first
        for stage in stages:
            for element in (self._queue(stage) if stage in QUEUED else None,
                            self._stage(stage)):
                if element is None:
                    continue
                if tail is not None:
                    self._link(tail, element, f"{what} before {stage}")
                head = head or element
                tail = element
        return head, tail

    def _assemble(self) -> None:
        if self.settings["process"] is None:
            raise ConfigError("processbin: property 'process' is not set; it needs the inference "
                              "element, e.g. process=\"pytorch_tensor_inference model=...\"")
        aggregate = self._stage("aggregate")
        if aggregate is None:
            head, tail = self._chain(None, ("preprocess", "process", "postprocess"), "the chain")
            _, tail = self._chain(tail, ("postaggregate",), "the chain")
        else:
            tee = Gst.ElementFactory.make("tee", "tee")
            self.add(tee)
            head = tee
            _, inference_tail = self._chain(tee, ("preprocess", "process", "postprocess"),
                                            "the inference branch")
            tensor_pad = aggregate.request_pad_simple("tensor_%u")
            if tensor_pad is None:
                raise ConfigError(f"processbin: the aggregate element '{aggregate.get_name()}' "
                                  "has no tensor_%u request pad (use meta_aggregate)")
            self._link(inference_tail, aggregate, "the inference branch to aggregate",
                       tensor_pad)
            queue = self._queue("aggregate")
            frames_tail = tee
            if queue is not None:
                self._link(tee, queue, "the frames' branch")
                frames_tail = queue
            video_pad = aggregate.get_static_pad("sink")
            self._link(frames_tail, aggregate, "the frames' branch to aggregate", video_pad)
            _, tail = self._chain(aggregate, ("postaggregate",), "aggregate")
        sink = head.get_static_pad("sink")
        src = tail.get_static_pad("src")
        if sink is None or src is None:
            raise ConfigError("processbin: the first element has no sink pad or the last no "
                              "src pad")
        self.ghost_sink.set_target(sink)
        self.ghost_src.set_target(src)
        queues = ", ".join(f"{stage} {self.settings[f'{stage}-queue-size']}" for stage in QUEUED)
        CAT.info(self, ("linear chain" if aggregate is None else
                        "tee to the inference branch and the frames' branch, joined by "
                        f"'{aggregate.get_name()}'") + f"; queue sizes: {queues}")


class ProcessBin(FactoryMade, PropertyStore, StagedBin, Gst.Bin):
    __gtype_name__ = "processbin"
    __gstmetadata__ = (
        "Process bin",
        "Filter/Video/Bin",
        "Runs preprocess, process and postprocess on a copy of the frames and puts the results "
        "on the original frames with aggregate; then postaggregate",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES: dict = {
        **{stage: _element_prop(stage) for stage in STAGES},
        **{f"{stage}-queue-size": queue_prop(stage) for stage in QUEUED},
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self._init_staged()

    def do_change_state(self, transition):
        return self._change_state(transition)

    def _build(self) -> None:
        self.check_ranges()
        self._assemble()
