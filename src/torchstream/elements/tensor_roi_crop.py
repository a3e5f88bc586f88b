"""tensor_roi_crop: a frame tensor and its regions in, one batch of region crops out.

A plain element with a chain function: the output's size changes with the number of regions of
each frame, which BaseTransform's size negotiation does not model. Output caps hold ``0`` for
the region count; each buffer's real shape travels in its tensors record, and the ids of its
rows in a region batch record (:func:`torchstream.gst.meta.write_roi_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.caps import MEDIA_TYPE, TensorInfo, TensorsConfig, config_from_fields, format_dims
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    add_chain_pads,
    answer_src_caps_query,
    attempt,
    gproperties,
    guarded,
    pad_templates,
    restrict,
    string_prop,
)
from torchstream.elements.tensor_resize_crop import resize_properties, resize_spec
from torchstream.errors import CapsError
from torchstream.gst import Gst
from torchstream.gst.buffers import (
    COPY_FLAGS,
    MappedTensors,
    buffer_from_tensors,
    one_torch_thread,
    to_torch,
)
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import attach_tensors_record, read_results, write_roi_batch
from torchstream.preprocess.roi import RoiCropper, select_regions
from torchstream.props import parse_class_set
from torchstream.results.data import TensorsRecord

_CAPS = f"{MEDIA_TYPE},num_tensors=(uint)1,types=uint8"
_CAPS_TEMPLATE = Gst.Caps.from_string(_CAPS)
NAME = "rois"  # the output tensor's name in its tensors record


CAT = DebugCategory("torchstream-roicrop", "tensor_roi_crop: region batches")


@dataclass
class _Run:
    """What one run keeps: the cropper made at start, the caps' config; dropped at stop."""

    cropper: RoiCropper
    in_config: TensorsConfig | None = None
    src_caps: Gst.Caps | None = None


class TensorRoiCrop(FactoryMade, PropertyStore, Gst.Element):
    __gtype_name__ = "tensor_roi_crop"
    __gstmetadata__ = (
        "Tensor region crop",
        "Filter/Converter/Tensor",
        "Crops every selected region of a uint8 [C,H,W] frame tensor (regions from the "
        "buffer's results metadata), resizes each as tensor_resize_crop does and stacks them "
        "into one [R,C,h,w] tensor (R = 0 in caps; the rows' region ids travel with the buffer)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(_CAPS)
    PROPERTIES = {
        **resize_properties(" (the output size must be fixed: use crop, letterbox or "
                            "no-aspect-ratio)"),
        "object-class": string_prop(
            "Object class", "Region labels to crop, <car,person> or car,person; empty: "
            "every region", "",
            doc=(
                'region labels to crop, `<car,person>` or `car,person` (the list grammar of every'
                ' list property); empty: every region'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.sinkpad, self.srcpad = add_chain_pads(self)
        self.run: _Run | None = None

    def _make_cropper(self) -> RoiCropper:
        return RoiCropper(resize_spec(self.settings),
                          parse_class_set(self.settings.object_class, "object-class"))

    def _start(self) -> None:
        self.run = _Run(self._make_cropper())

    def do_change_state(self, transition):
        if transition == Gst.StateChange.READY_TO_PAUSED and not attempt(self, self._start):
            return Gst.StateChangeReturn.FAILURE
        result = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self.run = None
        return result

    # -- negotiation ------------------------------------------------------------------------

    def _sink_query(self, pad, parent, query):
        if query.type == Gst.QueryType.CAPS:
            # any frame size: the crops, not the frame, are resized (no size proposed upstream)
            caps = _CAPS_TEMPLATE.copy()
            query.set_caps_result(restrict(caps, query.parse_caps()))
            return True
        return pad.query_default(parent, query)

    def _src_query(self, pad, parent, query):
        caps = self.run.src_caps if self.run is not None else None
        return answer_src_caps_query(pad, parent, query, caps,
                                     _CAPS_TEMPLATE)

    @guarded(False)
    def _set_caps(self, caps: Gst.Caps) -> bool:
        run = self.run
        if run is None:
            raise CapsError("caps arrived before the element started")
        config = config_from_fields(caps.get_structure(0))
        shape = config.tensors[0].shape if len(config) == 1 else ()
        if len(shape) != 3 or shape[0] not in (1, 3, 4) or not config.tensors[0].is_fixed:
            raise CapsError(
                "tensor_roi_crop needs one planar uint8 [C,H,W] frame tensor with fixed dims "
                "(tensor_convert after video/x-raw,format=RGBP), got "
                f"{caps.get_structure(0).to_string()}"
            )
        h, w = run.cropper.output_hw
        out_info = TensorInfo("uint8", (0, shape[0], h, w))
        run.in_config = config
        run.src_caps = Gst.Caps.from_string(TensorsConfig((out_info,)).to_caps_string())
        CAT.info(self, f"frame {list(shape)} -> region batch {list(out_info.shape)}")
        return self.srcpad.push_event(Gst.Event.new_caps(run.src_caps))

    # -- data -------------------------------------------------------------------------------

    def _sink_event(self, pad, parent, event):
        if event.type == Gst.EventType.CAPS:
            return self._set_caps(event.parse_caps())
        return pad.event_default(parent, event)

    @guarded(FLOW_ERROR)
    def _chain(self, pad, parent, buf):
        run = self.run
        if run is None or run.in_config is None:
            raise CapsError("buffers arrived before caps were negotiated")
        regions = select_regions(read_results(buf).regions, run.cropper.classes)
        CAT.log(self, lambda: f"{len(regions)} regions cropped")
        one_torch_thread()
        with MappedTensors(buf, run.in_config) as arrays:
            batch = run.cropper.crop(to_torch(arrays[0], "uint8"), regions)
            out = buffer_from_tensors([batch])  # copies the crops before the frame is unmapped
        out.copy_into(buf, COPY_FLAGS, 0, 0)
        attach_tensors_record(out, TensorsRecord(
            model="",
            names=(NAME,),
            types=("uint8",),
            dimensions=format_dims(tuple(batch.shape)),
            input_types=("uint8",),
            input_dimensions=run.in_config.dimensions_string,
        ))
        write_roi_batch(out, [r.region_id for r in regions])
        return self.srcpad.push(out)
