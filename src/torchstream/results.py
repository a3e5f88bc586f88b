"""The results data model and its JSON codec, free of GStreamer.

What the elements say about a buffer, as plain Python values: the tensors record
(:class:`TensorsRecord`, from an inference element), the frame mapping (:class:`FrameMapping`,
from preprocessing that crops or letterboxes), and the results (:class:`FrameResults`: regions,
frame classifications and the models that made them) with :func:`encode_results` /
:func:`decode_results`. :mod:`torchstream.meta` writes and reads them on buffers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

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


@dataclass
class Region:
    """A detected object: a box normalised to [0, 1] of the frame (x right, y down), its label,
    an id unique in the frame, an optional parent region id, the classifications attached
    to this region, and the id of the object across frames (``object_track``; None when
    untracked)."""

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
        x0 = _clip(round(self.x_min * width), width)
        y0 = _clip(round(self.y_min * height), height)
        x1 = _clip(round(self.x_max * width), width)
        y1 = _clip(round(self.y_max * height), height)
        return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


@dataclass(frozen=True)
class ModelRecord:
    """Which model (and which of its output layers) produced results on a buffer."""

    name: str
    layers: tuple[str, ...] = ()


@dataclass
class FrameResults:
    """Everything torchstream knows about one frame: regions, frame-level classifications and
    the models that produced them. Empty when a buffer carries no results."""

    regions: list[Region] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.regions or self.classifications or self.models)

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
#    "roi":[[region_id, label]...] (the ROI metas written as mirrors, to replace them later)}
#   classification = [attribute, label, label_id, confidence]
#   region = [x_min, y_min, x_max, y_max, label, label_id, confidence, region_id, parent_id|null,
#             [classification...](, object_id when tracked)]
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
    ] + ([] if r.object_id is None else [int(r.object_id)])


def _decode_region(item: list) -> Region:
    x0, y0, x1, y1, label, label_id, confidence, region_id, parent_id, classes = item[:10]
    object_id = int(item[10]) if len(item) > 10 else None
    return Region(float(x0), float(y0), float(x1), float(y1), label, int(label_id),
                  float(confidence), int(region_id), None if parent_id is None else int(parent_id),
                  [_decode_classification(c) for c in classes], object_id)


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
    doc.update(extra or {})
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
        )
    except (ValueError, TypeError) as exc:
        raise TorchstreamError(f"results metadata cannot be read: {exc}") from None
    return results, {k: doc[k] for k in ("roi",) if k in doc}
