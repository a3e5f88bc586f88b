"""meta_overlay: draws the results on the buffer (boxes, labels, frame classifications).

An in-place transform that draws straight into the frame in the format it arrives in (packed
RGB family, planar, semi-planar and packed 4:2:2 YUV, 10-bit I420/P010, GRAY8; see
:mod:`torchstream.results.overlay`): no
colour conversion, so the output format is the input format, a frame without results leaves
untouched, and the results metadata stays on the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    double_prop,
    gproperties,
    guarded,
    pad_templates,
    uint_prop,
)
from torchstream.errors import TorchstreamError
from torchstream.gst import Gst, GstBase, GstVideo
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import read_results
from torchstream.results.overlay import (
    OVERLAY_FORMATS,
    Style,
    auto_style,
    draw_on_planes,
    frame_planes,
    is_drawable,
)

_CAPS = "video/x-raw,format=(string){ " + ", ".join(OVERLAY_FORMATS) + " }"


CAT = DebugCategory("torchstream-overlay", "meta_overlay: drawing style and frames drawn")


class MetaOverlay(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "meta_overlay"
    __gstmetadata__ = (
        "Results overlay",
        "Filter/Effect/Video",
        "Draws every region's box and labels and the frame-level classifications on the "
        "video, in the frame's own format (output format = input format)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(_CAPS)
    PROPERTIES = {
        "lines-thickness": uint_prop(
            "Lines thickness", "Box line thickness in pixels; 0 = from the frame size "
            "(shorter side / 300, at least 1)", 0, 1000, 0,
            doc=(
                'box line width in pixels, drawn inside the box; 0 = `max(1, round(s / 300))` '
                "where `s` is the frame's shorter side (1 px at 272p, 2 at 720p, 4 at 1080p, 7 at"
                ' 2160p)'),
        ),
        "font-scale": double_prop(
            "Font scale", "OpenCV font scale of the labels (1 = about 22 px capital height); "
            "0 = from the frame size (shorter side / 800, at least 0.4)", 0.0, 100.0, 0.0),
        "font-thickness": uint_prop(
            "Font thickness", "Stroke thickness of the labels in pixels; 0 = from the font "
            "scale (1.5 x scale, at least 1)", 0, 1000, 0),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.set_in_place(True)
        self.set_passthrough(False)  # drawing writes the frame: GStreamer makes it writable
        self.run: _Run | None = None  # from the negotiated caps to stop

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        self.check_ranges()
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        if info is None:
            raise TorchstreamError(f"meta_overlay: not a video format: {incaps.to_string()}")
        s = self.settings
        style = auto_style(info.width, info.height, s.lines_thickness, s.font_scale,
                           s.font_thickness)
        self.run = _Run(info, style)
        CAT.info(self, f"{info.finfo.name} {info.width}x{info.height}: {style}")
        return True

    def do_stop(self):
        self.run = None
        return True

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        results = read_results(buf)
        if not is_drawable(results):
            return Gst.FlowReturn.OK  # nothing to draw: the frame is not mapped or touched
        CAT.log(self, lambda: f"drawing {len(results.regions)} regions, "
                              f"{len(results.classifications)} classifications")
        info, style = self.run.info, self.run.style
        offsets, strides = list(info.offset), list(info.stride)
        vmeta = GstVideo.buffer_get_video_meta(buf)
        if vmeta is not None:  # the producer's own plane layout (padded rows or planes)
            offsets, strides = list(vmeta.offset), list(vmeta.stride)
        ok, mapping = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
        if not ok:
            raise TorchstreamError("meta_overlay: could not map the frame for writing")
        try:
            planes = frame_planes(mapping.data, info.finfo.name, info.width, info.height,
                                  offsets, strides)
            draw_on_planes(planes, info.width, info.height, results, style)
        finally:
            buf.unmap(mapping)
        return Gst.FlowReturn.OK


@dataclass
class _Run:
    """The frame layout and drawing style of the negotiated caps."""

    info: GstVideo.VideoInfo
    style: Style
