"""Parsing of property strings that gst-launch hands over literally (``range=<0,1>``)."""

from __future__ import annotations

import math

from torchstream.errors import ConfigError


def parse_float_list(text: str, prop: str) -> tuple[float, ...]:
    """``<a,b,c>`` (or ``[a,b]``, ``a,b``) -> floats; an error names ``prop``."""
    if not isinstance(text, str):
        raise ConfigError(f"property '{prop}' must be a list like <a,b,c>, got {text!r}")
    body = text.strip()
    if body[:1] in "<[({" and body[-1:] in ">])}":
        body = body[1:-1]
    if not body.strip():
        raise ConfigError(f"property '{prop}' is empty; expected a list like <a,b,c>")
    values = []
    for part in body.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise ConfigError(
                f"property '{prop}' has a value that is not a number: {part.strip()!r} in {text!r}"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(f"property '{prop}' has a non-finite value in {text!r}")
        values.append(value)
    return tuple(values)
