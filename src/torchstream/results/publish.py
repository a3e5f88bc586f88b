"""Results as JSON Lines: one JSON object per frame (see docs/elements.md, meta_publish).

Pure Python: :func:`frame_record` turns a frame's :class:`~torchstream.gst.meta.FrameResults` into a
plain dict, :class:`JsonLinesWriter` writes such dicts to a file or stdout, one line each.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from torchstream.errors import Domain, TorchstreamError
from torchstream.results.data import Classification, FrameResults, Keypoints, Region, Segmentation

CLOCK_TIME_NONE = 2**64 - 1


def _classification(c: Classification) -> dict:
    return {"attribute": c.attribute, "label": c.label, "label_id": c.label_id,
            "confidence": c.confidence}


def _region(r: Region, width: int | None, height: int | None) -> dict:
    out = {
        "id": r.region_id,
        "object_id": r.object_id,
        "parent_id": r.parent_id,
        "label": r.label,
        "label_id": r.label_id,
        "confidence": r.confidence,
        "box": {"x_min": r.x_min, "y_min": r.y_min, "x_max": r.x_max, "y_max": r.y_max},
    }
    if width and height:
        x, y, w, h = r.pixels(width, height)
        out["pixels"] = {"x": x, "y": y, "w": w, "h": h}
    else:
        out["pixels"] = None
    out["classifications"] = [_classification(c) for c in r.classifications]
    if r.keypoints is not None:
        out["keypoints"] = _keypoints(r.keypoints, width, height)
    if r.mask is not None:
        window = r.mask.window or (r.x_min, r.y_min, r.x_max, r.y_max)
        out["mask"] = {"width": r.mask.width, "height": r.mask.height,
                       "window": dict(zip(("x_min", "y_min", "x_max", "y_max"), window,
                                          strict=True)),
                       "counts": list(r.mask.counts)}
        if width and height:
            x, y, w, h = r.mask_pixels(width, height)
            out["mask"]["pixels"] = {"x": x, "y": y, "w": w, "h": h}
    return out


def _keypoints(k: Keypoints, width: int | None, height: int | None) -> dict:
    """Points named and normalised as the box is (pixels too, when the frame size is known);
    connections as pairs of point names."""
    names = k.names or tuple(str(i) for i in range(len(k.points)))
    points = []
    for name, (x, y, score) in zip(names, k.points, strict=True):
        point = {"name": name, "x": x, "y": y, "score": score}
        if width and height:
            point["pixels"] = {"x": x * width, "y": y * height}
        points.append(point)
    return {"points": points, "connections": [[names[a], names[b]] for a, b in k.connections]}


def _time(value: int | None) -> int | None:
    return None if value is None or value == CLOCK_TIME_NONE or value < 0 else int(value)


def _segmentation(seg: Segmentation, class_map: bool) -> dict:
    """Each class's share of the map (largest first); with ``class_map`` the map itself."""
    m = seg.mapping
    out = {"width": seg.width, "height": seg.height,
           "mapping": {"sx": m.sx, "ox": m.ox, "sy": m.sy, "oy": m.oy},
           "classes": [{"label_id": k, "label": seg.label(k), "share": v}
                       for k, v in seg.shares().items()]}
    if class_map:
        out["class_map"] = {"values": list(seg.values), "counts": list(seg.counts)}
    return out


def frame_record(results: FrameResults, frame: int, pts: int | None, duration: int | None,
                 width: int | None, height: int | None, class_map: bool = False) -> dict:
    """The JSON object of one frame (``pts``/``duration`` in ns, None when unknown)."""
    record = {
        "frame": int(frame),
        "pts": _time(pts),
        "duration": _time(duration),
        "width": width,
        "height": height,
        "classifications": [_classification(c) for c in results.classifications],
        "regions": [_region(r, width, height) for r in results.regions],
        "models": [{"name": m.name, "layers": list(m.layers)} for m in results.models],
    }
    if results.segmentation is not None:
        record["segmentation"] = _segmentation(results.segmentation, class_map)
    return record


FORMATS = ("torchstream", "dlstreamer")
_OBJECT_KEYS = {"x", "y", "w", "h", "region_id", "roi_type", "detection", "id"}


def dlstreamer_record(results: FrameResults, pts: int | None, width: int | None,
                      height: int | None) -> dict:
    """The JSON layout of DL Streamer's gvametaconvert, for programs that read it:
    ``resolution``, ``timestamp`` (ns), ``objects`` (pixel ``x, y, w, h``, ``region_id``,
    ``roi_type``, ``detection`` with the normalised ``bounding_box``, ``confidence``,
    ``label_id``, ``label``, and each classification of the region under its attribute name),
    and the frame's own classifications as ``tensors``."""
    objects = []
    for r in results.regions:
        obj: dict = {}
        if width and height:
            x, y, w, h = r.pixels(width, height)
            obj.update(x=x, y=y, w=w, h=h)
        obj["region_id"] = r.region_id
        if r.object_id is not None:
            obj["id"] = r.object_id  # gvametaconvert's key for the tracker's object id
        obj["roi_type"] = r.label
        obj["detection"] = {
            "bounding_box": {"x_min": r.x_min, "y_min": r.y_min, "x_max": r.x_max,
                             "y_max": r.y_max},
            "confidence": r.confidence, "label_id": r.label_id, "label": r.label}
        for c in r.classifications:
            key = c.attribute if c.attribute not in _OBJECT_KEYS else f"{c.attribute}_"
            obj[key] = {"label": c.label, "label_id": c.label_id, "confidence": c.confidence}
        objects.append(obj)
    record = {"resolution": {"width": width, "height": height}, "timestamp": _time(pts),
              "objects": objects}
    if results.classifications:
        record["tensors"] = [{"name": c.attribute, "label": c.label, "label_id": c.label_id,
                              "confidence": c.confidence} for c in results.classifications]
    return record


def json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


class JsonLinesWriter:
    """Writes one JSON object per line to ``path``, or to stdout when ``path`` is empty.

    The file is opened (truncated, or ``append``-ed to) by :meth:`open` and flushed and closed
    by :meth:`close`;
    stdout is flushed after every line, so a reader of a pipe sees each frame at once.
    """

    def __init__(self, path: str | None, append: bool = False) -> None:
        self.path = path or ""
        self.append = append
        self.stream: TextIO | None = None

    def open(self) -> None:
        if not self.path:
            self.stream = sys.stdout
            return
        try:
            self.stream = open(self.path, "a" if self.append else "w", encoding="utf-8")
        except OSError as exc:
            raise TorchstreamError(
                f"property 'file-path': cannot open '{self.path}' for writing: "
                f"{exc.strerror or exc}",
                Domain.RESOURCE,
            ) from None

    def write(self, record: dict) -> None:
        if self.stream is None:
            raise TorchstreamError("meta_publish: the output is not open", Domain.RESOURCE)
        try:
            self.stream.write(json_line(record) + "\n")
            if not self.path:
                self.stream.flush()
        except OSError as exc:
            raise TorchstreamError(
                f"cannot write to '{self.path or 'stdout'}': {exc.strerror or exc}",
                Domain.RESOURCE,
            ) from None

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is None:
            return
        try:
            if self.path:
                stream.close()
            else:
                stream.flush()
        except OSError as exc:
            raise TorchstreamError(
                f"cannot write to '{self.path or 'stdout'}': {exc.strerror or exc}",
                Domain.RESOURCE,
            ) from None
