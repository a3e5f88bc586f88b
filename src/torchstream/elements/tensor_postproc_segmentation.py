"""tensor_postproc_segmentation: a segmentation model's class scores -> the frame's class map.

The tensors pass through untouched; each buffer gains a class map (``FrameResults.
segmentation``: a class id per cell at the model's output resolution, with the frame mapping
that puts it on the frame) in its results metadata. :mod:`torchstream.decode.segmentation` holds the
decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.caps import MEDIA_TYPE, TensorsConfig, config_from_fields
from torchstream.decode.labels import LabelsFromWeights, load_labels
from torchstream.decode.segmentation import SegmentationParams, segment
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    gproperties,
    guarded,
    pad_templates,
    string_prop,
)
from torchstream.gst import Gst, GstBase
from torchstream.gst.buffers import MappedTensors, numpy_values
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import (
    read_frame_mapping,
    read_results,
    read_tensors_record,
    write_results,
)
from torchstream.results.data import ModelRecord

CAT = DebugCategory("torchstream-postproc-segmentation",
                    "tensor_postproc_segmentation: class maps")


@dataclass
class _Run:
    """What one run (start to stop) keeps: the labelling and the negotiated tensors."""

    labelling: LabelsFromWeights
    config: TensorsConfig | None = None


class TensorPostprocSegmentation(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "tensor_postproc_segmentation"
    __gstmetadata__ = (
        "Tensor to class map",
        "Filter/Tensor",
        "Turns a semantic segmentation model's class scores into the frame's class map "
        "(a class id per pixel of the model's output, placed on the frame through any "
        "resize, crop or letterbox) attached to the buffer (tensors pass through unchanged)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(MEDIA_TYPE)
    PROPERTIES = {
        "labels": string_prop("Labels", "Class names by class id, <a,b,c> (or use "
                              "labels-file; default: the categories of the model's published "
                              "weights)", None),
        "labels-file": string_prop("Labels file", "Text file with one class name per line, "
                                   "line index = class id", None),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_metadata_writer()
        self.run: _Run | None = None

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        params = SegmentationParams(load_labels(self.settings.labels,
                                                self.settings.labels_file))
        self.run = _Run(LabelsFromWeights(params))
        return True

    def do_stop(self):
        self.run = None
        return True

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        self.run.config = config_from_fields(incaps.get_structure(0))
        return True

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        record = read_tensors_record(buf)
        names = list(record.names) if record is not None else []
        run = self.run
        params, found = run.labelling(record.weights if record is not None else "")
        if found is not None:
            CAT.info(self, found)
        with MappedTensors(buf, run.config) as arrays:
            arrays = [numpy_values(a, info.dtype)
                      for a, info in zip(arrays, run.config.tensors, strict=True)]
            segmentation, index = segment(arrays, names, params.labels, read_frame_mapping(buf))
        CAT.log(self, lambda: f"class map {segmentation.width}x{segmentation.height}, "
                              f"{len(segmentation.counts)} runs")
        results = read_results(buf)
        results.segmentation = segmentation
        if record is not None:
            results.add_model(ModelRecord(record.model, (names[index],) if index < len(names)
                                          else ()))
        write_results(buf, results)
        return Gst.FlowReturn.OK
