"""Video frames as tensors: caps mapping between ``video/x-raw`` and ``other/tensors``.

Packed formats are ``[H,W,C]`` tensors (dims ``C:W:H``), planar ones ``[C,H,W]`` (``W:H:C``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchstream.caps import MEDIA_TYPE, parse_dimensions, parse_types
from torchstream.errors import CapsError

PACKED_CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "RGBx": 4, "BGRx": 4}
PLANAR_CHANNELS = {"RGBP": 3, "BGRP": 3}
VIDEO_FORMATS = tuple(PACKED_CHANNELS) + tuple(PLANAR_CHANNELS)


def _fmt_list(formats) -> str:
    formats = list(formats)
    return formats[0] if len(formats) == 1 else "{ " + ", ".join(formats) + " }"


def _fixed_int(structure, name: str) -> int | None:
    if not structure.has_field(name):
        return None
    value = structure.get_value(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _formats_of(structure) -> list[str]:
    if not structure.has_field("format"):
        return list(VIDEO_FORMATS)
    value = structure.get_value("format")
    if isinstance(value, str):
        return [value] if value in VIDEO_FORMATS else []
    try:
        return [v for v in value if v in VIDEO_FORMATS]  # a Gst.ValueList
    except TypeError:
        return list(VIDEO_FORMATS)


def tensor_shape_for(fmt: str, width: int, height: int) -> tuple[int, ...]:
    if fmt in PLANAR_CHANNELS:
        return (PLANAR_CHANNELS[fmt], height, width)
    return (height, width, PACKED_CHANNELS[fmt])


def video_to_tensor_caps(structure) -> list[str]:
    """A video caps structure -> tensor caps strings (fixed dims when size and format are)."""
    width, height = _fixed_int(structure, "width"), _fixed_int(structure, "height")
    formats = _formats_of(structure)
    if not formats:
        return []
    if width is not None and height is not None:
        dims = {tensor_shape_for(f, width, height)[::-1] for f in formats}
        return [
            f'{MEDIA_TYPE},num_tensors=(uint)1,types=(string)uint8,'
            f'dimensions=(string)"{":".join(map(str, d))}"'
            for d in sorted(dims)
        ]
    return [f"{MEDIA_TYPE},num_tensors=(uint)1,types=(string)uint8"]


def tensor_to_video_caps(structure) -> list[str]:
    """A tensor caps structure -> the video caps that could produce it."""
    if structure.has_field("types"):
        try:
            if parse_types(structure.get_value("types")) != ["uint8"]:
                return []
        except CapsError:
            return []
    if not structure.has_field("dimensions"):
        return [f"video/x-raw,format=(string){_fmt_list(VIDEO_FORMATS)}"]
    try:
        shapes = parse_dimensions(structure.get_value("dimensions"))
    except CapsError:
        return []
    if len(shapes) != 1 or len(shapes[0]) != 3:
        return []
    a, b, c = shapes[0]  # torch order
    out = []
    planar = [f for f, n in PLANAR_CHANNELS.items() if n == a]
    if planar and b > 0 and c > 0:
        out.append(f"video/x-raw,format=(string){_fmt_list(planar)},width=(int){c},height=(int){b}")
    packed = [f for f, n in PACKED_CHANNELS.items() if n == c]
    if packed and a > 0 and b > 0:
        out.append(f"video/x-raw,format=(string){_fmt_list(packed)},width=(int){b},height=(int){a}")
    return out


@dataclass(frozen=True)
class FrameLayout:
    """Where a frame's rows and planes lie in its buffer, and the tensor shape it becomes."""

    shape: tuple[int, ...]
    planar: bool
    strides: tuple[int, ...]  # per plane
    offsets: tuple[int, ...]  # per plane

    @property
    def is_contiguous(self) -> bool:
        if self.planar:
            c, h, w = self.shape
            return all(self.strides[p] == w and self.offsets[p] == p * w * h for p in range(c))
        h, w, c = self.shape
        return self.strides[0] == w * c and self.offsets[0] == 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def pack(self, data, out: np.ndarray) -> None:
        """Copy the frame in ``data`` (bytes-like) into ``out`` (C-contiguous, ``shape``)."""
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size < self.min_size:
            # as_strided does no bounds checks: a short buffer would be read past its end
            raise CapsError(
                f"frame buffer holds {raw.size} bytes but the video caps need {self.min_size}"
            )
        as_strided = np.lib.stride_tricks.as_strided
        if self.planar:
            c, h, w = self.shape
            for p in range(c):
                out[p] = as_strided(raw[self.offsets[p]:], shape=(h, w),
                                    strides=(self.strides[p], 1))
        else:
            h, w, c = self.shape
            rows = as_strided(raw[self.offsets[0]:], shape=(h, w * c),
                              strides=(self.strides[0], 1))
            out.reshape(h, w * c)[:] = rows

    @property
    def min_size(self) -> int:
        """Bytes a buffer needs to hold every row of every plane (the last row unpadded)."""
        if self.planar:
            _, h, w = self.shape
            row = w
        else:
            h, w, c = self.shape
            row = w * c
        pairs = zip(self.offsets, self.strides, strict=True)
        return max(off + (h - 1) * stride + row for off, stride in pairs)


def frame_layout(video_info) -> FrameLayout:
    """From a ``GstVideo.VideoInfo``."""
    fmt = video_info.finfo.name
    if fmt not in VIDEO_FORMATS:
        raise CapsError(f"video format {fmt} is not one of {', '.join(VIDEO_FORMATS)}")
    shape = tensor_shape_for(fmt, video_info.width, video_info.height)
    planes = PLANAR_CHANNELS.get(fmt, 1)
    return FrameLayout(
        shape=shape,
        planar=fmt in PLANAR_CHANNELS,
        strides=tuple(int(video_info.stride[p]) for p in range(planes)),
        offsets=tuple(int(video_info.offset[p]) for p in range(planes)),
    )
