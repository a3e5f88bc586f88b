"""The grammar of property values: parsing the strings gst-launch hands over literally
(``range=<0,1>``), and writing values back as gst-launch text."""

from __future__ import annotations

import math
import re

from torchstream.errors import ConfigError

# a value gst-launch reads as it is written; anything else is double-quoted
_PLAIN_VALUE = re.compile(r"[\w./:@+=-]+")
_BRACKETS = {"<": ">", "[": "]", "(": ")", "{": "}"}
# a plain decimal number; float() alone would also take Python-only forms such as "1_0"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


def launch_value(value: object) -> str:
    """A property value as gst-launch-1.0 text that reads back as the same value: booleans in
    lower case, values with commas, brackets, spaces or quotes double-quoted (backslashes and
    quotes escaped)."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch_element(factory: str, properties: dict) -> str:
    """``factory key=value ...`` as gst-launch-1.0 text; properties set to None are left out."""
    return " ".join([factory, *(f"{key}={launch_value(value)}"
                                for key, value in properties.items() if value is not None)])


def split_list(text: str, prop: str, example: str = "<a,b,c>") -> list[str]:
    """``<a,b,c>`` (or ``[a,b,c]``, ``a,b,c``) -> the raw items; an error names ``prop``."""
    if not isinstance(text, str):
        raise ConfigError(f"property '{prop}' must be a list like {example}, got {text!r}")
    body = text.strip()
    if body[:1] in _BRACKETS:
        if len(body) < 2 or body[-1] != _BRACKETS[body[0]]:
            raise ConfigError(
                f"property '{prop}' opens with {body[0]!r} but does not end with "
                f"{_BRACKETS[body[0]]!r}: {text!r}"
            )
        body = body[1:-1]
    if not body.strip():
        raise ConfigError(f"property '{prop}' is empty; expected a list like {example}")
    return body.split(",")


def parse_class_set(text: str | None, prop: str) -> frozenset[str]:
    """``<car,person>`` (or ``car,person``) -> {"car", "person"}: the regions' labels a
    property selects; empty or unset -> an empty set (every region). The one grammar of
    ``object-class`` wherever it is a property."""
    if not text or not text.strip():
        return frozenset()
    return frozenset(part.strip() for part in split_list(text, prop) if part.strip())


def parse_float_list(text: str, prop: str) -> tuple[float, ...]:
    """``<a,b,c>`` (or ``[a,b]``, ``a,b``) -> floats; an error names ``prop``."""
    values = []
    for part in split_list(text, prop):
        try:
            if not _NUMBER.fullmatch(part.strip()):
                raise ValueError(part)
            value = float(part.strip())
        except ValueError:
            raise ConfigError(
                f"property '{prop}' has a value that is not a number: {part.strip()!r} in {text!r}"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(f"property '{prop}' has a non-finite value in {text!r}")
        values.append(value)
    return tuple(values)
