"""Test helpers for results metadata: run a pipeline fed from an appsrc and read, from every
buffer that reaches each appsink, its tensors or pixels and the results it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tests.helpers import Run, buffer_arrays, run_pipeline
from torchstream.elements._base import FLOW_ERROR, FactoryMade, guarded
from torchstream.gst import GLib, Gst, GstBase, GstVideo
from torchstream.gst.meta import read_results, read_tensors_record
from torchstream.results.data import FrameResults, TensorsRecord

ROI_API = GstVideo.VideoRegionOfInterestMeta.get_info().api


@dataclass
class Roi:
    """A GstVideoRegionOfInterestMeta as read with PyGObject."""

    roi_type: str
    id: int
    parent_id: int
    x: int
    y: int
    w: int
    h: int
    params: dict[str, dict]


@dataclass
class Received:
    pts: int
    caps: str
    arrays: list[np.ndarray]
    results: FrameResults
    record: TensorsRecord | None
    rois: list[Roi]


class MetaWriter(FactoryMade, GstBase.BaseTransform):
    """``test_meta_writer``: an in-place element that lets a test write metadata on each
    buffer, as a user's own element would (``self.write(buf, index)``)."""

    __gtype_name__ = "test_meta_writer"
    __gstmetadata__ = ("Test meta writer", "Filter", "Calls a test function per buffer", "tests")
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS,
                            Gst.Caps.new_any()),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS,
                            Gst.Caps.new_any()),
    )

    def __init__(self) -> None:
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(False)
        self.write = None
        self.count = 0

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        if self.write is not None:
            self.write(buf, self.count)
        self.count += 1
        return Gst.FlowReturn.OK


if Gst.ElementFactory.find("test_meta_writer") is None:
    Gst.Element.register(None, "test_meta_writer", Gst.Rank.NONE, MetaWriter)


def read_rois(buf: Gst.Buffer, ids, param_names=("detection",)) -> list[Roi]:
    """The ROI metas of ``buf`` with the given ids (looked up by id, the public C API)."""
    rois = []
    for roi_id in ids:
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, roi_id)
        if meta is None:
            continue
        params = {}
        for name in param_names:
            s = meta.get_param(name)
            if s is not None:
                params[name] = {s.nth_field_name(i): s.get_value(s.nth_field_name(i))
                                for i in range(s.n_fields())}
        roi_type = GLib.quark_to_string(meta.roi_type)
        rois.append(Roi(roi_type, meta.id, meta.parent_id, meta.x, meta.y, meta.w, meta.h,
                        params))
    return rois


def _receive(buf: Gst.Buffer, caps: Gst.Caps, roi_ids, param_names) -> Received:
    copies = buffer_arrays(buf, caps)
    results = read_results(buf)
    ids = roi_ids if roi_ids is not None else [r.roi_id for r in results.regions]
    return Received(buf.pts, caps.to_string(), copies, results, read_tensors_record(buf),
                    read_rois(buf, ids, param_names))


def run_results(description: str, frames: list[np.ndarray], fmt: str = "RGB",
                sinks: tuple[str, ...] = ("sink",), fps: int = 25, timeout: float = 60,
                writers: dict[str, Callable[[Gst.Buffer, int], None]] | None = None,
                roi_ids=None, param_names=("detection",)) -> Run:
    """Run ``description`` (an appsrc named "src", appsinks named ``sinks``).

    ``writers`` maps the name of a ``test_meta_writer`` element to a function called with each
    buffer passing it (writable) and the buffer's index, to write metadata.
    """
    def setup(pipeline: Gst.Pipeline) -> None:
        for name, write in (writers or {}).items():
            pipeline.get_by_name(name).write = write

    return run_pipeline(description, frames, fmt, timeout, fps, sinks,
                        receive=lambda buf, caps: _receive(buf, caps, roi_ids, param_names),
                        setup=setup)


def regions_writer(plan: list[list], frame_size: tuple[int, int] | None = None
                   ) -> Callable[[Gst.Buffer, int], None]:
    """A ``test_meta_writer`` function that puts ``plan[i]`` (a list of
    :class:`torchstream.gst.meta.Region`) on the i-th frame, as an upstream detector would (frames
    beyond the plan, and empty entries, get no region). With ``frame_size`` (width, height)
    the regions are mirrored as ROI metas too."""
    from torchstream.gst.meta import write_results
    from torchstream.results.data import FrameResults

    def write(buf: Gst.Buffer, index: int) -> None:
        regions = plan[index] if index < len(plan) else []
        if regions:
            size = frame_size or (None, None)
            write_results(buf, FrameResults(regions=list(regions)), *size)

    return write
