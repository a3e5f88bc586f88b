"""The C functions of libgstreamer and GLib that PyGObject does not reach (writing a custom
meta's own structure, iterating metas by API, the debug log's categories), declared once."""

from __future__ import annotations

import ctypes

from torchstream.gst import Gst  # noqa: F401 - libgstreamer loaded and initialised first

gst = ctypes.CDLL("libgstreamer-1.0.so.0")
glib = ctypes.CDLL("libglib-2.0.so.0")

_c = ctypes
for name, restype, argtypes in (
    ("gst_buffer_get_custom_meta", _c.c_void_p, [_c.c_void_p, _c.c_char_p]),
    ("gst_buffer_add_custom_meta", _c.c_void_p, [_c.c_void_p, _c.c_char_p]),
    ("gst_buffer_remove_meta", _c.c_int, [_c.c_void_p, _c.c_void_p]),
    ("gst_custom_meta_get_structure", _c.c_void_p, [_c.c_void_p]),
    ("gst_structure_set", None, None),  # variadic: arguments typed at each call
    ("gst_mini_object_is_writable", _c.c_int, [_c.c_void_p]),
    ("gst_buffer_iterate_meta_filtered", _c.c_void_p,
     [_c.c_void_p, _c.POINTER(_c.c_void_p), _c.c_size_t]),
    ("gst_buffer_get_type", _c.c_size_t, None),
    ("_gst_debug_category_new", _c.c_void_p, [_c.c_char_p, _c.c_uint, _c.c_char_p]),
    ("gst_debug_category_get_threshold", _c.c_int, [_c.c_void_p]),
    ("gst_debug_log_literal", None, [_c.c_void_p, _c.c_int, _c.c_char_p, _c.c_char_p,
                                     _c.c_int, _c.c_void_p, _c.c_char_p]),
):
    function = getattr(gst, name)
    function.restype = restype
    if argtypes is not None:
        function.argtypes = argtypes
glib.g_quark_to_string.restype = ctypes.c_char_p
glib.g_quark_to_string.argtypes = [ctypes.c_uint32]
