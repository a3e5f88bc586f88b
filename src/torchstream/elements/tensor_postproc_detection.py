"""tensor_postproc_detection: detection outputs -> Regions on the buffer.

The tensors pass through untouched (in place: the buffer is made writable for its metadata,
which copies no tensor memory); each buffer gains one region per detection in its results
metadata (``torchstream.gst.meta.read_results``), boxes normalised to [0, 1] of the original frame:
when preprocessing cropped or letterboxed the frame (tensor_resize_crop), the buffer carries a
frame mapping (``torchstream.gst.meta.read_frame_mapping``) that puts the model-input boxes back on
the frame; without one the model input is the frame, resized or not. The layouts are defined
in :mod:`torchstream.decode.detection`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.caps import MEDIA_TYPE, TensorsConfig, config_from_fields
from torchstream.decode.detection import (
    AUTO,
    DEFAULT_MAX_DETECTIONS,
    DetectionParams,
    Layout,
    detect,
    input_size,
)
from torchstream.decode.keypoints import parse_point_connections, parse_point_names
from torchstream.decode.labels import LabelsFromWeights, load_labels
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    Prop,
    PropertyStore,
    bool_prop,
    double_prop,
    gproperties,
    guarded,
    int_prop,
    pad_templates,
    string_prop,
    uint_prop,
)
from torchstream.gst import GLib, Gst, GstBase
from torchstream.gst.buffers import MappedTensors, numpy_values
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import (
    read_frame_mapping,
    read_results,
    read_tensors_record,
    write_results,
)
from torchstream.results.data import ModelRecord


@dataclass
class _Run:
    """What one run (start to stop) keeps: the settings' parameters and their labelling, the
    negotiated tensors, and the output layout of the last buffer (logged when it changes)."""

    params: DetectionParams
    labelling: LabelsFromWeights
    config: TensorsConfig | None = None
    layout: Layout | None = None


def index_prop(nick: str, blurb: str) -> Prop:
    return int_prop(nick, blurb, AUTO, GLib.MAXINT32, AUTO)


CAT = DebugCategory("torchstream-postproc-detection",
                    "tensor_postproc_detection: output layout, detections")


class TensorPostprocDetection(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "tensor_postproc_detection"
    __gstmetadata__ = (
        "Tensor to detections",
        "Filter/Tensor",
        "Turns a detector's output tensors into regions (box normalised to the original "
        "frame, through any crop or letterbox of preprocessing; label, label id, confidence) "
        "attached to the buffer (tensors pass through unchanged)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(MEDIA_TYPE)
    PROPERTIES = {
        "labels": string_prop("Labels", "Label names by label id, <a,b,c> (or use labels-file)",
                              None),
        "labels-file": string_prop(
            "Labels file", "Text file with one label per line, line index = label id "
            "(coco_91cl_bkgr.txt, shipped, for torchvision detectors)", None),
        "threshold": double_prop(
            "Threshold", "A detection whose confidence is below it is dropped "
            "(0 keeps every detection)", 0.0, 1.0, 0.5),
        "box-index": index_prop(
            "Box index", "-1: auto. One output tensor: column of x1 in its last axis (the box "
            "is 4 consecutive columns x1,y1,x2,y2); several outputs: index of the box output"),
        "label-index": index_prop(
            "Label index", "-1: auto. One output tensor: column of the label id; several "
            "outputs: index of the label output"),
        "confidence-index": index_prop(
            "Confidence index", "-1: auto. One output tensor: column of the confidence; "
            "several outputs: index of the confidence output"),
        "converter": string_prop(
            "Converter", "auto: the layouts above, and a YOLO head told from its shape; "
            "yolo_v8, yolo_v11 ([4+nc,N] cx,cy,w,h,scores), yolo_v5, yolo_v7 ([N,5+nc] "
            "cx,cy,w,h,objectness,scores), yolo_v10 ([N,6] x1,y1,x2,y2,score,class) or yolo "
            "(one of them, by shape)", "auto",
            doc=(
                '`auto`: the layouts below, a YOLO head told from its shape among them; '
                '`yolo_v8`, `yolo_v11`: `[4+nc, N]` cx,cy,w,h then class scores; `yolo_v5`, '
                '`yolo_v7`: `[N, 5+nc]` cx,cy,w,h, objectness, class scores; `yolo_v10`: `[N, 6]`'
                ' x1,y1,x2,y2,score,class (end-to-end, no NMS); `yolo`: one of them, by shape'),
        ),
        "nms": bool_prop(
            "NMS", "Run non-maximum suppression on the boxes (YOLO heads always get it)", False),
        "iou-threshold": double_prop(
            "IoU threshold", "NMS drops a box overlapping a higher-scored one of its label "
            "by at least this IoU", 0.0, 1.0, 0.5),
        "class-agnostic": bool_prop(
            "Class-agnostic NMS", "NMS over all boxes, whatever their label", False),
        "max-detections": uint_prop(
            "Max detections", "At most this many detections per frame, the highest scores "
            "first (0: no limit)", 0, GLib.MAXINT32, DEFAULT_MAX_DETECTIONS,
            doc=(
                'at most this many detections per frame, the highest scores first; 0: no limit '
                "(the shipped YOLO model-procs set 300, as YOLO's training code caps its "
                'predictions)'),
        ),
        "classes": uint_prop(
            "Classes", "A YOLO head's class count (0: from the shape); settles the layout of "
            "an [N,4+nc] export", 0, GLib.MAXINT32, 0,
            doc=(
                "a YOLO head's class count (0: from the shape); needed only for an `[N, 4+nc]` "
                '(transposed) anchor-free export'),
        ),
        "point-names": string_prop(
            "Point names", "A keypoints output's point names, in output order, <a,b,c> "
            "(empty: COCO's 17 person keypoints for 17 points, else 0..K-1)", None,
            doc=(
                "the names of a `keypoints` output's K points, in output order; none: COCO's 17 "
                'person keypoints (`nose`, `left_eye`, ... `right_ankle`) when K is 17, else `0` '
                ".. `K-1`. Another count than the model's K fails the stream with both counts"),
        ),
        "point-connections": string_prop(
            "Point connections", "Pairs of point names the skeleton joins, a,b,c,d (pairs in "
            "turn) or a-b,c-d (empty: COCO's skeleton for COCO's points, else none)", None,
            doc=(
                'the pairs of points the skeleton joins: `<a,b,c,d>` (pairs in turn, as DL '
                "Streamer's `point-connections`) or `<a-b,c-d>`; none: COCO's 19-line skeleton "
                "for COCO's points, else no lines. A name `point-names` lacks is an error at "
                'start naming it'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_metadata_writer()
        self.run: _Run | None = None

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        s = self.settings
        params = DetectionParams(
            threshold=s.threshold,
            box_index=s.box_index,
            label_index=s.label_index,
            confidence_index=s.confidence_index,
            labels=load_labels(s.labels, s.labels_file),
            converter=(s.converter or "auto").strip().lower(),
            nms=s.nms,
            iou_threshold=s.iou_threshold,
            max_detections=s.max_detections,
            class_agnostic=s.class_agnostic,
            classes=s.classes or None,
            point_names=parse_point_names(s.point_names),
            point_connections=parse_point_connections(s.point_connections),
        )
        self.run = _Run(params, LabelsFromWeights(params))
        CAT.info(self, f"{params}")
        return True

    def do_stop(self):
        self.run = None
        return True

    def _params_for(self, record) -> DetectionParams:
        """The settings, labelled by the model's published weights when given no labels."""
        params, found = self.run.labelling(record.weights if record is not None else "")
        if found is not None:
            CAT.info(self, found)
        return params

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        self.run.config = config_from_fields(incaps.get_structure(0))
        self.run.layout = None  # found again from the first buffer
        return True

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        record = read_tensors_record(buf)
        names = list(record.names) if record is not None else []
        size = input_size(record.input_dimensions) if record is not None else None
        mapping = read_frame_mapping(buf)
        run = self.run
        with MappedTensors(buf, run.config) as arrays:
            arrays = [numpy_values(a, info.dtype)
                      for a, info in zip(arrays, run.config.tensors, strict=True)]
            detections, layout = detect(arrays, names, self._params_for(record), size, mapping)
        if layout != run.layout:
            CAT.info(self, f"output layout: {layout}")
            run.layout = layout
        CAT.log(self, lambda: f"{len(detections)} detections at threshold "
                              f"{run.params.threshold}")
        results = read_results(buf)
        results.regions = detections
        if record is not None:
            layers = tuple(names[i] for i in layout.tensors() if i < len(names))
            results.add_model(ModelRecord(record.model, layers))
        write_results(buf, results)
        return Gst.FlowReturn.OK
