"""Errors posted on the bus: a torchstream error's message for users, its domain as the
GStreamer error domain, its detail and traceback as the debug text."""

from __future__ import annotations

import traceback

from torchstream.errors import Domain, TorchstreamError
from torchstream.gst import GLib, Gst


def _gst_error(domain: Domain):
    if domain is Domain.RESOURCE:
        return Gst.ResourceError.quark(), int(Gst.ResourceError.SETTINGS)
    if domain is Domain.STREAM:
        return Gst.StreamError.quark(), int(Gst.StreamError.FORMAT)
    if domain is Domain.CORE:
        return Gst.CoreError.quark(), int(Gst.CoreError.FAILED)
    return Gst.LibraryError.quark(), int(Gst.LibraryError.SETTINGS)


def post_error(element, exc: BaseException, context: str = "") -> None:
    """Post ``exc`` as an ERROR message from ``element`` (text for users, traceback as debug)."""
    if isinstance(exc, TorchstreamError):
        text, domain, detail = exc.message, exc.domain, exc.detail
    else:
        text = f"{type(exc).__name__}: {exc}"
        domain, detail = Domain.LIBRARY, ""
    if context:
        text = f"{context}: {text}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    debug = f"{detail}\n{tb}" if detail else tb
    quark, code = _gst_error(domain)
    gerror = GLib.Error.new_literal(quark, text, code)
    element.post_message(Gst.Message.new_error(element, gerror, debug))
