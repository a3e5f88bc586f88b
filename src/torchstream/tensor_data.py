"""Raw tensors kept on a frame (meta_aggregate's ``attach-tensor-data``).

One custom meta, ``TorchstreamTensorDataMeta``, whose structure holds, per source (the
aggregator pad the tensors came from, e.g. ``tensor_0``), the tensor buffer itself (a reference:
its memory is not copied) and its caps. The meta survives queue, tee, videoconvert and
videoscale like the results meta. Written through the C API (PyGObject hands out a copy of a
custom meta's structure), read with PyGObject.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from torchstream.errors import TorchstreamError
from torchstream.gst import Gst
from torchstream.meta import _G_TYPE_STRING, _lib, _register

TENSOR_DATA_META = "TorchstreamTensorDataMeta"
_CAPS_SUFFIX = "-caps"

_lib.gst_buffer_get_type.restype = ctypes.c_size_t


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
    old = _lib.gst_buffer_get_custom_meta(ptr, key)
    if old:
        _lib.gst_buffer_remove_meta(ptr, old)
    if not items:
        return
    meta = _lib.gst_buffer_add_custom_meta(ptr, key)
    if not meta:
        raise TorchstreamError("could not add the tensor data meta (frame not writable?)")
    structure = ctypes.c_void_p(_lib.gst_custom_meta_get_structure(meta))
    buffer_type = ctypes.c_size_t(_lib.gst_buffer_get_type())
    for source, caps, buf in items:
        _lib.gst_structure_set(  # copies the string, takes a reference to the buffer
            structure,
            ctypes.c_char_p(source.encode()), buffer_type, ctypes.c_void_p(hash(buf)),
            ctypes.c_char_p((source + _CAPS_SUFFIX).encode()), ctypes.c_size_t(_G_TYPE_STRING),
            ctypes.c_char_p(caps.encode()),
            ctypes.c_void_p(None),
        )


def read_tensor_data(frame: Gst.Buffer) -> list[AttachedTensors]:
    """The tensor buffers kept on ``frame``, in the order they were attached (empty when
    none). Map them with ``torchstream.tensors.MappedTensors(item.buffer,
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
