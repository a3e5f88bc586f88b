"""The metadata codec: what torchstream attaches to buffers, written and read in one place.

The records are the plain data model of :mod:`torchstream.results.data` (re-exported here); this
module puts them on buffers and reads them back. Two kinds of records travel on buffers:

- the tensors record (:class:`TensorsRecord`): what an inference element says about the
  tensors of a buffer it produced (model, output names, this buffer's real shapes);
- the results (:class:`FrameResults`): regions (:class:`Region`), frame-level classifications
  (:class:`Classification`) and the models that made them (:class:`ModelRecord`), read and
  written with :func:`read_results`, :func:`write_results`, :func:`add_classification`,
  :func:`add_region` (see docs/metadata.md). Regions are mirrored as standard
  ``GstVideoRegionOfInterestMeta`` for C elements and other tools.

Custom metas (``GstCustomMeta``) survive queue, tee, videoconvert and videoscale, but the
PyGObject binding of 1.22 hands out a *copy* of a custom meta's structure, so writes through it
are lost. Writing therefore goes through the C API (ctypes on libgstreamer); reading stays in
PyGObject.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

from torchstream.errors import TorchstreamError
from torchstream.gst import Gst, clib
from torchstream.results.data import (
    DETECTION_PARAM,
    MAPPING_FIELDS,
    Classification,
    FrameMapping,
    FrameResults,
    ModelRecord,
    Region,
    TensorsRecord,
    decode_results,
    encode_results,
)

TENSORS_META = "TorchstreamTensorsMeta"

_G_TYPE_STRING = 16 << 2  # fundamental GType ids are fixed by GLib's ABI


_registered: set[str] = set()


def _register(name: str) -> None:
    if name in _registered:
        return
    if Gst.meta_get_info(name) is None:
        Gst.Meta.register_custom(name, [], None, None)
    _registered.add(name)


def write_custom_meta(buf: Gst.Buffer, name: str, fields: dict[str, str]) -> None:
    """Replace ``buf``'s custom meta ``name`` by one holding ``fields`` (string values).

    ``buf`` must be writable (a buffer this element created, or one made writable).
    """
    _register(name)
    ptr = hash(buf)  # PyGObject hashes a boxed GstBuffer by its C pointer
    key = name.encode()
    old = clib.gst.gst_buffer_get_custom_meta(ptr, key)
    if old:
        clib.gst.gst_buffer_remove_meta(ptr, old)
    meta = clib.gst.gst_buffer_add_custom_meta(ptr, key)
    if not meta:
        raise RuntimeError(f"could not add custom meta {name} (buffer not writable?)")
    structure = ctypes.c_void_p(clib.gst.gst_custom_meta_get_structure(meta))
    for key, value in fields.items():
        clib.gst.gst_structure_set(
            structure,
            ctypes.c_char_p(key.encode()),
            ctypes.c_size_t(_G_TYPE_STRING),
            ctypes.c_char_p(value.encode()),
            ctypes.c_void_p(None),
        )


def read_custom_meta(buf: Gst.Buffer, name: str) -> dict[str, str] | None:
    _register(name)
    meta = buf.get_custom_meta(name)
    if meta is None:
        return None
    structure = meta.get_structure()
    return {structure.nth_field_name(i): structure.get_value(structure.nth_field_name(i))
            for i in range(structure.n_fields())}


def attach_tensors_record(buf: Gst.Buffer, record: TensorsRecord) -> None:
    write_custom_meta(buf, TENSORS_META, {
        "model": record.model,
        "names": ",".join(record.names),
        "types": ",".join(record.types),
        "dimensions": record.dimensions,
        "input-types": ",".join(record.input_types),
        "input-dimensions": record.input_dimensions,
        "weights": record.weights,
    })


def read_tensors_record(buf: Gst.Buffer) -> TensorsRecord | None:
    fields = read_custom_meta(buf, TENSORS_META)
    if fields is None:
        return None

    def split(key: str) -> tuple[str, ...]:
        value = fields.get(key) or ""
        return tuple(value.split(",")) if value else ()

    return TensorsRecord(
        model=fields.get("model", ""),
        names=split("names"),
        types=split("types"),
        dimensions=fields.get("dimensions", ""),
        input_types=split("input-types"),
        input_dimensions=fields.get("input-dimensions", ""),
        weights=fields.get("weights", ""),
    )


# ---------------------------------------------------------------------------------------------
# Frame mapping: where a tensor's normalised coordinates lie in the original frame
# ---------------------------------------------------------------------------------------------
#
# Preprocessing that crops or letterboxes moves the picture inside the tensor, so a box found
# on the tensor is not the box on the frame. The element that moves the picture
# (tensor_resize_crop) records how on its output buffers; custom metas are copied along by
# BaseTransform elements and by pytorch_tensor_inference, so post-processing reads the record
# and puts boxes back on the frame. A plain resize, even one that changes the aspect ratio,
# leaves normalised coordinates unchanged and needs no record.

FRAME_MAPPING_META = "TorchstreamFrameMapping"
def write_frame_mapping(buf: Gst.Buffer, mapping: FrameMapping) -> None:
    """Record on ``buf`` (writable) where its tensor lies in the original frame, replacing any
    record it carried. Values are written with repr(), so they read back bit for bit."""
    write_custom_meta(buf, FRAME_MAPPING_META,
                      {k: repr(float(getattr(mapping, k))) for k in MAPPING_FIELDS})


def read_frame_mapping(buf: Gst.Buffer) -> FrameMapping | None:
    """The frame mapping on ``buf``, or None when it carries none (its tensor's normalised
    coordinates are the frame's)."""
    fields = read_custom_meta(buf, FRAME_MAPPING_META)
    if fields is None:
        return None
    try:
        return FrameMapping(**{k: float(fields[k]) for k in MAPPING_FIELDS})
    except (KeyError, TypeError, ValueError) as exc:
        raise TorchstreamError(f"frame mapping metadata cannot be read: {exc!r}") from None

# --- end of frame mapping ---------------------------------------------------------------------


# -- region batches (tensor_roi_crop) ---------------------------------------------------------
# A tensor buffer whose rows are crops of a frame's regions says which region each row is, so
# that post-processing can attach row i's result to region ids[i] instead of to the frame.

ROI_BATCH_META = "TorchstreamRoiBatchMeta"


def write_roi_batch(buf: Gst.Buffer, ids) -> None:
    """Record on ``buf`` (writable) that its tensors' rows are the regions ``ids``, in order."""
    write_custom_meta(buf, ROI_BATCH_META, {"ids": ",".join(str(int(i)) for i in ids)})


def read_roi_batch(buf: Gst.Buffer) -> tuple[int, ...] | None:
    """The region ids of ``buf``'s rows, or None when ``buf`` is not a region batch."""
    fields = read_custom_meta(buf, ROI_BATCH_META)
    if fields is None:
        return None
    text = (fields.get("ids") or "").strip()
    try:
        return tuple(int(i) for i in text.split(",")) if text else ()
    except ValueError:
        raise TorchstreamError(f"region batch record is malformed: ids {text!r}") from None

# -- end of region batches ----------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Results: classifications and regions on frames (and on tensor buffers before aggregation)
# ---------------------------------------------------------------------------------------------

RESULTS_META = "TorchstreamResultsMeta"
RESULTS_FIELD = "results"
# --- the GstVideoRegionOfInterestMeta mirror --------------------------------------------------

_STRUCTURE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9/\-_.:+]*")


class _RoiMetaC(ctypes.Structure):
    """The C layout of GstVideoRegionOfInterestMeta (GstMeta header first)."""

    _fields_ = [
        ("flags", ctypes.c_int),
        ("info", ctypes.c_void_p),
        ("roi_type", ctypes.c_uint32),
        ("id", ctypes.c_int),
        ("parent_id", ctypes.c_int),
        ("x", ctypes.c_uint),
        ("y", ctypes.c_uint),
        ("w", ctypes.c_uint),
        ("h", ctypes.c_uint),
        ("params", ctypes.c_void_p),
    ]




_video = ctypes.CDLL("libgstvideo-1.0.so.0")
_video.gst_video_region_of_interest_meta_api_get_type.restype = ctypes.c_size_t


def _remove_roi_mirrors(buf: Gst.Buffer, mirrors: set[tuple[int, str]]) -> None:
    """Remove the ROI metas whose (id, roi_type) is in ``mirrors``."""
    if not mirrors:
        return
    ptr = hash(buf)
    api = _video.gst_video_region_of_interest_meta_api_get_type()
    state = ctypes.c_void_p(None)
    doomed = []
    while True:
        meta = clib.gst.gst_buffer_iterate_meta_filtered(ptr, ctypes.byref(state), api)
        if not meta:
            break
        roi = _RoiMetaC.from_address(meta)
        roi_type = (clib.glib.g_quark_to_string(roi.roi_type) or b"").decode("utf-8", "replace")
        if (roi.id, roi_type) in mirrors:
            doomed.append(meta)
    for meta in doomed:
        clib.gst.gst_buffer_remove_meta(ptr, meta)


def _add_roi_mirror(buf: Gst.Buffer, r: Region, width: int, height: int) -> None:
    from torchstream.gst import GstVideo

    x, y, w, h = r.pixels(width, height)
    roi = GstVideo.buffer_add_video_region_of_interest_meta(buf, r.label, x, y, w, h)
    if roi is None:
        raise TorchstreamError("could not add a region-of-interest meta (buffer not writable?)")
    roi.id = int(r.roi_id)
    roi.parent_id = -1 if r.parent_id is None else int(r.parent_id)
    detection = Gst.Structure.new_empty(DETECTION_PARAM)
    for key in ("x_min", "y_min", "x_max", "y_max", "confidence"):
        detection.set_value(key, float(getattr(r, key)))
    detection.set_value("label_id", int(r.label_id))
    detection.set_value("label", str(r.label))
    roi.add_param(detection)
    for c in r.classifications:
        if not _STRUCTURE_NAME.fullmatch(c.attribute) or c.attribute == DETECTION_PARAM:
            continue  # not a valid GstStructure name: the results meta still holds it
        param = Gst.Structure.new_empty(c.attribute)
        param.set_value("label", str(c.label))
        param.set_value("label_id", int(c.label_id))
        param.set_value("confidence", float(c.confidence))
        roi.add_param(param)


def is_writable(buf: Gst.Buffer) -> bool:
    """Whether metadata may be added to ``buf`` (PyGObject cannot tell: it has no
    ``is_writable``, and its refcounts mislead)."""
    return bool(clib.gst.gst_mini_object_is_writable(hash(buf)))


def _check_writable(buf: Gst.Buffer) -> None:
    if not is_writable(buf):
        raise TorchstreamError(
            "results metadata can only be written on a writable buffer (this one is shared): "
            "write from an in-place, non-passthrough element, or on a buffer you own"
        )


def _frame_size_of(buf: Gst.Buffer) -> tuple[int, int] | None:
    from torchstream.gst import GstVideo

    vmeta = GstVideo.buffer_get_video_meta(buf)
    if vmeta is not None and vmeta.width and vmeta.height:
        return int(vmeta.width), int(vmeta.height)
    return None


# --- the public API ---------------------------------------------------------------------------


def read_results(buf: Gst.Buffer) -> FrameResults:
    """The results on ``buf`` as plain objects (empty when it carries none).

    Works wherever the buffer went: the results meta survives queue, tee, videoconvert and
    videoscale, and boxes are normalised, so they hold for any frame size.
    """
    fields = read_custom_meta(buf, RESULTS_META)
    if not fields or not fields.get(RESULTS_FIELD):
        return FrameResults()
    return decode_results(fields[RESULTS_FIELD])[0]


def write_results(buf: Gst.Buffer, results: FrameResults, frame_width: int | None = None,
                  frame_height: int | None = None) -> None:
    """Put ``results`` on ``buf`` (writable), replacing any results it carried.

    Regions are also mirrored as ``GstVideoRegionOfInterestMeta`` (roi_type = label, pixel
    box, id = the object id when tracked, else region_id, a ``detection`` param, one param
    per region classification) when the
    frame size is known: given here, or from the buffer's ``GstVideoMeta``. The mirrors written
    by an earlier call are removed first; ROI metas of other elements are left alone. Without a
    frame size, the mirrors of regions still present (same id and label) are kept as they are
    and the others are removed.
    """
    _check_writable(buf)
    old: set[tuple[int, str]] = set()
    fields = read_custom_meta(buf, RESULTS_META)
    if fields and fields.get(RESULTS_FIELD):
        try:
            _, extra = decode_results(fields[RESULTS_FIELD])
            old = {(int(i), str(label)) for i, label in extra.get("roi", [])}
        except TorchstreamError:
            old = set()
    if (frame_width is None) != (frame_height is None):
        raise TorchstreamError("write_results: give both frame_width and frame_height, or neither")
    size = (int(frame_width), int(frame_height)) if frame_width is not None else None
    if size is None:
        size = _frame_size_of(buf)
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise TorchstreamError(f"write_results: frame size {size[0]}x{size[1]} is not positive")
    text_extra: dict = {}
    current = {(int(r.roi_id), str(r.label)) for r in results.regions}
    keep = set() if size is not None else old & current
    # encode first: invalid results must not leave the buffer half-written
    mirrors = current if size is not None else keep
    if mirrors:
        text_extra["roi"] = sorted([i, label] for i, label in mirrors)
    text = encode_results(results, text_extra)
    _remove_roi_mirrors(buf, old - keep)
    if size is not None:
        for r in results.regions:
            _add_roi_mirror(buf, r, *size)
    write_custom_meta(buf, RESULTS_META, {RESULTS_FIELD: text})


def add_classification(buf: Gst.Buffer, c: Classification,
                       model: ModelRecord | None = None) -> None:
    """Attach a frame-level classification (replacing one of the same attribute), and the
    record of the model that made it."""
    results = read_results(buf)
    results.set_classification(c)
    if model is not None:
        results.add_model(model)
    write_results(buf, results)


def add_region(buf: Gst.Buffer, r: Region, frame_width: int, frame_height: int) -> None:
    """Attach one more region (its region_id must be new in the frame) and its ROI mirror."""
    results = read_results(buf)
    if results.region(r.region_id) is not None:
        raise TorchstreamError(
            f"region id {r.region_id} is already used on this buffer; "
            f"FrameResults.next_region_id() gives a free one"
        )
    results.regions.append(r)
    write_results(buf, results, frame_width, frame_height)


def clear_results(buf: Gst.Buffer) -> None:
    """Remove the results meta and the ROI metas it mirrored from ``buf`` (writable)."""
    fields = read_custom_meta(buf, RESULTS_META)
    if not fields:
        return
    _check_writable(buf)
    try:
        _, extra = decode_results(fields.get(RESULTS_FIELD) or "{}")
        _remove_roi_mirrors(buf, {(int(i), str(label)) for i, label in extra.get("roi", [])})
    except TorchstreamError:
        pass
    ptr = hash(buf)
    meta = clib.gst.gst_buffer_get_custom_meta(ptr, RESULTS_META.encode())
    if meta:
        clib.gst.gst_buffer_remove_meta(ptr, meta)


# -- raw tensors kept on a frame ------------------------------------------------------------
# Raw tensors kept on a frame (meta_aggregate's ``attach-tensor-data``).
#
# One custom meta, ``TorchstreamTensorDataMeta``, whose structure holds, per source (the
# aggregator pad the tensors came from, e.g. ``tensor_0``), the tensor buffer itself (a reference:
# its memory is not copied) and its caps. The meta survives queue, tee, videoconvert and
# videoscale like the results meta. Written through the C API (PyGObject hands out a copy of a
# custom meta's structure), read with PyGObject.

TENSOR_DATA_META = "TorchstreamTensorDataMeta"
_CAPS_SUFFIX = "-caps"



@dataclass
class AttachedTensors:
    """One inference buffer kept on a frame: where it came from, its caps and the buffer."""

    source: str
    caps: Gst.Caps
    buffer: Gst.Buffer


def attach_tensor_data(frame: Gst.Buffer, items: list[tuple[str, str, Gst.Buffer]]) -> None:
    """Keep ``(source, caps string, tensor buffer)`` items on ``frame`` (writable), replacing
    the tensors it kept before."""
    _register(TENSOR_DATA_META)
    ptr = hash(frame)
    key = TENSOR_DATA_META.encode()
    old = clib.gst.gst_buffer_get_custom_meta(ptr, key)
    if old:
        clib.gst.gst_buffer_remove_meta(ptr, old)
    if not items:
        return
    meta = clib.gst.gst_buffer_add_custom_meta(ptr, key)
    if not meta:
        raise TorchstreamError("could not add the tensor data meta (frame not writable?)")
    structure = ctypes.c_void_p(clib.gst.gst_custom_meta_get_structure(meta))
    buffer_type = ctypes.c_size_t(clib.gst.gst_buffer_get_type())
    for source, caps, buf in items:
        clib.gst.gst_structure_set(  # copies the string, takes a reference to the buffer
            structure,
            ctypes.c_char_p(source.encode()), buffer_type, ctypes.c_void_p(hash(buf)),
            ctypes.c_char_p((source + _CAPS_SUFFIX).encode()), ctypes.c_size_t(_G_TYPE_STRING),
            ctypes.c_char_p(caps.encode()),
            ctypes.c_void_p(None),
        )


def read_tensor_data(frame: Gst.Buffer) -> list[AttachedTensors]:
    """The tensor buffers kept on ``frame``, in the order they were attached (empty when
    none). Map them with ``torchstream.gst.buffers.MappedTensors(item.buffer,
    torchstream.caps.config_from_fields(item.caps.get_structure(0)))``."""
    _register(TENSOR_DATA_META)
    meta = frame.get_custom_meta(TENSOR_DATA_META)
    if meta is None:
        return []
    s = meta.get_structure()
    names = [s.nth_field_name(i) for i in range(s.n_fields())]
    items = []
    for name in names:
        if name.endswith(_CAPS_SUFFIX):
            continue
        caps = s.get_value(name + _CAPS_SUFFIX)
        items.append(AttachedTensors(name, Gst.Caps.from_string(caps or "other/tensors"),
                                     s.get_value(name)))
    return items
