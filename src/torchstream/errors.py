"""The one error type of torchstream and the one way elements report it.

Core modules raise :class:`TorchstreamError` (or let plain exceptions escape); element shells
catch everything at the vfunc boundary and hand it to
:func:`torchstream.gst.bus.post_error`, so no traceback is
ever swallowed while buffers keep flowing (PyGObject turns an escaped exception into FLOW_OK).
"""

from __future__ import annotations

import enum


class Domain(enum.Enum):
    """GStreamer error domains: lets a core module say what kind of failure it is."""

    CORE = "core"
    LIBRARY = "library"
    RESOURCE = "resource"
    STREAM = "stream"


class TorchstreamError(Exception):
    """A failure with a message fit for a user, a GStreamer domain and an optional detail."""

    def __init__(self, message: str, domain: Domain = Domain.LIBRARY, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.domain = domain
        self.detail = detail


class ConfigError(TorchstreamError):
    """Bad property values or files named by properties (settings)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, Domain.LIBRARY, detail)


class CapsError(TorchstreamError):
    """Caps that torchstream cannot accept (refused at negotiation)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, Domain.STREAM, detail)


def exception_summary(exc: BaseException) -> str:
    """One line for a user: the exception's first line, plus its last when they differ
    (TorchScript puts the real cause on the last line of a long message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1 or lines[-1] == lines[0]:
        return lines[0]
    return f"{lines[0]} ... {lines[-1]}"
