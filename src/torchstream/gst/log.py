"""The elements' GStreamer debug-log categories (``GST_DEBUG=torchstream*:5``).

PyGObject cannot create a debug category (``gst_debug_category_new`` is a C macro) and its
``Gst.info()`` and friends all log under the one ``python`` category, so the categories are
made and written through libgstreamer itself. Each line carries the element it is about
(``<name>`` in the log) and the Python file, function and line that logged it. A message is
only formatted when its category's threshold lets it through: at the default threshold a
per-buffer ``log()`` costs one C call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from torchstream.gst import Gst, clib

ERROR = int(Gst.DebugLevel.ERROR)
WARNING = int(Gst.DebugLevel.WARNING)
INFO = int(Gst.DebugLevel.INFO)
DEBUG = int(Gst.DebugLevel.DEBUG)
LOG = int(Gst.DebugLevel.LOG)

CATEGORIES: dict[str, str] = {}  # every category made, name -> description (for the docs)

Message = str | Callable[[], str]


class DebugCategory:
    """One GStreamer debug category; ``message`` may be a callable, called only when the
    line will be written (for per-buffer detail that costs something to format)."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self._category = clib.gst._gst_debug_category_new(name.encode(), 0, description.encode())
        CATEGORIES[name] = description

    def enabled(self, level: int) -> bool:
        return clib.gst.gst_debug_category_get_threshold(self._category) >= level

    def write(self, level: int, element, message: Message) -> None:
        if not self.enabled(level):
            return
        text = message() if callable(message) else message
        caller = sys._getframe(2)
        code = caller.f_code
        address = hash(element) if element is not None else None
        clib.gst.gst_debug_log_literal(self._category, level, code.co_filename.encode(),
                                   code.co_name.encode(), caller.f_lineno, address,
                                   text.encode(errors="replace"))

    def error(self, element, message: Message) -> None:
        self.write(ERROR, element, message)

    def warning(self, element, message: Message) -> None:
        self.write(WARNING, element, message)

    def info(self, element, message: Message) -> None:
        self.write(INFO, element, message)

    def debug(self, element, message: Message) -> None:
        self.write(DEBUG, element, message)

    def log(self, element, message: Message) -> None:
        self.write(LOG, element, message)
