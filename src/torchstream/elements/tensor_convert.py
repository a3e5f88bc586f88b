"""tensor_convert: video/x-raw frames -> one uint8 tensor, sharing memory when rows are packed."""

from __future__ import annotations

import numpy as np

from torchstream.caps import config_from_fields
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    gproperties,
    guarded,
    pad_templates,
    restrict,
)
from torchstream.gst import Gst, GstBase, GstVideo
from torchstream.gst.buffers import COPY_FLAGS, mapped
from torchstream.gst.log import DebugCategory
from torchstream.preprocess.video import (
    VIDEO_FORMATS,
    FrameLayout,
    frame_layout,
    tensor_to_video_caps,
    video_to_tensor_caps,
)

_SINK_CAPS = "video/x-raw,format=(string){ " + ", ".join(VIDEO_FORMATS) + " }"


CAT = DebugCategory("torchstream-convert",
                    "tensor_convert: video layout to tensor, zero-copy or packed")


class TensorConvert(FactoryMade, GstBase.BaseTransform):
    __gtype_name__ = "tensor_convert"
    __gstmetadata__ = (
        "Video to tensor",
        "Filter/Converter/Video/Tensor",
        "Turns RGB/BGR video frames into a uint8 tensor: [H,W,C] for packed formats, [C,H,W] for "
        "planar ones; shares the frame memory unless rows are padded",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(_SINK_CAPS, "other/tensors,num_tensors=(uint)1,types=uint8")
    PROPERTIES: dict = {}
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self.layout: FrameLayout | None = None  # the state: the negotiated frame's layout

    @guarded(None)
    def do_transform_caps(self, direction, caps, filter_):
        to_src = direction == Gst.PadDirection.SINK
        convert = video_to_tensor_caps if to_src else tensor_to_video_caps
        result = Gst.Caps.new_empty()
        for i in range(caps.get_size()):
            for text in convert(caps.get_structure(i)):
                result = result.merge(Gst.Caps.from_string(text))
        return restrict(result, filter_)

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        layout = frame_layout(info)
        config = config_from_fields(outcaps.get_structure(0))
        if config.tensors[0].shape != layout.shape:
            raise ValueError(f"output caps {outcaps.to_string()} do not match the frame {layout}")
        self.layout = layout
        CAT.info(self, f"{incaps.to_string()} -> tensor {list(layout.shape)}, "
                       + ("zero-copy (rows unpadded)" if layout.is_contiguous
                          else "packed into a new buffer (padded rows)"))
        return True

    @guarded((FLOW_ERROR, None))
    def do_prepare_output_buffer(self, inbuf):
        layout = self.layout
        # Timestamps, flags and metadata are copied as for the whole buffer: a copy of a region
        # (size smaller than the buffer) would drop the duration and offset_end.
        whole = inbuf.get_size()
        if layout.is_contiguous and whole >= layout.nbytes:
            # same memory, new buffer: the pixels are not copied
            out = inbuf.copy_region(Gst.BufferCopyFlags.MEMORY, 0, layout.nbytes)
            out.copy_into(inbuf, COPY_FLAGS, 0, whole)
            return Gst.FlowReturn.OK, out
        out = Gst.Buffer.new_allocate(None, layout.nbytes, None)
        out.copy_into(inbuf, COPY_FLAGS, 0, whole)
        with mapped(inbuf, Gst.MapFlags.READ) as src, mapped(out, Gst.MapFlags.WRITE) as dst:
            layout.pack(src, np.frombuffer(dst, np.uint8).reshape(layout.shape))
        return Gst.FlowReturn.OK, out

    def do_stop(self):
        self.layout = None
        return True

    def do_transform(self, inbuf, outbuf):
        return Gst.FlowReturn.OK


