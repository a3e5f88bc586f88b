"""tensor_sliding_window: ``[C,H,W]`` frame tensors in, ``[C,T,H,W]`` clips out.

A clip model classifies the last T frames; this element keeps them (:class:`ClipWindow`) and
pushes a clip on the frame that closes each window, with that frame's timestamps and metadata,
so meta_aggregate puts the clip's result on that frame. The frames in between leave nothing
here (their frames still reach meta_aggregate by the frames' branch, as with frame_skip).

A chain element: one input buffer gives zero or one output buffer of another size, which does
not fit BaseTransform.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.caps import MEDIA_TYPE, TensorInfo, TensorsConfig, config_from_fields
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    Prop,
    PropertyStore,
    add_chain_pads,
    answer_src_caps_query,
    attempt,
    gproperties,
    guarded,
    pad_templates,
    restrict,
    uint_prop,
)
from torchstream.errors import CapsError, Domain, TorchstreamError
from torchstream.gst import Gst
from torchstream.gst.buffers import COPY_FLAGS, MappedTensors, buffer_from_tensors
from torchstream.gst.log import DebugCategory
from torchstream.preprocess.clips import ClipWindow, clip_shape

_TEMPLATE = Gst.Caps.from_string(MEDIA_TYPE)


@dataclass
class _Run:
    """What one run (READY -> PAUSED ... -> READY) keeps: the negotiated frames' config,
    their window and the clips' caps (from the caps event on), and the clips pushed."""

    in_config: TensorsConfig | None = None
    window: ClipWindow | None = None
    src_caps: Gst.Caps | None = None
    clips: int = 0
CAT = DebugCategory("torchstream-window", "tensor_sliding_window: clips of frames")


class TensorSlidingWindow(FactoryMade, PropertyStore, Gst.Element):
    __gtype_name__ = "tensor_sliding_window"
    __gstmetadata__ = (
        "Tensor sliding window",
        "Filter/Tensor",
        "Stacks the last 'length' [C,H,W] frame tensors into one [C,T,H,W] clip on every "
        "'stride'-th frame (for clip models such as torchvision.models.video.*); the clip "
        "carries the timestamps and metadata of the frame that closes it",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES = {
        "length": uint_prop("Length", "Frames in a clip (T)", 1, 1024, 16),
        "stride": uint_prop("Stride", "Frames from one clip's last frame to the next one's; "
                            "0: the length (clips do not overlap)", 0, 1_000_000, 0),
        "clips": Prop("uint64", "Clips", "Clips pushed since the element started", 0,
                      readable_only=True),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.sinkpad, self.srcpad = add_chain_pads(self)
        self.run: _Run | None = None
        self.clips = 0  # the last run's count, readable after it stopped

    def do_get_property(self, prop):
        if prop.name == "clips":
            return self.run.clips if self.run is not None else self.clips
        return PropertyStore.do_get_property(self, prop)

    def do_change_state(self, transition):
        if transition == Gst.StateChange.READY_TO_PAUSED:
            if not attempt(self, self.check_ranges):
                return Gst.StateChangeReturn.FAILURE
            self.run = _Run()
        result = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY and self.run is not None:
            self.clips, self.run = self.run.clips, None
        return result

    def _length_stride(self) -> tuple[int, int]:
        length = int(self.settings.length)
        return length, int(self.settings.stride) or length

    # -- negotiation ------------------------------------------------------------------------

    def _sink_query(self, pad, parent, query):
        if query.type == Gst.QueryType.CAPS:
            query.set_caps_result(restrict(_TEMPLATE.copy(), query.parse_caps()))
            return True
        return pad.query_default(parent, query)

    def _src_query(self, pad, parent, query):
        return answer_src_caps_query(pad, parent, query,
                                     self.run.src_caps if self.run else None, _TEMPLATE)

    @guarded(False)
    def _set_caps(self, caps: Gst.Caps) -> bool:
        config = config_from_fields(caps.get_structure(0))
        if len(config) != 1 or not config.tensors[0].is_fixed:
            raise CapsError("tensor_sliding_window takes one fixed [C,H,W] tensor per buffer "
                            f"(a frame), got {caps.to_string()}")
        length, stride = self._length_stride()
        info = config.tensors[0]
        out = TensorsConfig((TensorInfo(info.dtype, clip_shape(info.shape, length)),))
        run = self.run
        run.in_config, run.window = config, ClipWindow(length, stride)
        run.src_caps = Gst.Caps.from_string(out.to_caps_string())
        CAT.info(self, f"{list(info.shape)} frames -> {list(out.tensors[0].shape)} clips, one "
                       f"every {stride} frames from frame {length} on")
        return self.srcpad.push_event(Gst.Event.new_caps(run.src_caps))

    # -- data -------------------------------------------------------------------------------

    def _sink_event(self, pad, parent, event):
        kind = event.type
        if kind == Gst.EventType.CAPS:
            return self._set_caps(event.parse_caps())
        window = self.run.window if self.run is not None else None
        if kind == Gst.EventType.FLUSH_STOP and window is not None:
            window.reset()
        if kind == Gst.EventType.EOS and not self._check_enough_frames():
            return False
        return pad.event_default(parent, event)

    @guarded(False)
    def _check_enough_frames(self) -> bool:
        """A stream that ended before its first clip would give no result at all: an error
        naming the lengths, not a silent end."""
        window = self.run.window if self.run is not None else None
        if window is not None and window.clips == 0 and window.seen > 0:
            raise TorchstreamError(
                f"the stream ended after {window.seen} frames, fewer than the clip length "
                f"{window.length} (property 'length'): no clip was classified",
                domain=Domain.STREAM)
        return True

    @guarded(FLOW_ERROR)
    def _chain(self, pad, parent, buf):
        run = self.run
        if run is None or run.window is None:
            raise CapsError("buffers arrived before caps were negotiated")
        with MappedTensors(buf, run.in_config) as arrays:
            clip = run.window.push(arrays[0])
        if clip is None:
            CAT.log(self, f"frame {run.window.seen}: no clip closes here")
            return Gst.FlowReturn.OK
        out = buffer_from_tensors([clip])
        out.copy_into(buf, COPY_FLAGS, 0, 0)
        run.clips += 1
        CAT.log(self, f"frame {run.window.seen}: clip {run.clips}")
        return self.srcpad.push(out)
