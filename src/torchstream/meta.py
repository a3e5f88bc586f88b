"""The metadata codec: what torchstream attaches to buffers, written and read in one place.

Custom metas (``GstCustomMeta``) survive queue, tee, videoconvert and videoscale, but the
PyGObject binding of 1.22 hands out a *copy* of a custom meta's structure, so writes through it
are lost. Writing therefore goes through the C API (ctypes on libgstreamer); reading stays in
PyGObject.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from torchstream.gst import Gst

TENSORS_META = "TorchstreamTensorsMeta"

_G_TYPE_STRING = 16 << 2  # fundamental GType ids are fixed by GLib's ABI

_lib = ctypes.CDLL("libgstreamer-1.0.so.0")
_lib.gst_buffer_get_custom_meta.restype = ctypes.c_void_p
_lib.gst_buffer_get_custom_meta.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.gst_buffer_add_custom_meta.restype = ctypes.c_void_p
_lib.gst_buffer_add_custom_meta.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.gst_buffer_remove_meta.restype = ctypes.c_int
_lib.gst_buffer_remove_meta.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_lib.gst_custom_meta_get_structure.restype = ctypes.c_void_p
_lib.gst_custom_meta_get_structure.argtypes = [ctypes.c_void_p]
_lib.gst_structure_set.restype = None

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
    old = _lib.gst_buffer_get_custom_meta(ptr, key)
    if old:
        _lib.gst_buffer_remove_meta(ptr, old)
    meta = _lib.gst_buffer_add_custom_meta(ptr, key)
    if not meta:
        raise RuntimeError(f"could not add custom meta {name} (buffer not writable?)")
    structure = ctypes.c_void_p(_lib.gst_custom_meta_get_structure(meta))
    for field, value in fields.items():
        _lib.gst_structure_set(
            structure,
            ctypes.c_char_p(field.encode()),
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


@dataclass(frozen=True)
class TensorsRecord:
    """What an inference element says about the tensors of a buffer it produced."""

    model: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    dimensions: str  # this buffer's real shapes, caps syntax (innermost first)
    input_types: tuple[str, ...] = ()
    input_dimensions: str = ""


def attach_tensors_record(buf: Gst.Buffer, record: TensorsRecord) -> None:
    write_custom_meta(buf, TENSORS_META, {
        "model": record.model,
        "names": ",".join(record.names),
        "types": ",".join(record.types),
        "dimensions": record.dimensions,
        "input-types": ",".join(record.input_types),
        "input-dimensions": record.input_dimensions,
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
    )
