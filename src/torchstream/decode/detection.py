"""Detection outputs to boxes (numpy only, no GStreamer): the core of tensor_postproc_detection.

One buffer's output tensors (their real shapes: only the N rows a buffer holds are read) become
the frame's regions (:class:`torchstream.results.data.Region`, ids from 1), each a box
normalised to [0, 1] of the original frame, a label id and a confidence. The layouts recognised
without settings ("auto"):

- torchvision detection dicts: outputs named ``boxes`` ``[N,4]`` (x1,y1,x2,y2 in model-input
  pixels), ``labels`` ``[N]`` (int) and ``scores`` ``[N]`` (float); with ``keypoints``
  ``[N,K,2|3]`` (x, y in model-input pixels) each detection also gets its K points, scored by
  ``keypoints_scores`` ``[N,K]`` when given (else the third column, else 1.0), named and
  connected by ``point-names`` and ``point-connections`` (:mod:`torchstream.decode.keypoints`);
  with ``masks`` ``[N,1,H,W]`` (mask probabilities over the model input, or over each box
  when H x W is not the input's size) each detection also gets its mask, above
  ``MASK_THRESHOLD``, cut to its box (:class:`torchstream.results.data.Mask`); other outputs are
  ignored;
- one tensor ``[N,K,3]`` per buffer (MoveNet's poses, ``[1,N,K,3]``): N people's K points
  as y, x, score in [0, 1] of the model input; a person's confidence is the mean of its point
  scores and its box the bounds of its points that reach ``threshold`` (all points when it is
  0), label id 0;
- one tensor ``[...,5]``: rows of x1,y1,x2,y2,confidence in model-input pixels (label id 0);
- one tensor ``[...,7]`` (SSD DetectionOutput): rows of image_id,label,confidence,x1,y1,x2,y2
  with the box already normalised; a row with image_id < 0 ends the list;
- box + label tensors: one output ``[...,N,4]`` or ``[...,N,5]`` (x1,y1,x2,y2[,confidence]) in
  model-input pixels, one output of N label ids (an integer tensor), and optionally one of N
  float scores; without a score, the fifth box column, or 1.0, is the confidence.

The overrides ``box-index``, ``label-index`` and ``confidence-index`` (-1 = auto) mean:

- with **one** output tensor: columns of its last axis. ``box-index`` is the column of x1 (the
  box is the four consecutive columns x1,y1,x2,y2), ``label-index`` the column of the label id,
  ``confidence-index`` the column of the confidence. A tensor whose last axis is neither 5 nor
  7 needs at least one of them; then the box starts at column 0 unless given, no label column
  means label id 0 and no confidence column means confidence 1.0;
- with **several** outputs: indices of the outputs (caps order = the order of the tensors
  record's names). ``box-index`` names the ``[...,N,4+]`` box output (its first four columns),
  ``label-index`` the N label ids, ``confidence-index`` the N confidences.

Boxes are in model-input pixels, except in a one-tensor layout with 7 columns, whose boxes are
normalised already. Pixel boxes are divided by the model input's width and height. When the
preprocessing cropped or letterboxed the frame, the buffer's frame mapping
(``torchstream.gst.meta.FrameMapping``) then carries the box from the model input to the original
frame; without one the model input is the frame (possibly resized, which changes no normalised
coordinate). Every box is then clipped to [0, 1] of the frame (a box over letterbox padding
reaches outside it) and its corners ordered (x_min <= x_max, y_min <= y_max).

YOLO outputs (:mod:`torchstream.decode.yolo`): with ``converter`` set to a YOLO name (``yolo_v8``,
``yolo_v11``, ``yolo_v5``, ``yolo_v7``, ``yolo_v10``, or ``yolo`` for the layout told from the
shape), or in auto for one tensor that is no layout above but looks like one: ``[N,6]`` rows
x1,y1,x2,y2,score,class (an end-to-end YOLO export, or CenterNet), or a ``[4+nc, N]`` /
``[N, 5+nc]`` YOLO head. The box with its best class becomes a candidate, then NMS.

``threshold`` (0..1): a detection whose confidence is below it is dropped; 0 keeps every one.
NMS (``nms``, always on for YOLO heads, which need it): torchvision's ``batched_nms`` per label
id (``class_agnostic``: over all boxes) at ``iou_threshold``, in model-input coordinates;
then at most ``max_detections`` are kept (0: all), the highest scores first.
Label ids must be integral; without labels, a label is its id as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from torchstream.decode.classify import check_unit_interval
from torchstream.decode.keypoints import check_connections, point_set
from torchstream.decode.labels import Labels, label_name
from torchstream.decode.yolo import CONVERTERS as YOLO_CONVERTERS
from torchstream.decode.yolo import YoloLayout, candidates, looks_like_yolo, resolve_yolo_layout
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.results.data import FrameMapping, Keypoints, Mask, Region

AUTO = -1
BOX_COLUMNS = 4
CONVERTERS = ("auto", *YOLO_CONVERTERS)  # the converter setting's values
DEFAULT_MAX_DETECTIONS = 0  # no limit
MASK_THRESHOLD = 0.5  # a mask cell is set above it (torchvision's own convention)


@dataclass(frozen=True)
class DetectionParams:
    """The settings of detection post-processing, validated on creation."""

    threshold: float = 0.5
    box_index: int = AUTO
    label_index: int = AUTO
    confidence_index: int = AUTO
    labels: Labels | None = None
    converter: str = "auto"
    nms: bool = False  # YOLO heads get NMS whatever this says
    iou_threshold: float = 0.5
    max_detections: int = DEFAULT_MAX_DETECTIONS
    class_agnostic: bool = False
    classes: int | None = None  # a YOLO head's class count, when known
    point_names: tuple[str, ...] = ()  # () : the default for the model's point count
    point_connections: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.point_names:
            check_connections(self.point_names, self.point_connections)
        check_unit_interval(self.threshold, "threshold")
        check_unit_interval(self.iou_threshold, "iou-threshold")
        if self.converter not in CONVERTERS:
            raise ConfigError(f"property 'converter' must be one of {', '.join(CONVERTERS)}, "
                              f"got {self.converter!r}")
        if int(self.max_detections) < 0:
            raise ConfigError(f"property 'max-detections' must be 0 (no limit) or more, got "
                              f"{self.max_detections}")
        for prop, value in (("box-index", self.box_index), ("label-index", self.label_index),
                            ("confidence-index", self.confidence_index)):
            if int(value) < AUTO:
                raise ConfigError(f"property '{prop}' must be -1 (auto) or an index >= 0, "
                                  f"got {value}")

    @property
    def overridden(self) -> bool:
        return AUTO != self.box_index or AUTO != self.label_index or AUTO != self.confidence_index


@dataclass(frozen=True)
class Field:
    """Where one per-detection value lies: output ``tensor``, and ``column`` of its last axis
    (None: the tensor holds one value per detection)."""

    tensor: int
    column: int | None = None


@dataclass(frozen=True)
class Layout:
    """How one buffer's outputs hold the detections."""

    name: str
    box: Field  # column of x1 (the box is four consecutive columns)
    label: Field | None  # None: label id 0
    confidence: Field | None  # None: confidence 1.0
    normalised: bool  # boxes already in [0, 1] of the model input
    image_id: Field | None = None  # SSD: a row with image_id < 0 ends the list
    yolo: YoloLayout | None = None  # a YOLO tensor (box: its tensor), decoded by yolo.py
    keypoints: int | None = None  # the [N,K,2|3] output (pixels, or [0, 1] if normalised)
    keypoint_scores: int | None = None  # its [N,K] scores
    masks: int | None = None  # the [N,1,H,W] output
    poses: bool = False  # one [1,N,K,3] tensor of y, x, score: read by :func:`pose_arrays`

    def tensors(self) -> list[int]:
        """The outputs this layout reads, in first-use order."""
        used = []
        for f in (self.box, self.label, self.confidence):
            if f is not None and f.tensor not in used:
                used.append(f.tensor)
        return used + [i for i in (self.keypoints, self.keypoint_scores, self.masks)
                       if i is not None]


def describe(shapes: Sequence[Sequence[int]], names: Sequence[str] = ()) -> str:
    """The outputs as a user reads them: ``boxes [3, 4], labels [3]``."""
    parts = []
    for i, shape in enumerate(shapes):
        name = names[i] if i < len(names) and names[i] else f"output {i}"
        parts.append(f"{name} {list(shape)}")
    return ", ".join(parts) if parts else "no outputs"


def _undecodable(shapes, names, why: str) -> ConfigError:
    return ConfigError(
        f"cannot decode the detection outputs ({describe(shapes, names)}): {why}; the "
        "layouts known are torchvision boxes/labels/scores, one [...,5], [...,6] or [...,7] "
        "tensor, MoveNet poses [1,N,K,3], a YOLO head ([4+nc,N] or [N,5+nc], or set "
        "converter), or box + label tensors (set box-index, label-index, confidence-index "
        "otherwise)"
    )


def resolve_layout(shapes: Sequence[Sequence[int]], names: Sequence[str], integer: Sequence[bool],
                   params: DetectionParams) -> Layout:
    """The layout of outputs with torch-order ``shapes`` (their ``names``, and whether each one
    holds integers), with the overrides of ``params``; a ConfigError naming the shapes when
    there is none."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if not shapes:
        raise _undecodable(shapes, names, "the buffer has no tensors")
    if params.converter != "auto":
        return _yolo_layout(shapes, names, params, params.converter)
    if (len(shapes) == 1 and not params.overridden and shapes[0] and shapes[0][-1] not in (5, 7)
            and looks_like_yolo(shapes[0])):
        if shapes[0][-1] == 6:
            return Layout("rows [...,6]", Field(0, 0), Field(0, 5), Field(0, 4), False)
        return _yolo_layout(shapes, names, params, "yolo")
    if len(shapes) == 1 and not params.overridden and is_poses_shape(shapes[0], integer[0]):
        # read as pose_arrays makes it: boxes, scores, points
        return Layout(f"poses {list(shapes[0])} (y, x, score)", Field(0, 0), None, Field(1),
                      True, keypoints=2, poses=True)
    if len(shapes) == 1:
        return _one_tensor_layout(shapes, names, params)
    return _several_tensors_layout(shapes, names, integer, params)


def _yolo_layout(shapes, names, params: DetectionParams, converter: str) -> Layout:
    """A YOLO tensor: the only output, or the one ``box-index`` names."""
    index = 0 if params.box_index == AUTO else params.box_index
    if index >= len(shapes):
        raise _undecodable(shapes, names, f"box-index={index} but there are {len(shapes)} "
                                          "outputs")
    if len(shapes) > 1 and params.box_index == AUTO:
        raise _undecodable(shapes, names, f"converter {converter} reads one tensor: set "
                                          "box-index to the YOLO output's index")
    try:
        yolo = resolve_yolo_layout(shapes[index], converter, params.classes)
    except TorchstreamError as exc:
        raise _undecodable(shapes, names, exc.message) from None
    return Layout(str(yolo), Field(index, 0), Field(index, 5), Field(index, 4), False,
                  yolo=yolo)


def nms_keep(boxes: np.ndarray, scores: np.ndarray, label_ids: np.ndarray, iou: float,
             class_agnostic: bool) -> np.ndarray:
    """Indices of the boxes NMS keeps, highest score first (torchvision's ``batched_nms``:
    per label id unless ``class_agnostic``)."""
    import torch
    from torchvision.ops import batched_nms

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = torch.from_numpy(np.ascontiguousarray(boxes, np.float32))
    s = torch.from_numpy(np.ascontiguousarray(scores, np.float32))
    ids = torch.zeros(len(boxes), dtype=torch.int64) if class_agnostic else \
        torch.from_numpy(np.ascontiguousarray(label_ids, np.int64))
    return batched_nms(b, s, ids, float(iou)).numpy()


def _column(value: int, width: int, prop: str, shapes, names, span: int = 1) -> int:
    if value + span > width:
        what = f"columns {value}..{value + span - 1}" if span > 1 else f"column {value}"
        raise _undecodable(shapes, names, f"{prop}={value} needs {what} but the last axis "
                                          f"has {width}")
    return value


def _one_tensor_layout(shapes, names, params: DetectionParams) -> Layout:
    shape = shapes[0]
    if len(shape) < 1:
        raise _undecodable(shapes, names, "a single value is not a list of detections")
    width = shape[-1]
    if width == 7:  # SSD DetectionOutput
        auto_box, auto_label, auto_conf, normalised = 3, 1, 2, True
    elif width == 5:
        auto_box, auto_label, auto_conf, normalised = 0, None, 4, False
    elif params.overridden and width >= BOX_COLUMNS:
        auto_box, auto_label, auto_conf, normalised = 0, None, None, False
    else:
        raise _undecodable(shapes, names, f"one tensor whose last axis has {width} values")
    box = params.box_index if params.box_index != AUTO else auto_box
    label = params.label_index if params.label_index != AUTO else auto_label
    conf = params.confidence_index if params.confidence_index != AUTO else auto_conf
    _column(box, width, "box-index", shapes, names, BOX_COLUMNS)
    if label is not None:
        _column(label, width, "label-index", shapes, names)
    if conf is not None:
        _column(conf, width, "confidence-index", shapes, names)
    used = {box, box + 1, box + 2, box + 3, label, conf}
    image_id = Field(0, 0) if width == 7 and 0 not in used else None
    return Layout(
        "SSD DetectionOutput [...,7]" if width == 7 else f"rows [...,{width}]",
        Field(0, box),
        None if label is None else Field(0, label),
        None if conf is None else Field(0, conf),
        normalised,
        image_id,
    )


MAX_POSE_PEOPLE, MAX_POSE_POINTS = 100, 133  # 133: COCO-WholeBody, the most points known


def is_poses_shape(shape: Sequence[int], integer: bool = False) -> bool:
    """One buffer's float ``[N,K,3]`` (or ``[1,N,K,3]``): N <= 100 people of 2 to 133 points
    (bounds that keep an RGB image tensor ``[H,W,3]`` from being taken for poses)."""
    return (not integer and (len(shape) == 3 or (len(shape) == 4 and shape[0] == 1))
            and shape[-1] == 3 and 2 <= shape[-2] <= MAX_POSE_POINTS
            and shape[-3] <= MAX_POSE_PEOPLE)


def pose_arrays(poses: np.ndarray, threshold: float) -> list[np.ndarray]:
    """``[N,K,3]`` y, x, score -> boxes ``[N,4]`` (x1, y1, x2, y2 around the points scoring
    ``threshold`` or more; all points when none does or it is 0), scores ``[N]`` (the mean
    point score) and points ``[N,K,3]`` (x, y, score), all in [0, 1] of the model input."""
    people = poses.reshape(poses.shape[-3], poses.shape[-2], 3).astype(np.float64)
    points = people[:, :, [1, 0, 2]]
    boxes = np.zeros((len(people), 4), np.float64)
    for i, person in enumerate(points):
        sure = person[person[:, 2] >= threshold] if threshold > 0 else person
        chosen = sure if len(sure) else person
        boxes[i] = (chosen[:, 0].min(), chosen[:, 1].min(), chosen[:, 0].max(),
                    chosen[:, 1].max())
    return [boxes, points[:, :, 2].mean(axis=1), points]


def _rows(shape) -> int:
    """How many detections a per-detection tensor of ``shape`` holds."""
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _several_tensors_layout(shapes, names, integer, params: DetectionParams) -> Layout:
    count = len(shapes)
    for prop, value in (("box-index", params.box_index), ("label-index", params.label_index),
                        ("confidence-index", params.confidence_index)):
        if value != AUTO and value >= count:
            raise _undecodable(shapes, names, f"{prop}={value} but there are {count} outputs")
    named = {n: i for i, n in enumerate(names) if n}
    # the box output: given, named "boxes", or the only one shaped [...,N,4|5]
    if params.box_index != AUTO:
        box = params.box_index
    elif "boxes" in named:
        box = named["boxes"]
    else:
        candidates = [i for i, s in enumerate(shapes) if len(s) >= 2 and s[-1] in (4, 5)]
        if len(candidates) != 1:
            why = ("no output is shaped [...,N,4] or [...,N,5]" if not candidates
                   else "several outputs could be the boxes")
            raise _undecodable(shapes, names, why)
        box = candidates[0]
    box_shape = shapes[box]
    if len(box_shape) < 2 or box_shape[-1] < BOX_COLUMNS:
        raise _undecodable(shapes, names, f"the box output {box} is not shaped [...,N,4]")
    n = _rows(box_shape[:-1])
    others = [i for i, s in enumerate(shapes) if i != box and _rows(s) == n]
    label = params.label_index if params.label_index != AUTO else None
    conf = params.confidence_index if params.confidence_index != AUTO else None
    if label is None:
        if "labels" in named and named["labels"] != box:
            label = named["labels"]
        else:
            ints = [i for i in others if integer[i] and i != conf]
            if len(ints) > 1:
                raise _undecodable(shapes, names, "several outputs could be the labels")
            label = ints[0] if ints else None
    if conf is None:
        if "scores" in named and named["scores"] not in (box, label):
            conf = named["scores"]
        else:
            floats = [i for i in others if not integer[i] and i != label]
            if len(floats) > 1:
                raise _undecodable(shapes, names, "several outputs could be the confidences")
            conf = floats[0] if floats else None
    if label is None and params.label_index == AUTO and conf is None:
        raise _undecodable(shapes, names, "no output holds one label or score per box")
    confidence = Field(conf) if conf is not None else (
        Field(box, 4) if box_shape[-1] == 5 else None)
    for what, index in (("labels", label), ("confidences", conf)):
        if index is not None and (index == box or _rows(shapes[index]) != n):
            raise _undecodable(shapes, names, f"the {what} output {index} does not hold one "
                                              f"value per box ({n} boxes)")
    points = named.get("keypoints")
    if points is not None and not (len(shapes[points]) >= 3 and shapes[points][-1] in (2, 3)
                                   and _rows(shapes[points][:-2]) == n):
        raise _undecodable(shapes, names, f"the keypoints output {points} is not shaped "
                                          f"[N,K,2|3] ({n} boxes)")
    point_scores = named.get("keypoints_scores") if points is not None else None
    if point_scores is not None and tuple(shapes[point_scores]) != tuple(shapes[points][:-1]):
        raise _undecodable(shapes, names, f"the keypoints_scores output {point_scores} is not "
                                          "shaped [N,K] as the keypoints are")
    masks = named.get("masks")
    if masks is not None and not (len(shapes[masks]) in (3, 4) and shapes[masks][0] == n
                                  and (len(shapes[masks]) == 3 or shapes[masks][1] == 1)):
        raise _undecodable(shapes, names, f"the masks output {masks} is not shaped "
                                          f"[N,1,H,W] ({n} boxes)")
    extras = "".join(f" + {what}" for what, index in (("keypoints", points), ("masks", masks))
                     if index is not None)
    return Layout("box + label tensors" + extras, Field(box, 0),
                  None if label is None else Field(label), confidence, False,
                  keypoints=points, keypoint_scores=point_scores, masks=masks)


def input_size(dimensions: str) -> tuple[int, int] | None:
    """(width, height) of a model's first input from its caps dims (innermost first, e.g.
    ``640:272:3`` = [3,272,640]): CHW unless only the last dim is a channel count (HWC)."""
    first = (dimensions or "").split(",")[0].strip()
    if not first:
        return None
    try:
        shape = tuple(reversed([int(d) for d in first.split(":")]))
    except ValueError:
        return None
    if len(shape) < 2:
        return None
    channel = (1, 3, 4)
    if len(shape) >= 3 and shape[-1] in channel and shape[-3] not in channel:
        width, height = shape[-2], shape[-3]
    else:
        width, height = shape[-1], shape[-2]
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def _values(arrays, f: Field, n: int) -> np.ndarray:
    array = arrays[f.tensor]
    if f.column is None:
        return array.reshape(-1)[:n]
    return array.reshape(-1, array.shape[-1])[:n, f.column]


def _label_ids(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        ok = np.isfinite(values) & (values == np.round(values))
        if not ok.all():
            bad = float(values[~ok][0])
            raise TorchstreamError(f"label ids must be whole numbers, got {bad!r}")
    return values.astype(np.int64)


def decode(arrays: Sequence[np.ndarray], layout: Layout, params: DetectionParams,
           size: tuple[int, int] | None,
           mapping: FrameMapping | None = None) -> list[Region]:
    """The detections of one buffer's ``arrays`` (real shapes) in ``layout``, above
    ``params.threshold``; ``size`` = (width, height) of the model input, needed for pixel
    boxes; ``mapping`` carries boxes from the model input to the frame (None: they are the
    frame's already)."""
    if layout.poses:
        arrays = pose_arrays(arrays[0], params.threshold)
    box_array = arrays[layout.box.tensor]
    if layout.yolo is not None:
        box_array = candidates(box_array, layout.yolo, params.threshold)
        arrays = [box_array if i == layout.box.tensor else a for i, a in enumerate(arrays)]
    n = _rows(box_array.shape[:-1]) if box_array.ndim >= 1 else 0
    if layout.image_id is not None and n:
        ids = _values(arrays, layout.image_id, n)
        ends = np.flatnonzero(ids < 0)
        if ends.size:
            n = int(ends[0])
    if n == 0:
        return []
    rows = box_array.reshape(-1, box_array.shape[-1])[:n]
    boxes = rows[:, layout.box.column:layout.box.column + BOX_COLUMNS].astype(np.float64)
    if layout.confidence is not None:
        conf = _values(arrays, layout.confidence, n).astype(np.float64)
    else:
        conf = np.ones(n, np.float64)
    keep = np.ones(n, bool) if params.threshold <= 0 else conf >= params.threshold
    if not keep.any():
        return []
    if layout.label is not None:
        ids = _label_ids(_values(arrays, layout.label, n)[keep])
    else:
        ids = np.zeros(int(keep.sum()), np.int64)
    rows_kept = np.flatnonzero(keep)
    boxes, conf = boxes[keep], conf[keep]
    if not np.isfinite(boxes).all():
        raise TorchstreamError("detection boxes hold NaN or infinite values")
    if params.nms or (layout.yolo is not None and layout.yolo.nms):
        order = nms_keep(boxes, conf, ids, params.iou_threshold, params.class_agnostic)
    else:
        order = np.arange(len(conf))
        if 0 < params.max_detections < len(conf):
            order = np.argsort(-conf, kind="stable")
    if params.max_detections:
        order = order[:params.max_detections]
    boxes, conf, ids = boxes[order], conf[order], ids[order]
    rows_kept = rows_kept[order]
    masks = _masks(arrays, layout, rows_kept, boxes, size)
    if not layout.normalised:
        if size is None:
            raise TorchstreamError(
                "boxes are in model-input pixels but the model input size is unknown (the "
                "buffer carries no tensors record with the input dimensions)")
        width, height = size
        boxes = boxes / np.array([width, height, width, height], np.float64)
    if mapping is not None:
        scale = np.array([mapping.sx, mapping.sy, mapping.sx, mapping.sy], np.float64)
        offset = np.array([mapping.ox, mapping.oy, mapping.ox, mapping.oy], np.float64)
        boxes = offset + scale * boxes
    keypoints = _keypoints(arrays, layout, params, rows_kept, size, mapping)
    outside = (np.minimum(boxes[:, 0], boxes[:, 2]) >= 1) | (np.maximum(boxes[:, 0],
                                                                       boxes[:, 2]) <= 0) \
        | (np.minimum(boxes[:, 1], boxes[:, 3]) >= 1) | (np.maximum(boxes[:, 1],
                                                                   boxes[:, 3]) <= 0)
    boxes = np.clip(boxes, 0.0, 1.0)
    x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    detections = []
    for i in range(len(conf)):
        if mapping is not None and outside[i]:
            continue  # entirely on letterbox padding: not on the frame
        label_id = int(ids[i])
        confidence = float(conf[i])
        if not math.isfinite(confidence):
            raise TorchstreamError(f"detection confidence {confidence!r} is not finite")
        detections.append(Region(
            float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i]),
            label_name(params.labels, label_id), label_id, confidence,
            region_id=len(detections) + 1, keypoints=keypoints[i] if keypoints else None,
            mask=_mask_window(*masks[i], layout, size, mapping) if masks else None))
    return detections


def _masks(arrays, layout: Layout, rows: np.ndarray, boxes: np.ndarray,
           size: tuple[int, int] | None) -> list[tuple[Mask, tuple[int, ...] | None]]:
    """The kept detections' masks (``boxes`` in model-input pixels), each with the pixel
    window (x0, y0, x1, y1) of the model input it was cut to: a mask over the whole input is
    cut to its box grown by 1/28 of its size and 2 pixels a side (torchvision pastes a mask
    over its box grown by 1/28 a side, then rounds outwards); a mask of another size lies over
    its box already (window None). [] without a masks output."""
    if layout.masks is None:
        return []
    array = arrays[layout.masks]
    height, width = array.shape[-2:]
    cells = array.reshape(-1, height, width)[rows] > MASK_THRESHOLD
    if size is None or (width, height) != tuple(size):
        return [(Mask.from_array(c), None) for c in cells]
    out = []
    for c, (x0, y0, x1, y1) in zip(cells, boxes, strict=True):
        left, right = sorted((x0, x1))
        top, bottom = sorted((y0, y1))
        grow_x, grow_y = (right - left) / 28 + 2, (bottom - top) / 28 + 2
        cx0 = min(max(math.floor(left - grow_x), 0), width - 1)
        cy0 = min(max(math.floor(top - grow_y), 0), height - 1)
        cx1 = max(min(math.ceil(right + grow_x), width), cx0 + 1)
        cy1 = max(min(math.ceil(bottom + grow_y), height), cy0 + 1)
        out.append((Mask.from_array(c[cy0:cy1, cx0:cx1]), (cx0, cy0, cx1, cy1)))
    return out


def _mask_window(mask: Mask, window: tuple[int, ...] | None, layout: Layout,
                 size: tuple[int, int] | None, mapping: FrameMapping | None) -> Mask:
    """The mask with its pixel window normalised to the frame, as the boxes are."""
    if window is None or size is None:
        return mask
    width, height = size
    x0, y0, x1, y1 = window[0] / width, window[1] / height, window[2] / width, window[3] / height
    if mapping is not None:
        x0, x1 = mapping.ox + mapping.sx * x0, mapping.ox + mapping.sx * x1
        y0, y1 = mapping.oy + mapping.sy * y0, mapping.oy + mapping.sy * y1
    return replace(mask, window=(x0, y0, x1, y1))


def _keypoints(arrays, layout: Layout, params: DetectionParams, rows: np.ndarray,
               size: tuple[int, int] | None, mapping: FrameMapping | None) -> list[Keypoints]:
    """The kept detections' points, normalised to the frame as their boxes are (not clipped:
    a point may lie outside the frame); [] without a keypoints output."""
    if layout.keypoints is None:
        return []
    array = arrays[layout.keypoints]
    count, columns = array.shape[-2], array.shape[-1]
    points = array.reshape(-1, count, columns)[rows].astype(np.float64)
    if layout.keypoint_scores is not None:
        scores = arrays[layout.keypoint_scores].reshape(-1, count)[rows].astype(np.float64)
    elif columns == 3:
        scores = points[:, :, 2]
    else:
        scores = np.ones(points.shape[:2], np.float64)
    if not (np.isfinite(points[:, :, :2]).all() and np.isfinite(scores).all()):
        raise TorchstreamError("keypoints hold NaN or infinite values")
    if layout.normalised:
        xy = points[:, :, :2]
    elif size is None:
        raise TorchstreamError("keypoints are in model-input pixels but the model input size is "
                               "unknown (the buffer carries no tensors record with the input "
                               "dimensions)")
    else:
        xy = points[:, :, :2] / np.array(size, np.float64)
    if mapping is not None:
        xy = np.array([mapping.ox, mapping.oy]) + np.array([mapping.sx, mapping.sy]) * xy
    named = point_set(count, params.point_names, params.point_connections)
    return [Keypoints(tuple(zip(xy[i, :, 0].tolist(), xy[i, :, 1].tolist(), scores[i].tolist(),
                                strict=True)), named.names, named.connections)
            for i in range(len(rows))]


def detect(arrays: Sequence[np.ndarray], names: Sequence[str], params: DetectionParams,
           size: tuple[int, int] | None,
           mapping: FrameMapping | None = None) -> tuple[list[Region], Layout]:
    """Resolve the layout of ``arrays`` and decode them (see :func:`decode`)."""
    layout = resolve_layout([a.shape for a in arrays], names,
                            [a.dtype.kind in "iub" for a in arrays], params)
    return decode(arrays, layout, params, size, mapping), layout
