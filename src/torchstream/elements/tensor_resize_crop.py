"""tensor_resize_crop: resize and centre-crop uint8 [C,H,W] tensors as torchvision does.

A crop or a letterbox moves the picture inside the tensor; each output buffer then carries a
frame mapping (``torchstream.gst.meta.FrameMapping``: the mapping already on the input buffer,
composed with this element's own), so post-processing can put boxes back on the frame. A plain
resize changes no normalised coordinate and adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchstream.caps import MEDIA_TYPE, config_from_fields, format_dims, parse_dimensions
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    Settings,
    bool_prop,
    gproperties,
    guarded,
    pad_templates,
    restrict,
    string_prop,
)
from torchstream.errors import CapsError, ConfigError
from torchstream.gst import Gst, GstBase
from torchstream.gst.buffers import mapped, one_torch_thread, to_torch
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import read_frame_mapping, write_frame_mapping
from torchstream.preprocess.resize import (
    INTERPOLATIONS,
    MODES,
    ResizeSpec,
    parse_border,
    parse_size,
)
from torchstream.props import parse_float_list
from torchstream.results.data import FrameMapping

_CAPS = f"{MEDIA_TYPE},num_tensors=(uint)1,types=uint8"


def _output_structure(structure, spec: ResizeSpec | None):
    """Sink caps -> src caps: fixed dims when the input's are, otherwise any size."""
    s = structure.copy()
    if not s.has_field("dimensions") or spec is None:
        s.remove_field("dimensions")
        return s
    try:
        shapes = parse_dimensions(s.get_value("dimensions"))
    except CapsError:
        return None
    if len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][0] not in (1, 3, 4):
        return None  # only planar [C,H,W] images
    c, h, w = shapes[0]
    if h == 0 or w == 0:
        s.remove_field("dimensions")
        return s
    oh, ow = spec.output_hw(h, w)
    s.set_value("dimensions", format_dims((c, oh, ow)))
    return s


def resize_properties(mode_note: str = "") -> dict:
    """The resize settings of tensor_resize_crop, shared with tensor_roi_crop."""
    return {
        "size": string_prop("Size", "N: shorter side to N (aspect-ratio) or NxN box; WxH: box; "
                            "empty: no resize", "",
            doc=(
                '`N`: shorter side to N keeping the aspect ratio (mode `aspect-ratio`), or an NxN'
                ' box; `WxH`: a box; empty: no resize'),
        ),
        "mode": string_prop("Mode", f"Resize mode: {', '.join(MODES)}{mode_note}",
                            "aspect-ratio",
            doc=(
                '`aspect-ratio` (shorter side, or fit inside a WxH box), `no-aspect-ratio` '
                '(stretch to the box), `letterbox` (fit inside the box, centred, zero padding)'),
        ),
        "crop": string_prop("Crop", "Centre crop after resizing: N (square) or WxH; empty: "
                            "none", ""),
        "interpolation": string_prop("Interpolation", f"One of {', '.join(INTERPOLATIONS)}",
                                     "bilinear"),
        "antialias": bool_prop("Antialias", "Antialias when downscaling (as torchvision)", True),
        "padding": string_prop("Padding", "mode=letterbox: N or XxY pixels kept free left and "
                               "right (X) and above and below (Y) the picture in the box; "
                               "empty: none", "",
            doc=(
                '`mode=letterbox`: `N` or `XxY` pixels kept free left and right (X) and above and'
                " below (Y) the picture inside the box (DL Streamer's padding stride); empty: "
                'none'),
        ),
        "fill": string_prop("Fill", "mode=letterbox: the padding's value, <v> or <r,g,b> in "
                            "0..255 (YOLO pads <114>); empty: 0", "",
            doc=(
                "`mode=letterbox`: the padding's value, `<v>` or `<r,g,b>` in 0..255 (YOLO's "
                'letterbox pads `<114>`); empty: 0'),
        ),
    }


def resize_spec(settings: Settings) -> ResizeSpec:
    """The ResizeSpec of ``resize_properties`` values (errors name the property)."""
    return ResizeSpec(
        size=parse_size(settings.size, "size"),
        mode=settings.mode,
        crop=parse_size(settings.crop, "crop"),
        interpolation=settings.interpolation,
        antialias=bool(settings.antialias),
        border=parse_border(settings.padding, "padding"),
        fill=parse_float_list(settings.fill, "fill") if settings.fill else (),
    )


@dataclass
class _Run:
    """What one run (READY -> PAUSED ... -> READY) plans: the settings' spec, then per caps
    the shapes and the frame mapping (None: the output keeps the input's mapping)."""

    spec: ResizeSpec
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    mapping: FrameMapping | None = None


CAT = DebugCategory("torchstream-resize", "tensor_resize_crop: resize and crop plan per caps")


class TensorResizeCrop(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "tensor_resize_crop"
    __gstmetadata__ = (
        "Tensor resize and crop",
        "Filter/Converter/Tensor",
        "Resizes a uint8 [C,H,W] image tensor (shorter side, exact box or letterbox) and takes a "
        "centre crop, with torchvision's functions, so results equal a weights' reference "
        "transform",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(_CAPS)
    PROPERTIES = resize_properties()
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.run: _Run | None = None

    def _make_spec(self) -> ResizeSpec:
        return resize_spec(self.settings)

    @guarded(False)
    def do_start(self):
        self.run = _Run(self._make_spec())
        return True

    def do_stop(self):
        self.run = None
        return True

    @guarded(None)
    def do_transform_caps(self, direction, caps, filter_):
        spec = self.run.spec if self.run is not None else None
        if spec is None:
            try:
                spec = self._make_spec()
            except ConfigError:
                spec = None  # reported by do_start, with the element's name
        result = Gst.Caps.new_empty()
        for i in range(caps.get_size()):
            structure = caps.get_structure(i)
            if direction == Gst.PadDirection.SINK:
                s = _output_structure(structure, spec)
            else:
                s = structure.copy()
                s.remove_field("dimensions")
            if s is not None:
                result.append_structure(s)
        return restrict(result, filter_)

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        run = self.run
        run.in_shape = config_from_fields(incaps.get_structure(0)).tensors[0].shape
        run.out_shape = config_from_fields(outcaps.get_structure(0)).tensors[0].shape
        mapping = run.spec.mapping(*run.in_shape[1:])
        run.mapping = None if mapping.is_identity else mapping
        CAT.info(self, f"{list(run.in_shape)} -> {list(run.out_shape)} ({run.spec})")
        return True

    def do_transform_size(self, direction, caps, size, othercaps):
        run = self.run
        if run is None or run.out_shape is None:
            return False, 0
        shape = run.out_shape if direction == Gst.PadDirection.SINK else run.in_shape
        return True, int(np.prod(shape))

    @guarded(FLOW_ERROR)
    def do_transform(self, inbuf, outbuf):
        one_torch_thread()
        run = self.run
        # the result may be a view of the input (crop only): copy it out before unmapping
        with mapped(inbuf, Gst.MapFlags.READ) as src, mapped(outbuf, Gst.MapFlags.WRITE) as dst:
            image = np.frombuffer(src, np.uint8, count=int(np.prod(run.in_shape)))
            result = run.spec.apply(to_torch(image.reshape(run.in_shape), "uint8"))
            if tuple(result.shape) != tuple(run.out_shape):
                raise CapsError(f"resize gave {tuple(result.shape)}, caps say {run.out_shape}")
            out = np.frombuffer(dst, np.uint8, count=int(np.prod(run.out_shape)))
            out.reshape(run.out_shape)[:] = result.numpy()
        if run.mapping is not None:
            # outbuf holds a copy of the input's metas: replace the mapping it carried
            before = read_frame_mapping(inbuf) or FrameMapping.identity()
            write_frame_mapping(outbuf, before.then(run.mapping))
        return Gst.FlowReturn.OK
