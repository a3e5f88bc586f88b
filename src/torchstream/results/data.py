"""The results data model and its JSON codec, free of GStreamer.

What the elements say about a buffer, as plain Python values: the tensors record
(:class:`TensorsRecord`, from an inference element), the frame mapping (:class:`FrameMapping`,
from preprocessing that crops or letterboxes), and the results (:class:`FrameResults`: regions,
frame classifications and the models that made them) with :func:`encode_results` /
:func:`decode_results`. :mod:`torchstream.gst.meta` writes and reads them on buffers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from torchstream.errors import TorchstreamError


@dataclass(frozen=True)
class TensorsRecord:
    """What an inference element says about the tensors of a buffer it produced."""

    model: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    dimensions: str  # this buffer's real shapes, caps syntax (innermost first)
    input_types: tuple[str, ...] = ()
    input_dimensions: str = ""
    # the published torchvision weights the model ran with (their categories label its
    # outputs when post-processing is given no labels); "" for any other model
    weights: str = ""


MAPPING_FIELDS = ("sx", "ox", "sy", "oy")




@dataclass(frozen=True)
class FrameMapping:
    """How a tensor's normalised coordinates map onto the original frame's.

    A point ``(x, y)`` normalised to [0, 1] of the tensor (x right, y down) is the point
    ``(ox + sx * x, oy + sy * y)`` normalised to [0, 1] of the frame. A centre crop has
    ``sx < 1`` and ``ox > 0``; a letterbox (padding around the picture) has ``sx > 1`` and
    ``ox < 0``, so the padding maps outside [0, 1].
    """

    sx: float = 1.0
    ox: float = 0.0
    sy: float = 1.0
    oy: float = 0.0

    def __post_init__(self) -> None:
        values = [getattr(self, k) for k in MAPPING_FIELDS]
        if not all(math.isfinite(float(v)) for v in values) or self.sx <= 0 or self.sy <= 0:
            raise TorchstreamError(
                f"frame mapping {dict(zip(MAPPING_FIELDS, values, strict=True))} is not valid "
                "(finite values, positive scales)")

    @staticmethod
    def identity() -> FrameMapping:
        return FrameMapping()

    @property
    def is_identity(self) -> bool:
        return (self.sx, self.ox, self.sy, self.oy) == (1.0, 0.0, 1.0, 0.0)

    def then(self, inner: FrameMapping) -> FrameMapping:
        """The mapping after one more preprocessing step, ``inner`` being that step's own
        mapping (its output's coordinates onto its input's).

        ``self`` maps the step's input onto the frame, so a point goes through ``inner``
        first and ``self`` second: ``self.then(inner).map_point(x, y) ==
        self.map_point(*inner.map_point(x, y))``.
        """
        return FrameMapping(
            sx=self.sx * inner.sx, ox=self.ox + self.sx * inner.ox,
            sy=self.sy * inner.sy, oy=self.oy + self.sy * inner.oy,
        )

    def map_point(self, x: float, y: float) -> tuple[float, float]:
        return self.ox + self.sx * x, self.oy + self.sy * y

    def map_box(self, x1: float, y1: float, x2: float,
                y2: float) -> tuple[float, float, float, float]:
        """A box normalised to the tensor, normalised to the frame; not clipped (a box over
        letterbox padding reaches outside [0, 1]: clip it before writing it as a region)."""
        return (*self.map_point(x1, y1), *self.map_point(x2, y2))


RESULTS_VERSION = 1
DETECTION_PARAM = "detection"


@dataclass
class Classification:
    """One classification result: ``attribute`` (what was classified, e.g. ``classification``,
    ``color``) -> ``label`` / ``label_id`` with its ``confidence``."""

    attribute: str
    label: str
    label_id: int
    confidence: float


@dataclass(frozen=True)
class Keypoints:
    """A region's points (a pose): ``points`` as (x, y, score), x and y normalised to the frame
    as the box is (a point may lie outside the box, or the frame); ``names`` one per point;
    ``connections`` the pairs of point indices the skeleton joins
    (:mod:`torchstream.decode.keypoints`).
    """

    points: tuple[tuple[float, float, float], ...]
    names: tuple[str, ...] = ()
    connections: tuple[tuple[int, int], ...] = ()

    def pixels(self, width: int, height: int) -> list[tuple[float, float]]:
        """The points in pixels of a ``width`` x ``height`` frame (not rounded)."""
        return [(x * width, y * height) for x, y, _ in self.points]


@dataclass(frozen=True)
class Mask:
    """A region's instance mask: ``width`` x ``height`` cells laid over ``window`` (x_min,
    y_min, x_max, y_max normalised to the frame; None: the region's box), row by row, as run
    lengths (``counts``: runs of 0 and 1 in turn, the first a run of 0, which may be empty).
    A detector's full-frame masks are cut to a window a little larger than the box (a mask
    reaches past its box by a pixel or two) at the model input's resolution, so they cost a few
    hundred bytes, not a frame each."""

    width: int
    height: int
    counts: tuple[int, ...]
    window: tuple[float, float, float, float] | None = None

    @staticmethod
    def from_array(cells: np.ndarray) -> Mask:
        """A bool ``[height, width]`` array -> its run lengths."""
        flat = np.asarray(cells, bool).ravel()
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
        if flat.size and flat[0]:
            runs.insert(0, 0)
        return Mask(int(cells.shape[1]), int(cells.shape[0]), tuple(int(r) for r in runs))

    def array(self) -> np.ndarray:
        """The bool ``[height, width]`` cells."""
        if sum(self.counts) != self.width * self.height:
            raise TorchstreamError(f"mask run lengths sum to {sum(self.counts)}, not "
                                   f"{self.width} x {self.height}")
        values = np.arange(len(self.counts)) % 2 == 1
        return np.repeat(values, self.counts).reshape(self.height, self.width)

    @property
    def area(self) -> float:
        """The share of the box the mask covers (0..1)."""
        return sum(self.counts[1::2]) / max(1, self.width * self.height)


@dataclass(frozen=True)
class Segmentation:
    """A frame's class map (semantic segmentation): one class id per cell of a ``width`` x
    ``height`` grid (the model's output resolution) laid over the model input, which
    ``mapping`` puts on the frame; run-length coded over the cells row by row (``values[i]``
    repeated ``counts[i]`` times). ``labels``: names by class id (empty: none known)."""

    width: int
    height: int
    values: tuple[int, ...]
    counts: tuple[int, ...]
    labels: tuple[str, ...] = ()
    mapping: FrameMapping = field(default_factory=FrameMapping)

    @staticmethod
    def from_array(class_map: np.ndarray, labels: tuple[str, ...] = (),
                   mapping: FrameMapping | None = None) -> Segmentation:
        """An integer ``[height, width]`` class map -> its run lengths."""
        flat = np.asarray(class_map).ravel()
        starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1]) \
            if flat.size else np.zeros(0, np.int64)
        counts = np.diff(np.concatenate([starts, [flat.size]])) if flat.size else starts
        return Segmentation(int(class_map.shape[1]), int(class_map.shape[0]),
                            tuple(flat[starts].astype(np.int64).tolist()),
                            tuple(counts.astype(np.int64).tolist()), tuple(labels),
                            mapping or FrameMapping())

    def array(self) -> np.ndarray:
        """The ``[height, width]`` class ids (int32)."""
        if sum(self.counts) != self.width * self.height:
            raise TorchstreamError(f"segmentation run lengths sum to {sum(self.counts)}, not "
                                   f"{self.width} x {self.height}")
        return np.repeat(np.array(self.values, np.int32),
                         self.counts).reshape(self.height, self.width)

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    def shares(self) -> dict[int, float]:
        """Class id -> the share of the map's cells it holds, largest first."""
        totals: dict[int, int] = {}
        for value, count in zip(self.values, self.counts, strict=True):
            totals[value] = totals.get(value, 0) + count
        cells = max(1, self.width * self.height)
        return {k: v / cells for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


@dataclass
class Region:
    """A detected object: a box normalised to [0, 1] of the frame (x right, y down), its label,
    an id unique in the frame, an optional parent region id, the classifications attached
    to this region, and the id of the object across frames (``object_track``; None when
    untracked), and its keypoints and mask when the detector gives them."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    label: str
    label_id: int
    confidence: float
    region_id: int
    parent_id: int | None = None
    classifications: list[Classification] = field(default_factory=list)
    object_id: int | None = None
    keypoints: Keypoints | None = None
    mask: Mask | None = None

    @property
    def roi_id(self) -> int:
        """The id of its GstVideoRegionOfInterestMeta mirror: the object id when tracked (as
        DL Streamer's tracker sets it), else the region id."""
        return self.region_id if self.object_id is None else self.object_id

    def classification(self, attribute: str) -> Classification | None:
        """This region's classification of ``attribute``, or None."""
        return _by_attribute(self.classifications, attribute)

    def set_classification(self, c: Classification) -> None:
        """Add ``c`` to this region, replacing a classification of the same attribute."""
        _set_by_attribute(self.classifications, c)

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` frame: ``(x, y, w, h)``, rounded and
        clipped to the frame (what the GstVideoRegionOfInterestMeta mirror holds)."""
        return _pixel_box((self.x_min, self.y_min, self.x_max, self.y_max), width, height)

    def mask_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Where its mask's cells lie in pixels of the frame, ``(x, y, w, h)``: its box, or
        the mask's own window, rounded but not clipped (a window may reach past the frame's
        edge, over letterbox padding)."""
        if self.mask is None or self.mask.window is None:
            return self.pixels(width, height)
        return _pixel_box(self.mask.window, width, height, clip=False)


def _pixel_box(box, width: int, height: int, clip: bool = True) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(box[0] * width), round(box[1] * height), round(box[2] * width),
                      round(box[3] * height))
    if clip:
        x0, x1 = _clip(x0, width), _clip(x1, width)
        y0, y1 = _clip(y0, height), _clip(y1, height)
    return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


@dataclass(frozen=True)
class ModelRecord:
    """Which model (and which of its output layers) produced results on a buffer."""

    name: str
    layers: tuple[str, ...] = ()


@dataclass
class FrameResults:
    """Everything torchstream knows about one frame: regions, frame-level classifications and
    the models that produced them, and a class map from a segmentation model. Empty when a buffer
    carries no results."""

    regions: list[Region] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    segmentation: Segmentation | None = None

    def __bool__(self) -> bool:
        return bool(self.regions or self.classifications or self.models
                    or self.segmentation is not None)

    def classification(self, attribute: str) -> Classification | None:
        """The frame-level classification of ``attribute``, or None."""
        return _by_attribute(self.classifications, attribute)

    def region(self, region_id: int) -> Region | None:
        return next((r for r in self.regions if r.region_id == region_id), None)

    def next_region_id(self) -> int:
        """An id no region of this frame uses yet (one more than the largest)."""
        return max((r.region_id for r in self.regions), default=-1) + 1

    def set_classification(self, c: Classification) -> None:
        """Add ``c``, replacing a frame-level classification of the same attribute."""
        _set_by_attribute(self.classifications, c)

    def add_model(self, record: ModelRecord) -> None:
        if record not in self.models:
            self.models.append(record)


def _by_attribute(items: list[Classification], attribute: str) -> Classification | None:
    return next((c for c in items if c.attribute == attribute), None)


def _set_by_attribute(items: list[Classification], c: Classification) -> None:
    for i, old in enumerate(items):
        if old.attribute == c.attribute:
            items[i] = c
            return
    items.append(c)


def _clip(value: int, limit: int) -> int:
    return min(max(int(value), 0), int(limit))


# --- serialisation: one compact JSON string in the custom meta's "results" field --------------
#
#   {"v":1, "c":[classification...], "r":[region...], "m":[[model, [layer...]]...],
#    "s":[width, height, [value...], [run...], [label...], [sx, ox, sy, oy]] (a class map),
#    "roi":[[region_id, label]...] (the ROI metas written as mirrors, to replace them later)}
#   classification = [attribute, label, label_id, confidence]
#   region = [x_min, y_min, x_max, y_max, label, label_id, confidence, region_id, parent_id|null,
#             [classification...](, object_id|null when tracked, or with keypoints or a mask
#             (, {"k": [x, y, score, ...], "n": [name...], "c": [i, j, ...]  with keypoints
#                 "m": [width, height, [run...](, [x_min, y_min, x_max, y_max])] with a mask}))]
#
# Python's JSON writes floats with repr(), so every float reads back bit for bit.


def _finite(value, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise TorchstreamError(f"results metadata: {what} is not a finite number ({value!r})")
    return number


def _encode_classification(c: Classification) -> list:
    return [str(c.attribute), str(c.label), int(c.label_id),
            _finite(c.confidence, f"confidence of '{c.attribute}'")]


def _decode_classification(item: list) -> Classification:
    attribute, label, label_id, confidence = item
    return Classification(attribute, label, int(label_id), float(confidence))


def _encode_region(r: Region) -> list:
    box = [_finite(getattr(r, k), f"{k} of region {r.region_id}")
           for k in ("x_min", "y_min", "x_max", "y_max")]
    if not all(0.0 <= v <= 1.0 for v in box) or box[0] > box[2] or box[1] > box[3]:
        raise TorchstreamError(
            f"results metadata: region {r.region_id} box {box} is not a normalised box "
            "(0 <= min <= max <= 1); clip it to the frame first"
        )
    return box + [
        str(r.label), int(r.label_id), _finite(r.confidence, f"confidence of region {r.region_id}"),
        int(r.region_id), None if r.parent_id is None else int(r.parent_id),
        [_encode_classification(c) for c in r.classifications],
    ] + _encode_tail(r)


def _encode_tail(r: Region) -> list:
    object_id = None if r.object_id is None else int(r.object_id)
    if r.keypoints is None and r.mask is None:
        return [] if object_id is None else [object_id]
    extra: dict = {}
    if r.keypoints is not None:
        k = r.keypoints
        points = [_finite(v, f"keypoint of region {r.region_id}") for p in k.points for v in p]
        if any(len(p) != 3 for p in k.points) or (k.names and len(k.names) != len(k.points)):
            raise TorchstreamError(f"results metadata: region {r.region_id} keypoints need "
                                   "(x, y, score) each and one name per point")
        extra.update(k=points, n=[str(n) for n in k.names],
                     c=[int(i) for pair in k.connections for i in pair])
    if r.mask is not None:
        m = r.mask
        if sum(m.counts) != m.width * m.height or min(m.counts, default=0) < 0:
            raise TorchstreamError(f"results metadata: region {r.region_id} mask runs do not "
                                   f"cover its {m.width} x {m.height} cells")
        extra["m"] = [int(m.width), int(m.height), [int(c) for c in m.counts]] + (
            [] if m.window is None else [[_finite(v, f"mask window of region {r.region_id}")
                                          for v in m.window]])
    return [object_id, extra]


def _decode_keypoints(doc: dict) -> Keypoints:
    flat, joins = doc["k"], doc["c"]
    points = tuple((float(flat[i]), float(flat[i + 1]), float(flat[i + 2]))
                   for i in range(0, len(flat), 3))
    return Keypoints(points, tuple(doc["n"]),
                     tuple((int(joins[i]), int(joins[i + 1])) for i in range(0, len(joins), 2)))


def _decode_region(item: list) -> Region:
    x0, y0, x1, y1, label, label_id, confidence, region_id, parent_id, classes = item[:10]
    object_id = int(item[10]) if len(item) > 10 and item[10] is not None else None
    extra = item[11] if len(item) > 11 else {}
    keypoints = _decode_keypoints(extra) if "k" in extra else None
    mask = None
    if "m" in extra:
        m = extra["m"]
        mask = Mask(int(m[0]), int(m[1]), tuple(int(c) for c in m[2]),
                    tuple(float(v) for v in m[3]) if len(m) > 3 else None)
    return Region(float(x0), float(y0), float(x1), float(y1), label, int(label_id),
                  float(confidence), int(region_id), None if parent_id is None else int(parent_id),
                  [_decode_classification(c) for c in classes], object_id, keypoints, mask)


def encode_results(results: FrameResults, extra: dict | None = None) -> str:
    """``results`` as the compact string the results meta holds (validated)."""
    ids = [int(r.region_id) for r in results.regions]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise TorchstreamError(f"results metadata: region ids {dup} are used more than once")
    doc: dict = {"v": RESULTS_VERSION}
    if results.classifications:
        doc["c"] = [_encode_classification(c) for c in results.classifications]
    if results.regions:
        doc["r"] = [_encode_region(r) for r in results.regions]
    if results.models:
        doc["m"] = [[str(m.name), [str(x) for x in m.layers]] for m in results.models]
    if results.segmentation is not None:
        seg = results.segmentation
        if sum(seg.counts) != seg.width * seg.height or len(seg.values) != len(seg.counts):
            raise TorchstreamError("results metadata: the segmentation's runs do not cover its "
                                   f"{seg.width} x {seg.height} cells")
        m = seg.mapping
        doc["s"] = [int(seg.width), int(seg.height), [int(v) for v in seg.values],
                    [int(c) for c in seg.counts], [str(x) for x in seg.labels],
                    [float(m.sx), float(m.ox), float(m.sy), float(m.oy)]]
    doc.update(extra or {})
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _decode_segmentation(item: list) -> Segmentation:
    width, height, values, counts, labels, (sx, ox, sy, oy) = item
    return Segmentation(int(width), int(height), tuple(int(v) for v in values),
                        tuple(int(c) for c in counts), tuple(labels),
                        FrameMapping(float(sx), float(ox), float(sy), float(oy)))


def decode_results(text: str) -> tuple[FrameResults, dict]:
    """The results of a results-meta string, and its bookkeeping fields (``roi``)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != RESULTS_VERSION:
            raise ValueError(f"version {doc.get('v') if isinstance(doc, dict) else None}")
        results = FrameResults(
            regions=[_decode_region(r) for r in doc.get("r", [])],
            classifications=[_decode_classification(c) for c in doc.get("c", [])],
            models=[ModelRecord(name, tuple(layers)) for name, layers in doc.get("m", [])],
            segmentation=_decode_segmentation(doc["s"]) if "s" in doc else None,
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise TorchstreamError(f"results metadata cannot be read: {exc}") from None
    return results, {k: doc[k] for k in ("roi",) if k in doc}
