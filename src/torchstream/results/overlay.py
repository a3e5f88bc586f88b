"""Drawing results (regions, their labels, frame-level classifications) on video frames.

Pure numpy/OpenCV, no GStreamer: :func:`draw_results` draws on a BGR(x) image, and
:func:`frame_planes` describes a raw video frame of any supported format (packed RGB family,
planar, semi-planar and packed 4:2:2 YUV, 10-bit I420 and P010, GRAY8) as planes that the same
drawing code writes into directly, so a frame never goes through a colour conversion to be
annotated.

Box outlines (exactly the thickness asked, inside the box) and label backgrounds are filled
rectangles written on every plane (numpy slices, so strided views of packed 4:2:2 and 16-bit
planes work alike), chroma planes at their subsampled coordinates. Text is rendered once at
full resolution into a small mask with ``cv2.putText`` and that mask is applied to every plane
(subsampled for chroma), so letters on luma and chroma line up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from torchstream.errors import CapsError
from torchstream.results.data import Classification, FrameResults, Region, Segmentation

FONT = cv2.FONT_HERSHEY_SIMPLEX

# Formats drawn in place. Packed RGB: channel order. YUV: one entry per component view:
# (GStreamer plane, components, x and y subsampling as log2 of the divisor, step between
# samples in the row and first sample's position, both in samples). 16-bit formats hold the
# 8-bit value shifted left by the given amount.
PACKED_FORMATS = {
    "RGB": "RGB", "BGR": "BGR",
    "RGBx": "RGBx", "BGRx": "BGRx", "xRGB": "xRGB", "xBGR": "xBGR",
    "RGBA": "RGBA", "BGRA": "BGRA", "ARGB": "ARGB", "ABGR": "ABGR",
}
_I420 = ((0, "Y", 0, 0, 1, 0), (1, "U", 1, 1, 1, 0), (2, "V", 1, 1, 1, 0))
_NV12 = ((0, "Y", 0, 0, 1, 0), (1, "UV", 1, 1, 2, 0))
YUV_FORMATS: dict[str, tuple[tuple[int, str, int, int, int, int], ...]] = {
    "I420": _I420,
    "YV12": ((0, "Y", 0, 0, 1, 0), (1, "V", 1, 1, 1, 0), (2, "U", 1, 1, 1, 0)),
    "Y42B": ((0, "Y", 0, 0, 1, 0), (1, "U", 1, 0, 1, 0), (2, "V", 1, 0, 1, 0)),
    "Y444": ((0, "Y", 0, 0, 1, 0), (1, "U", 0, 0, 1, 0), (2, "V", 0, 0, 1, 0)),
    "NV12": _NV12,
    "NV21": ((0, "Y", 0, 0, 1, 0), (1, "VU", 1, 1, 2, 0)),
    "NV16": ((0, "Y", 0, 0, 1, 0), (1, "UV", 1, 0, 2, 0)),
    "YUY2": ((0, "Y", 0, 0, 2, 0), (0, "U", 1, 0, 4, 1), (0, "V", 1, 0, 4, 3)),
    "UYVY": ((0, "Y", 0, 0, 2, 1), (0, "U", 1, 0, 4, 0), (0, "V", 1, 0, 4, 2)),
    "YVYU": ((0, "Y", 0, 0, 2, 0), (0, "V", 1, 0, 4, 1), (0, "U", 1, 0, 4, 3)),
    "GRAY8": ((0, "G", 0, 0, 1, 0),),
    "I420_10LE": _I420,
    "P010_10LE": _NV12,
}
SIXTEEN_BIT_SHIFT = {"I420_10LE": 2, "P010_10LE": 8}
OVERLAY_FORMATS = tuple(PACKED_FORMATS) + tuple(YUV_FORMATS)

# One colour per label id (BGR), distinct and bright enough to read black text on.
PALETTE = (
    (0, 200, 255), (255, 128, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 255, 0), (128, 128, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0),
    (0, 0, 255), (200, 200, 200),
)
FRAME_TEXT_BACKGROUND = (0, 0, 0)
MASK_ALPHA = 0.45  # a mask's fill: the frame stays visible under it
FRAME_TEXT_COLOR = (255, 255, 255)


def color_for(label_id: int) -> tuple[int, int, int]:
    return PALETTE[int(label_id) % len(PALETTE)]


def region_color(region: Region) -> tuple[int, int, int]:
    """A tracked region's colour follows its object id (each object keeps one colour), an
    untracked one's its label id."""
    return color_for(region.label_id if region.object_id is None else region.object_id)


def _yuv(bgr: tuple[int, int, int]) -> dict[str, int]:
    """BT.601 limited range (what videoconvert uses for SD; close for HD), and full-range grey."""
    b, g, r = bgr
    return {
        "Y": round(16 + 0.257 * r + 0.504 * g + 0.098 * b),
        "U": round(128 - 0.148 * r - 0.291 * g + 0.439 * b),
        "V": round(128 + 0.439 * r - 0.368 * g - 0.071 * b),
        "G": round(0.299 * r + 0.587 * g + 0.114 * b),
    }


def _packed_value(order: str) -> Callable[[tuple[int, int, int]], tuple[int, ...]]:
    def value(bgr):
        b, g, r = bgr
        channels = {"R": r, "G": g, "B": b, "A": 255, "x": 255}
        return tuple(channels[c] for c in order)

    return value


def _yuv_value(components: str, shift: int = 0
               ) -> Callable[[tuple[int, int, int]], tuple[int, ...]]:
    def value(bgr):
        yuv = _yuv(bgr)
        return tuple(yuv[c] << shift for c in components)

    return value


@dataclass
class Plane:
    """One plane of a frame: a writable view, its subsampling (log2 divisor in x, y) and how a
    BGR colour becomes this plane's values."""

    array: np.ndarray
    sx: int
    sy: int
    value: Callable[[tuple[int, int, int]], tuple[int, ...]]


def bgr_planes(image: np.ndarray) -> list[Plane]:
    """A BGR (HxWx3) or BGRx/BGRA (HxWx4) uint8 image as one plane."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 HxWx3 or HxWx4 BGR image, got {image.dtype} "
                         f"{image.shape}")
    return [Plane(image, 0, 0, _packed_value("BGR" if image.shape[2] == 3 else "BGRA"))]


def frame_planes(data, fmt: str, width: int, height: int, offsets, strides) -> list[Plane]:
    """Writable views of the planes of a raw frame held in ``data`` (a writable buffer);
    ``offsets`` and ``strides`` per GStreamer plane, in bytes."""
    if fmt in PACKED_FORMATS:
        order = PACKED_FORMATS[fmt]
        views = [(0, order, 0, 0, len(order), 0)]
        values = [_packed_value(order)]
    elif fmt in YUV_FORMATS:
        views = list(YUV_FORMATS[fmt])
        shift = SIXTEEN_BIT_SHIFT.get(fmt, 0)
        values = [_yuv_value(v[1], shift) for v in views]
    else:
        raise CapsError(f"meta_overlay cannot draw on {fmt} frames; supported: "
                        f"{', '.join(OVERLAY_FORMATS)} (put a videoconvert before it)")
    dtype = np.dtype(np.uint16 if fmt in SIXTEEN_BIT_SHIFT else np.uint8)
    size = dtype.itemsize
    raw = np.frombuffer(data, dtype=np.uint8)
    planes = []
    for (p, components, sx, sy, step, first), to_value in zip(views, values, strict=True):
        channels = len(components)
        w = -(-width // (1 << sx))
        h = -(-height // (1 << sy))
        offset, stride = int(offsets[p]) + first * size, int(strides[p])
        end = offset + (h - 1) * stride + ((w - 1) * step + channels) * size
        if end > raw.size:
            raise CapsError(f"{fmt} {width}x{height} frame: plane {p} needs {end} bytes, the "
                            f"buffer holds {raw.size}")
        if channels > 1:
            shape, view_strides = (h, w, channels), (stride, step * size, size)
        else:
            shape, view_strides = (h, w), (stride, step * size)
        array = np.ndarray(shape, dtype, buffer=raw, offset=offset, strides=view_strides)
        planes.append(Plane(array, sx, sy, to_value))
    return planes


@dataclass(frozen=True)
class Style:
    """Resolved drawing sizes in pixels of the full-resolution frame."""

    lines_thickness: int
    font_scale: float
    font_thickness: int


def auto_style(width: int, height: int, lines_thickness: int = 0, font_scale: float = 0.0,
               font_thickness: int = 0) -> Style:
    """Sizes for a ``width`` x ``height`` frame; a value of 0 is chosen from the frame size
    (its shorter side ``s``): lines ``max(1, round(s/300))`` px, font scale ``max(0.4, s/800)``
    (Hershey simplex: about 22 px capital height at scale 1), font thickness
    ``max(1, round(font scale * 1.5))``."""
    short = max(1, min(int(width), int(height)))
    lines = int(lines_thickness) or max(1, round(short / 300))
    scale = float(font_scale) or max(0.4, short / 800)
    thick = int(font_thickness) or max(1, round(scale * 1.5))
    return Style(lines, scale, thick)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: other characters become '?'."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def region_lines(region: Region) -> list[str]:
    tracked = "" if region.object_id is None else f"id:{region.object_id} "
    lines = [f"{tracked}{region.label} {region.confidence:.2f}"]
    lines += [_classification_text(c) for c in region.classifications]
    return lines


def _classification_text(c: Classification) -> str:
    return f"{c.label} {c.confidence:.2f}"


def frame_lines(results: FrameResults) -> list[str]:
    out = []
    for c in results.classifications:
        prefix = "" if c.attribute == "classification" else f"{c.attribute}: "
        out.append(prefix + _classification_text(c))
    return out


class Painter:
    """Draws primitives at full-resolution coordinates on every plane of a frame."""

    def __init__(self, planes: list[Plane], width: int, height: int) -> None:
        self.planes = planes
        self.width = int(width)
        self.height = int(height)

    def fill(self, x0: int, y0: int, x1: int, y1: int, bgr) -> None:
        """Fill the box with corners (x0, y0), (x1, y1), inclusive (clipped to the frame)."""
        x0, y0 = max(0, x0), max(0, y0)
        if x1 < x0 or y1 < y0:
            return
        for plane in self.planes:
            sx, sy = plane.sx, plane.sy
            value = plane.value(bgr)
            plane.array[y0 >> sy:(y1 >> sy) + 1, x0 >> sx:(x1 >> sx) + 1] = (
                value if plane.array.ndim == 3 else value[0])

    def outline(self, x0: int, y0: int, x1: int, y1: int, bgr, thickness: int) -> None:
        """A box outline exactly ``thickness`` pixels wide, inside the corners (inclusive)."""
        t = max(1, min(int(thickness), (x1 - x0) // 2 + 1, (y1 - y0) // 2 + 1))
        self.fill(x0, y0, x1, y0 + t - 1, bgr)
        self.fill(x0, y1 - t + 1, x1, y1, bgr)
        self.fill(x0, y0, x0 + t - 1, y1, bgr)
        self.fill(x1 - t + 1, y0, x1, y1, bgr)

    def text(self, text: str, x: int, y: int, bgr, scale: float, thickness: int) -> None:
        """``text`` with its top-left corner at (x, y) (clipped to the frame)."""
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
        # a mask aligned on even coordinates, so subsampled planes take every other pixel
        mx0, my0 = max(0, x) & ~1, max(0, y) & ~1
        mx1, my1 = min(self.width, x + tw + 2), min(self.height, y + th + base + 2)
        if mx1 <= mx0 or my1 <= my0:
            return
        mask = np.zeros((my1 - my0, mx1 - mx0), np.uint8)
        cv2.putText(mask, text, (x - mx0, y - my0 + th), FONT, scale, 255, thickness,
                    cv2.LINE_8)
        self.paint(mask, mx0, my0, bgr)

    def skeleton(self, points: list[tuple[float, float]], connections, bgr,
                 thickness: int) -> None:
        """Lines between the connected points and a dot on each point (clipped)."""
        inside = [(x, y) for x, y in points if -self.width <= x <= 2 * self.width
                  and -self.height <= y <= 2 * self.height]
        if not inside:
            return
        radius = max(2, thickness + 1)
        margin = radius + thickness + 2
        mx0 = max(0, int(min(x for x, _ in inside)) - margin) & ~1
        my0 = max(0, int(min(y for _, y in inside)) - margin) & ~1
        mx1 = min(self.width, int(max(x for x, _ in inside)) + margin)
        my1 = min(self.height, int(max(y for _, y in inside)) + margin)
        if mx1 <= mx0 or my1 <= my0:
            return
        mask = np.zeros((my1 - my0, mx1 - mx0), np.uint8)
        at = [(round(x) - mx0, round(y) - my0) for x, y in points]
        for a, b in connections:
            cv2.line(mask, at[a], at[b], 255, thickness, cv2.LINE_8)
        for point in at:
            cv2.circle(mask, point, radius, 255, -1, cv2.LINE_8)
        self.paint(mask, mx0, my0, bgr)

    def blend(self, cells: np.ndarray, x: int, y: int, w: int, h: int, bgr,
              alpha: float) -> None:
        """``bgr`` at ``alpha`` over the pixels of the box (x, y, w, h) that ``cells`` (a bool
        grid laid over the box, any size) covers."""
        if w <= 0 or h <= 0 or cells.size == 0:
            return
        grid = cells.astype(np.uint8)
        if grid.shape != (h, w):
            grid = cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)
        if x < 0 or y < 0:  # a box reaching over the frame's left or top edge
            grid = grid[max(0, -y):, max(0, -x):]
            x, y = max(0, x), max(0, y)
            h, w = grid.shape
            if w <= 0 or h <= 0:
                return
        # on even coordinates, so subsampled planes take every other pixel
        mx0, my0 = x & ~1, y & ~1
        full = np.zeros((y + h - my0, x + w - mx0), np.uint8)
        full[y - my0:, x - mx0:] = grid
        full = full[:max(0, self.height - my0), :max(0, self.width - mx0)]
        self.paint(full, mx0, my0, bgr, alpha)

    def paint(self, mask: np.ndarray, mx0: int, my0: int, bgr, alpha: float = 1.0) -> None:
        """``bgr`` (at ``alpha`` over the frame) where ``mask`` is set; its top-left pixel at
        (mx0, my0), both even (so subsampled planes take every other pixel)."""
        for plane in self.planes:
            sx, sy = plane.sx, plane.sy
            sub = mask[::1 << sy, ::1 << sx] if (sx or sy) else mask
            ph, pw = plane.array.shape[:2]
            px0, py0 = mx0 >> sx, my0 >> sy
            sub = sub[: max(0, ph - py0), : max(0, pw - px0)]
            target = plane.array[py0:py0 + sub.shape[0], px0:px0 + sub.shape[1]]
            value = plane.value(bgr)
            value = value if plane.array.ndim == 3 else value[0]
            chosen = sub > 0
            if alpha >= 1.0:
                target[chosen] = value
            else:
                target[chosen] = (target[chosen] * (1 - alpha)
                                  + np.asarray(value, np.float32) * alpha + 0.5).astype(np.uint8)


def _text_color(background) -> tuple[int, int, int]:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 110 else (255, 255, 255)


def _label_block(painter: Painter, lines: list[str], x: int, y: int, background, style: Style,
                 above: bool) -> None:
    """Lines of text on a filled background, its bottom-left at (x, y) when ``above`` (moved
    inside the frame when it does not fit), else its top-left at (x, y)."""
    if not lines:
        return
    lines = [_ascii(line) for line in lines]
    pad = max(2, style.font_thickness + 1)
    sizes = [cv2.getTextSize(line, FONT, style.font_scale, style.font_thickness)
             for line in lines]
    line_h = max(h + base for (_, h), base in sizes) + pad
    block_w = max(w for (w, _), _ in sizes) + 2 * pad
    block_h = line_h * len(lines) + pad
    top = y - block_h if above else y
    if top < 0:
        top = y if above else 0
    top = min(top, max(0, painter.height - block_h))
    left = min(max(0, x), max(0, painter.width - block_w))
    painter.fill(left, top, left + block_w - 1, top + block_h - 1, background)
    color = _text_color(background) if background != FRAME_TEXT_BACKGROUND else FRAME_TEXT_COLOR
    for i, line in enumerate(lines):
        painter.text(line, left + pad, top + pad + i * line_h, color, style.font_scale,
                     style.font_thickness)


def draw_on_planes(planes: list[Plane], width: int, height: int, results: FrameResults,
                   style: Style) -> None:
    """The class map (translucent), every region's mask (translucent), box, keypoints'
    skeleton and labels, then the frame-level classifications (top left)."""
    painter = Painter(planes, width, height)
    if results.segmentation is not None:
        _draw_segmentation(painter, results.segmentation)
    for region in results.regions:
        if region.mask is not None:
            painter.blend(region.mask.array(), *region.mask_pixels(width, height),
                          region_color(region), MASK_ALPHA)
    for region in results.regions:
        x, y, w, h = region.pixels(width, height)
        color = region_color(region)
        x1, y1 = min(x + max(w, 1), width) - 1, min(y + max(h, 1), height) - 1
        painter.outline(x, y, x1, y1, color, style.lines_thickness)
    for region in results.regions:
        if region.keypoints is not None:
            painter.skeleton(region.keypoints.pixels(width, height),
                             region.keypoints.connections, region_color(region),
                             max(1, style.lines_thickness))
    for region in results.regions:  # labels over every box, so no box hides a label
        x, y, _, _ = region.pixels(width, height)
        _label_block(painter, region_lines(region), x, y, region_color(region), style,
                     above=True)
    margin = max(2, style.lines_thickness * 2)
    _label_block(painter, frame_lines(results), margin, margin, FRAME_TEXT_BACKGROUND, style,
                 above=False)


def _draw_segmentation(painter: Painter, segmentation: Segmentation) -> None:
    """Each class but 0 (the background) in its colour, translucent, where the class map lies
    on the frame."""
    m = segmentation.mapping
    x0, x1 = round(m.ox * painter.width), round((m.ox + m.sx) * painter.width)
    y0, y1 = round(m.oy * painter.height), round((m.oy + m.sy) * painter.height)
    if x1 <= x0 or y1 <= y0:
        return
    classes = segmentation.array()
    grid = cv2.resize(classes.astype(np.uint16 if classes.max(initial=0) > 255 else np.uint8),
                      (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    for class_id in np.unique(grid):
        if class_id != 0:
            painter.blend(grid == class_id, x0, y0, x1 - x0, y1 - y0, color_for(int(class_id)),
                          MASK_ALPHA)


def draw_results(image: np.ndarray, results: FrameResults, lines_thickness: int = 0,
                 font_scale: float = 0.0, font_thickness: int = 0) -> np.ndarray:
    """Draw ``results`` on a BGR/BGRx uint8 image in place (and return it); 0 = automatic."""
    h, w = image.shape[:2]
    style = auto_style(w, h, lines_thickness, font_scale, font_thickness)
    draw_on_planes(bgr_planes(image), w, h, results, style)
    return image


_OPENCV_420 = {"I420": cv2.COLOR_YUV2BGR_I420, "YV12": cv2.COLOR_YUV2BGR_YV12,
               "NV12": cv2.COLOR_YUV2BGR_NV12, "NV21": cv2.COLOR_YUV2BGR_NV21}


def frame_to_bgr(data, fmt: str, width: int, height: int, offsets, strides) -> np.ndarray:
    """A raw frame of any format :func:`frame_planes` reads as a new HxWx3 BGR uint8 image
    (YUV as BT.601 limited range, the inverse of the colours the overlay draws with)."""
    planes = frame_planes(data, fmt, width, height, offsets, strides)
    if fmt in _OPENCV_420 and width % 2 == 0 and height % 2 == 0:  # OpenCV's own, faster
        rows = [np.ascontiguousarray(p.array).reshape(-1, width) for p in planes]
        return cv2.cvtColor(np.concatenate(rows), _OPENCV_420[fmt])
    if fmt in PACKED_FORMATS:
        order = PACKED_FORMATS[fmt]
        return np.ascontiguousarray(planes[0].array[..., [order.index(c) for c in "BGR"]])
    shift = SIXTEEN_BIT_SHIFT.get(fmt, 0)
    components: dict[str, np.ndarray] = {}
    for (_, names, *_rest), plane in zip(YUV_FORMATS[fmt], planes, strict=True):
        array = plane.array >> shift if shift else plane.array
        for i, name in enumerate(names):
            one = array[..., i] if array.ndim == 3 else array
            if one.shape != (height, width):
                one = cv2.resize(np.ascontiguousarray(one, dtype=np.uint8), (width, height),
                                 interpolation=cv2.INTER_LINEAR)
            components[name] = one.astype(np.float32)
    if "G" in components:  # GRAY8
        return np.repeat(components["G"].astype(np.uint8)[..., None], 3, axis=2)
    y = (components["Y"] - 16.0) * 1.164
    u, v = components["U"] - 128.0, components["V"] - 128.0
    bgr = np.stack([y + 2.017 * u, y - 0.392 * u - 0.813 * v, y + 1.596 * v], axis=2)
    return np.clip(bgr, 0, 255).astype(np.uint8)


def is_drawable(results: FrameResults) -> bool:
    return bool(results.regions or results.classifications
                or results.segmentation is not None)


__all__ = [
    "OVERLAY_FORMATS", "PALETTE", "Plane", "Style", "auto_style", "bgr_planes", "color_for",
    "draw_on_planes", "draw_results", "frame_lines", "frame_planes", "frame_to_bgr",
    "is_drawable",
    "region_lines",
]
