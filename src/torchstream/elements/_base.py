"""What every element shell shares: property storage and the error boundary."""

from __future__ import annotations

import functools

from torchstream.errors import post_error
from torchstream.gst import GObject, Gst

READWRITE = GObject.ParamFlags.READWRITE


def string_prop(nick: str, blurb: str, default: str | None):
    return (str, nick, blurb, default, READWRITE)


def uint_prop(nick: str, blurb: str, minimum: int, maximum: int, default: int):
    return (GObject.TYPE_UINT, nick, blurb, minimum, maximum, default, READWRITE)


class PropertyStore:
    """Keeps property values in ``self.settings`` keyed by property name, with defaults.

    PyGObject consumes ``__gproperties__`` when it registers the type, so elements keep the
    same dict as ``PROPERTIES`` too.
    """

    def _init_settings(self) -> None:
        self.settings = {}
        for name, spec in self.PROPERTIES.items():
            self.settings[name] = spec[3] if spec[0] is str else spec[-2]

    def do_get_property(self, prop):
        return self.settings[prop.name]

    def do_set_property(self, prop, value):
        self.settings[prop.name] = value


def guarded(failure):
    """Catch any exception in a vfunc/pad function, post it as an element error, return failure.

    PyGObject would otherwise print the traceback and return the default (FLOW_OK), letting
    buffers flow on as if nothing happened.
    """

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args):
            try:
                return method(self, *args)
            except Exception as exc:  # noqa: BLE001 - this is the error boundary
                post_error(self, exc)
                return failure

        return wrapper

    return decorate


def element_of(parent, pad):
    return parent if parent is not None else pad.get_parent_element()


FLOW_ERROR = Gst.FlowReturn.ERROR
