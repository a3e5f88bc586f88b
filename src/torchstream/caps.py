"""The one codec for ``other/tensors`` caps.

``dimensions`` lists dims innermost first (the reverse of a torch shape), ``,`` between tensors
and ``:`` between dims; ``0`` marks a dim whose size varies per buffer. This module knows nothing
about GStreamer objects beyond reading fields off a structure-like object, so it can be tested
and fuzzed on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchstream.errors import CapsError, TorchstreamError

MEDIA_TYPE = "other/tensors"

# caps type name -> (bytes per element, the numpy dtype that holds it); the torch dtype has
# the caps name. numpy has no bfloat16: such tensors travel as uint16, reinterpreted by torch
TENSOR_TYPES = {
    "uint8": (1, "uint8"),
    "int8": (1, "int8"),
    "int32": (4, "int32"),
    "int64": (8, "int64"),
    "float16": (2, "float16"),
    "bfloat16": (2, "uint16"),
    "float32": (4, "float32"),
    "float64": (8, "float64"),
    "bool": (1, "bool"),
}
TYPE_ITEMSIZE = {name: size for name, (size, _) in TENSOR_TYPES.items()}
TYPE_NAMES = tuple(TENSOR_TYPES)


def numpy_dtype(type_name: str):
    """The numpy dtype that holds a caps type's elements."""
    import numpy as np

    return np.dtype(TENSOR_TYPES[type_name][1])


def torch_dtype(type_name: str):
    """The torch dtype of a caps type."""
    import torch

    return getattr(torch, type_name)


def type_name_of(dtype) -> str:
    """numpy or torch dtype -> caps type name."""
    name = str(dtype).removeprefix("torch.")
    if name == "bool_":
        name = "bool"
    if name not in TYPE_ITEMSIZE:
        raise TorchstreamError(f"tensor type {name} cannot travel in other/tensors caps")
    return name


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a caps: its type name and its torch-order shape (0 = varies per buffer)."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def is_fixed(self) -> bool:
        return all(d > 0 for d in self.shape)

    @property
    def itemsize(self) -> int:
        return TYPE_ITEMSIZE[self.dtype]

    def nbytes(self, shape: Sequence[int] | None = None) -> int:
        n = self.itemsize
        for d in shape if shape is not None else self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class TensorsConfig:
    """The tensors a caps describes, in caps order."""

    tensors: tuple[TensorInfo, ...]

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def types_string(self) -> str:
        return ",".join(t.dtype for t in self.tensors)

    @property
    def dimensions_string(self) -> str:
        return format_dimensions([t.shape for t in self.tensors])

    def to_caps_string(self) -> str:
        return (
            f'{MEDIA_TYPE},num_tensors=(uint){len(self.tensors)},'
            f'types=(string)"{self.types_string}",'
            f'dimensions=(string)"{self.dimensions_string}"'
        )


def format_dims(shape: Sequence[int]) -> str:
    """Torch-order shape -> caps dims (innermost first). A 0-d tensor is written ``1``."""
    if len(shape) == 0:
        return "1"
    return ":".join(str(int(d)) for d in reversed(shape))


def format_dimensions(shapes: Sequence[Sequence[int]]) -> str:
    return ",".join(format_dims(s) for s in shapes)


def parse_dims(text: str) -> tuple[int, ...]:
    """Caps dims (innermost first) -> torch-order shape."""
    parts = text.strip().split(":")
    dims = []
    for part in parts:
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise CapsError(f"'dimensions' has a malformed dim {part!r} in {text!r}")
        dims.append(int(part))
    return tuple(reversed(dims))


def parse_dimensions(text: str) -> list[tuple[int, ...]]:
    if not isinstance(text, str) or not text.strip():
        raise CapsError(f"'dimensions' must be a non-empty string, got {text!r}")
    return [parse_dims(part) for part in text.split(",")]


def parse_types(text: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise CapsError(f"'types' must be a non-empty string, got {text!r}")
    types = [t.strip() for t in text.split(",")]
    for t in types:
        if t not in TYPE_ITEMSIZE:
            raise CapsError(f"'types' names an unknown type {t!r} (known: {', '.join(TYPE_NAMES)})")
    return types


def _field(structure, name: str):
    """Read a field from a Gst.Structure or a mapping; None when absent."""
    if hasattr(structure, "has_field"):
        return structure.get_value(name) if structure.has_field(name) else None
    return structure.get(name)


def config_from_fields(structure) -> TensorsConfig:
    """Parse fixed tensor caps (a ``Gst.Structure`` or a dict of its fields).

    Raises CapsError naming the field that is missing or malformed.
    """
    name = structure.get_name() if hasattr(structure, "get_name") else MEDIA_TYPE
    if name != MEDIA_TYPE:
        raise CapsError(f"expected {MEDIA_TYPE} caps, got {name}")
    types_text = _field(structure, "types")
    if types_text is None:
        raise CapsError("tensor caps lack the required field 'types'")
    dims_text = _field(structure, "dimensions")
    if dims_text is None:
        raise CapsError("tensor caps lack the required field 'dimensions'")
    if isinstance(dims_text, int) and not isinstance(dims_text, bool):
        # an unquoted single dim (``dimensions=1000``) is typed as an int by GStreamer's parser
        dims_text = str(dims_text)
    types = parse_types(types_text)
    shapes = parse_dimensions(dims_text)
    if len(types) != len(shapes):
        raise CapsError(
            f"'types' lists {len(types)} tensors but 'dimensions' lists {len(shapes)}"
        )
    num = _field(structure, "num_tensors")
    if num is not None:
        if not isinstance(num, int) or isinstance(num, bool) or num != len(types):
            raise CapsError(f"'num_tensors' is {num!r} but {len(types)} tensors are described")
    return TensorsConfig(tuple(TensorInfo(t, s) for t, s in zip(types, shapes, strict=True)))


def parse_caps_string(text: str) -> TensorsConfig:
    """Parse a caps string without GStreamer (for tests, fuzzing and tools)."""
    if not isinstance(text, str):
        raise CapsError(f"caps must be a string, got {type(text).__name__}")
    head, _, rest = text.partition(",")
    fields: dict[str, object] = {}
    for key, value in _split_fields(rest):
        fields[key] = value
    if head.strip() != MEDIA_TYPE:
        raise CapsError(f"expected {MEDIA_TYPE} caps, got {head.strip()!r}")
    return config_from_fields(fields)


def _split_fields(text: str):
    """Split ``k=(type)v,k2="a,b"`` into (key, python value) pairs, honouring quotes."""
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            if text[i:].strip():
                raise CapsError(f"malformed caps field {text[i:]!r}")
            return
        key = text[i:eq].strip()
        j = eq + 1
        typ = None
        if j < n and text[j] == "(":
            close = text.find(")", j)
            if close < 0:
                raise CapsError(f"malformed type in caps field {key!r}")
            typ = text[j + 1 : close]
            j = close + 1
        if j < n and text[j] == '"':
            raw, i = _quoted(text, j, key)
            value: object = raw
        else:
            end = text.find(",", j)
            end = n if end < 0 else end
            raw, i = text[j:end].strip(), end
            value = raw
            if typ in ("uint", "int") or (typ is None and raw.isdigit()):
                try:
                    value = int(raw)
                except ValueError:
                    raise CapsError(f"caps field {key!r} is not an integer: {raw!r}") from None
        if i < n and text[i] == ",":
            i += 1
        yield key, value


def _quoted(text: str, start: int, key: str) -> tuple[str, int]:
    """The string quoted at ``text[start]`` with GStreamer's backslash escapes undone
    (``Gst.Caps.to_string`` writes ``"a\\,b"``), and the index after the closing quote."""
    out = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise CapsError(f"unterminated string in caps field {key!r}")
