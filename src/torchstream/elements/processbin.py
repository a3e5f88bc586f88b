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

import weakref

from torchstream.elements._base import (
    FactoryMade,
    Prop,
    PropertyStore,
    attempt,
    gproperties,
    int_prop,
    pad_templates,
)
from torchstream.errors import ConfigError
from torchstream.gst import GLib, Gst
from torchstream.gst.log import DebugCategory

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


FRAME_POLICIES = ("auto", "every-frame", "newest-frame")
_LEAKY_DOWNSTREAM = 2  # queue's leaky=downstream: drop the oldest buffer when full


def frame_policy_prop() -> Prop:
    return Prop("string", "Frame policy",
                "Which frames the inference branch takes: every-frame (each one; upstream waits "
                "while the model is busy: files), newest-frame (the newest when the model is "
                "free; the others pass on with no results, or the last ones with "
                "repeat-metadata: a live source keeps its rate and the delay stays bounded), "
                "auto (newest-frame when the source is live, else every-frame). Needs "
                "aggregate and a preprocess queue", "auto",
        doc=(
            'which frames the inference branch takes: `every-frame` (each one; upstream waits '
            'while the model is busy), `newest-frame` (a one-frame leaky queue before preprocess:'
            ' the newest frame when the model is free, with no queue from preprocess to '
            'process; the others go on with no results, or the '
            'last ones with `repeat-metadata`), `auto` (newest-frame when the source is live, '
            'decided at the first frame by a latency query; else every-frame). Needs aggregate '
            'and a preprocess queue; see [Live sources](#live-sources)'),
    )


def skipped_prop() -> Prop:
    return Prop("uint64", "Inference skipped", "Frames the newest-frame policy let pass without "
                "inference since the bin started", 0, readable_only=True,
        doc=(
            'frames the newest-frame policy let pass without inference since the bin started '
            '(also in the debug log at stop)'),
    )


class _Passage:
    """Buffers into and out of a queue, counted by pad probes (which hold this object, not
    the bin: a probe holding the bin would make a reference cycle through C)."""

    def __init__(self) -> None:
        self.entered = 0
        self.left = 0

    def probe(self, side: str):
        def count(pad, info):
            setattr(self, side, getattr(self, side) + 1)
            return Gst.PadProbeReturn.OK
        return count


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
    themselves): ``self.stages`` holds the stage elements under the stage names, the settings
    the queue sizes under ``<stage>-queue-size``. Subclasses define ``_build`` (fill the
    stages, then ``_assemble``) and forward ``do_change_state`` to ``_change_state``
    (PyGObject hooks up vfuncs defined on the GObject class itself, not on a mixin)."""

    def _init_staged(self) -> None:
        # ghost pads exist from the start so that gst-launch can link the bin before it is built
        self.ghost_sink = Gst.GhostPad.new_no_target("sink", Gst.PadDirection.SINK)
        self.ghost_src = Gst.GhostPad.new_no_target("src", Gst.PadDirection.SRC)
        self.add_pad(self.ghost_sink)
        self.add_pad(self.ghost_src)
        self.built = False
        self.stages: dict[str, Gst.Element | None] = {}
        self.inference_queue: Gst.Element | None = None  # tee -> preprocess, with aggregate
        self.passage = _Passage()
        self.policy = "every-frame"  # in force

    def skipped(self) -> int:
        """Frames the inference queue dropped (newest-frame): in, minus out, minus queued."""
        queue = self.inference_queue
        if queue is None:
            return 0
        level = queue.get_property("current-level-buffers")
        return max(0, self.passage.entered - self.passage.left - level)

    def _staged_property(self, prop):
        if prop.name == "inference-skipped":
            return self.skipped()
        return self.settings.get(prop.name)

    def _check_policy(self) -> None:
        policy = (self.settings.frame_policy or "").strip().lower()
        if policy not in FRAME_POLICIES:
            raise ConfigError(f"property 'frame-policy' must be one of "
                              f"{', '.join(FRAME_POLICIES)}, got {self.settings.frame_policy!r}")
        if policy == "newest-frame" and self.inference_queue is None:
            raise ConfigError("frame-policy=newest-frame needs aggregate and a preprocess queue "
                              "(preprocess-queue-size >= 0): without them a frame the model "
                              "does not take would be lost")
        if policy == "newest-frame":
            self._apply_policy("newest-frame", "asked for")

    def _apply_policy(self, policy: str, why: str) -> None:
        self.policy = policy
        queue = self.inference_queue
        if policy == "newest-frame" and queue is not None:
            queue.set_property("max-size-buffers", 1)
            queue.set_property("leaky", _LEAKY_DOWNSTREAM)
            self._feed_model_directly()
        CAT.info(self, f"frame policy {policy} ({why})")

    def _feed_model_directly(self) -> None:
        """newest-frame: take the queue out from preprocess to process, so that the preprocess
        queue's thread carries a frame through the model and takes the newest one when it is
        free. With that queue the model worked on frames that had aged there while it ran:
        the delay was about four forward passes longer.

        An IDLE probe does it when no data crosses the preprocess stage's output (at once
        before the first frame is through); sticky events (caps, segment) go again to the
        model on the new link."""
        queue = self.get_by_name("process_queue")
        upstream = queue.get_static_pad("sink").get_peer() if queue is not None else None
        downstream = queue.get_static_pad("src").get_peer() if queue is not None else None
        if upstream is None or downstream is None:
            return
        owner = weakref.ref(self)

        def relink(pad, info):
            upstream.unlink(queue.get_static_pad("sink"))
            queue.set_locked_state(True)
            queue.set_state(Gst.State.NULL)  # stops its thread, after any push in progress
            queue.get_static_pad("src").unlink(downstream)
            if upstream.link(downstream) != Gst.PadLinkReturn.OK:
                CAT.warning(queue, "newest-frame: the preprocess output does not link to the "
                                   "model directly")
            element = owner()
            if element is not None:
                element.remove(queue)
            return Gst.PadProbeReturn.REMOVE

        upstream.add_probe(Gst.PadProbeType.IDLE, relink)

    def _watch_first_frame(self) -> None:
        """frame-policy=auto: at the first frame (a live source answers latency queries only
        once it has caps), newest-frame when the source is live."""
        if (self.settings.frame_policy or "").strip().lower() != "auto" \
                or self.inference_queue is None:
            return
        owner = weakref.ref(self)  # the probe must not hold the bin (a cycle through C)

        def first_frame(pad, info):
            element = owner()
            if element is not None and element.policy != "newest-frame":
                query = Gst.Query.new_latency()
                if pad.peer_query(query) and query.parse_latency()[0]:
                    element._apply_policy("newest-frame", "the source is live")
            return Gst.PadProbeReturn.REMOVE

        self.inference_queue.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER,
                                                              first_frame)

    def _build_once(self) -> None:
        self._build()
        self._check_policy()
        self.built = True

    def _change_state(self, transition):
        """Build on the first NULL -> READY; a configuration error fails that change."""
        if transition == Gst.StateChange.NULL_TO_READY and not self.built:
            if not attempt(self, self._build_once):
                return Gst.StateChangeReturn.FAILURE
        if transition == Gst.StateChange.READY_TO_PAUSED:
            self.passage.entered = self.passage.left = 0
            self._watch_first_frame()
        elif transition == Gst.StateChange.PAUSED_TO_READY and self.policy == "newest-frame":
            CAT.info(self, f"newest-frame: {self.skipped()} of {self.passage.entered} frames "
                           "passed without inference")
        return Gst.Bin.do_change_state(self, transition)

    # --- assembly ---------------------------------------------------------------------------

    def _stage(self, stage: str) -> Gst.Element | None:
        element = self.stages.get(stage)
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
        queue = queue_for(self.settings.get(f"{stage}-queue-size"), f"{stage}_queue")
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
        if self.stages.get("process") is None:
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
            self.inference_queue = self.get_by_name("preprocess_queue")
            if self.inference_queue is not None:
                self.inference_queue.get_static_pad("sink").add_probe(
                    Gst.PadProbeType.BUFFER, self.passage.probe("entered"))
                self.inference_queue.get_static_pad("src").add_probe(
                    Gst.PadProbeType.BUFFER, self.passage.probe("left"))
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
        queues = ", ".join(f"{stage} {self.settings.get(f'{stage}-queue-size')}"
                           for stage in QUEUED)
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
        "frame-policy": frame_policy_prop(),
        "inference-skipped": skipped_prop(),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self._init_staged()

    def do_get_property(self, prop):
        return self._staged_property(prop)

    def do_change_state(self, transition):
        return self._change_state(transition)

    def _build(self) -> None:
        self.check_ranges()
        self.stages = {stage: self.settings.get(stage) for stage in STAGES}
        self._assemble()
