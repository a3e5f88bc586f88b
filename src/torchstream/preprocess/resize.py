"""Resizing and cropping of uint8 image tensors, with torchvision's own functions.

Using ``torchvision.transforms.functional`` on the uint8 ``[C,H,W]`` tensor makes the result
identical to a classifier weights' reference transform (``weights.transforms()``: resize the
shorter side, centre-crop), which a generic scaler (videoscale, cv2.resize) only approximates.

:meth:`ResizeSpec.mapping` says where the output lies in the input (a crop or a letterbox
moves the picture), so boxes found on the output can be put back on the frame.

A resize followed by a crop inside the resized picture (a classifier's "shorter side 256,
centre 224") computes only the pixels the crop keeps (:func:`_resize_crop`), bit-exact with
torchvision: its tensor ``resize`` converts uint8 to float32 and runs torch's separable
antialiased kernel (horizontal pass, float32 intermediate, vertical pass, round), so we run
that same kernel on the crop's share of each pass rather than imitate its float arithmetic.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from torchstream.errors import ConfigError
from torchstream.results.data import FrameMapping

if TYPE_CHECKING:
    import torch

MODES = ("aspect-ratio", "no-aspect-ratio", "letterbox")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_FILTER_WIDTH = {"bilinear": 2, "bicubic": 4}  # torch's interp_size: the filter's width at scale 1


def parse_border(text: str, prop: str) -> tuple[int, int]:
    """``""`` -> (0, 0), ``"8"`` -> (8, 8), ``"8x4"`` (x, y) -> (4, 8) as (y, x)."""
    text = (text or "").strip().lower()
    if not text:
        return (0, 0)
    parts = text.split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"property '{prop}' must be N or XxY (pixels, >= 0), got {text!r}")
    x = int(parts[0])
    return (int(parts[-1]), x)


def parse_size(text: str, prop: str) -> tuple[int, ...]:
    """``""`` -> (), ``"256"`` -> (256,), ``"320x240"`` (width x height) -> (240, 320)."""
    text = (text or "").strip().lower()
    if not text:
        return ()
    parts = text.split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"property '{prop}' must be N or WIDTHxHEIGHT (positive), got {text!r}")
    if len(parts) == 1:
        return (int(parts[0]),)
    return (int(parts[1]), int(parts[0]))


@dataclass(frozen=True)
class ResizeSpec:
    """size: () none, (n,) shorter side (aspect-ratio) or square, (h, w) exact box.
    crop: () none, (n,) square or (h, w), taken from the centre after resizing.
    border (letterbox): (y, x) pixels kept free above and below / left and right of the
    picture inside the box (DL Streamer's padding stride); fill: the padding's value per
    channel (one for all), 0 when empty (YOLO's letterbox pads 114)."""

    size: tuple[int, ...] = ()
    mode: str = "aspect-ratio"
    crop: tuple[int, ...] = ()
    interpolation: str = "bilinear"
    antialias: bool = True
    border: tuple[int, int] = (0, 0)
    fill: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"property 'mode' must be one of {', '.join(MODES)}, "
                              f"got {self.mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"property 'interpolation' must be one of "
                              f"{', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.mode == "letterbox" and len(self.size) == 0:
            raise ConfigError("mode=letterbox needs a 'size'")
        if any(self.border) or self.fill:
            if self.mode != "letterbox":
                raise ConfigError("properties 'padding' and 'fill' apply to mode=letterbox")
            box_h, box_w = self._box_hw()
            if 2 * self.border[0] >= box_h or 2 * self.border[1] >= box_w:
                raise ConfigError(f"property 'padding' {self.border[1]}x{self.border[0]} leaves "
                                  f"no room in the {box_w}x{box_h} box")
            if not all(0 <= v <= 255 for v in self.fill) or len(self.fill) > 4:
                raise ConfigError(f"property 'fill' must be 1 to 4 values in 0..255, got "
                                  f"{list(self.fill)}")

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        """Size after the resize step (before any crop or letterbox padding)."""
        if not self.size:
            return h, w
        if self.mode == "aspect-ratio" and len(self.size) == 1:
            short, long_ = (h, w) if h <= w else (w, h)
            new_long = int(self.size[0] * long_ / short)  # torchvision's rounding
            return (self.size[0], new_long) if h <= w else (new_long, self.size[0])
        box = self.size if len(self.size) == 2 else (self.size[0], self.size[0])
        if self.mode == "letterbox":
            box = (box[0] - 2 * self.border[0], box[1] - 2 * self.border[1])
        if self.mode == "letterbox" or (self.mode == "aspect-ratio" and len(self.size) == 2):
            scale = min(box[0] / h, box[1] / w)
            return max(1, round(h * scale)), max(1, round(w * scale))
        return box

    def _box_hw(self) -> tuple[int, int]:
        return self.size if len(self.size) == 2 else (self.size[0], self.size[0])

    def _crop_hw(self) -> tuple[int, int]:
        return self.crop if len(self.crop) == 2 else (self.crop[0], self.crop[0])

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.crop:
            return self._crop_hw()
        if self.mode == "letterbox":
            return self._box_hw()
        return self.resized_hw(h, w)

    def mapping(self, h: int, w: int) -> FrameMapping:
        """Where :meth:`apply`'s output for an ``h`` x ``w`` input lies in that input: the
        output's normalised coordinates mapped onto the input's.

        Resizing scales the whole picture, so it leaves normalised coordinates unchanged
        (whatever the rounding of the new size); only the letterbox padding and the crop
        move the picture, by the integer offsets :meth:`apply` and torchvision's
        ``center_crop`` use (including the zero padding ``center_crop`` adds when the crop is
        larger than the picture).
        """
        mapping = FrameMapping.identity()
        cur_h, cur_w = self.resized_hw(h, w)
        if self.mode == "letterbox":
            box_h, box_w = self._box_hw()
            top, left = (box_h - cur_h) // 2, (box_w - cur_w) // 2
            mapping = mapping.then(_window(box_h, -top, cur_h, box_w, -left, cur_w))
            cur_h, cur_w = box_h, box_w
        if self.crop:
            crop_h, crop_w = self._crop_hw()
            top = _centre_crop_start(cur_h, crop_h)
            left = _centre_crop_start(cur_w, crop_w)
            mapping = mapping.then(_window(crop_h, top, cur_h, crop_w, left, cur_w))
        return mapping

    def _crops_the_resize(self, h: int, w: int, rh: int, rw: int) -> bool:
        """Whether :func:`_resize_crop` computes this spec exactly: an antialiased
        bilinear/bicubic resize, then a crop that lies inside the resized picture."""
        if not (self.crop and (rh, rw) != (h, w) and self.mode != "letterbox"
                and self.antialias and self.interpolation in _FILTER_WIDTH):
            return False
        crop_h, crop_w = self._crop_hw()
        return crop_h <= rh and crop_w <= rw

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``[C,H,W]`` torch tensor -> uint8 ``[C,h,w]`` tensor.

        A crop of an antialiased resize computes the crop's pixels only (:func:`_resize_crop`,
        same bits): a classifier's 256/224 transform would throw most of the frame away."""
        import torch
        from torchvision.transforms import functional as F

        _, h, w = image.shape
        out = image
        rh, rw = self.resized_hw(h, w)
        if (self._crops_the_resize(h, w, rh, rw) and image.dtype == torch.uint8
                and image.device.type == "cpu"):
            plan = _crop_plan(h, w, rh, rw, *self._crop_hw(), self.interpolation)
            return _resize_crop(image, plan, self.interpolation)
        if (rh, rw) != (h, w):
            mode = F.InterpolationMode(self.interpolation)
            if self.mode == "aspect-ratio" and len(self.size) == 1:
                target = [self.size[0]]  # shorter side, exactly as torchvision computes it
            else:
                target = [rh, rw]
            out = F.resize(out, target, interpolation=mode, antialias=self.antialias)
        if self.mode == "letterbox":
            box_h, box_w = self._box_hw()
            canvas = torch.zeros((out.shape[0], box_h, box_w), dtype=out.dtype)
            if self.fill:
                fill = self.fill if len(self.fill) > 1 else self.fill * out.shape[0]
                if len(fill) != out.shape[0]:
                    raise ConfigError(f"property 'fill' has {len(self.fill)} values for "
                                      f"{out.shape[0]} channels")
                canvas[:] = torch.tensor(fill, dtype=torch.float32).round().to(
                    out.dtype)[:, None, None]
            top, left = (box_h - out.shape[1]) // 2, (box_w - out.shape[2]) // 2
            canvas[:, top:top + out.shape[1], left:left + out.shape[2]] = out
            out = canvas
        if self.crop:
            out = F.center_crop(out, list(self.crop))
        return out


def _window(out_h: int, top: int, in_h: int, out_w: int, left: int,
            in_w: int) -> FrameMapping:
    """The mapping of an ``out_h`` x ``out_w`` window whose top-left pixel is (``top``,
    ``left``) of an ``in_h`` x ``in_w`` picture (negative: the window starts in padding)."""
    return FrameMapping(sx=out_w / in_w, ox=left / in_w, sy=out_h / in_h, oy=top / in_h)


def _centre_crop_start(size: int, crop: int) -> int:
    """First pixel of torchvision's ``center_crop`` along one axis, in the picture's pixels.

    A crop larger than the picture pads that axis with ``(crop - size) // 2`` zeros before it
    and starts at the padded picture's first pixel; otherwise it starts at
    ``round((size - crop) / 2)`` (Python's rounding, half to even, as torchvision computes it).
    Each axis is independent: padding one does not move the other.
    """
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


@dataclass(frozen=True)
class _Axis:
    """One axis of a resize + crop, cut down to what the crop needs.

    Resized pixels ``start`` .. ``start + count - 1`` are computed; they read input pixels
    ``lo`` .. ``hi - 1`` only (a safe margin around the filter's support). ``factor`` (not
    None) makes torch resize just the input's first ``hi`` pixels with the whole axis's
    weights, so the outputs past the crop are not computed either.
    """

    n_in: int
    n_out: int
    start: int
    count: int
    lo: int
    hi: int
    factor: float | None

    @property
    def resized(self) -> bool:
        return self.n_in != self.n_out

    @property
    def end(self) -> int:
        """Input pixels the resize call is given (the first ``end``)."""
        return self.hi if self.factor is not None else self.n_in


@dataclass(frozen=True)
class _Plan:
    """:func:`_resize_crop`'s rows and columns; ``pick``: where the crop's columns start
    among the computed ones (more than one is computed for a 1-pixel-wide crop)."""

    rows: _Axis
    cols: _Axis
    pick: int
    crop_w: int


def _axis(n_in: int, n_out: int, start: int, count: int, interpolation: str) -> _Axis:
    """Plan one axis: the input span the kept outputs read, and the truncating scale factor.

    torch computes every output's weights from ``scale = float32(n_in) / float32(n_out)``
    (``area_pixel_compute_scale``), ``center = scale * (i + 0.5)`` and the support
    ``width / 2 * max(scale, 1)``; given a scale factor instead of a size it uses
    ``float32(1 / factor)``. Passing ``1 / scale`` with the first ``hi`` input pixels thus
    gives outputs ``0 .. start + count - 1`` the very same weights (none of their windows
    reaches ``hi``). Shifting the start instead would change ``center``'s float rounding.
    """
    if n_in == n_out:
        return _Axis(n_in, n_out, start, count, start, start + count, None)
    scale = float(np.float32(n_in) / np.float32(n_out))
    support = _FILTER_WIDTH[interpolation] / 2 * max(scale, 1.0)
    lo = max(0, math.floor(scale * (start + 0.5) - support) - 2)
    hi = min(n_in, math.ceil(scale * (start + count - 0.5) + support) + 2)
    factor: float | None = 1.0 / scale
    out = math.floor(hi * factor)  # torch's output length for that factor
    # out == hi: torch would skip the pass as a no-op; out == 1: its 1-pixel code path, which
    # rounds otherwise (see _crop_plan)
    if (hi >= n_in or float(np.float32(1.0 / factor)) != scale or out == hi
            or out < max(start + count, 2)):
        factor = None
    return _Axis(n_in, n_out, start, count, lo, hi, factor)


@functools.lru_cache(maxsize=256)
def _crop_plan(h: int, w: int, rh: int, rw: int, crop_h: int, crop_w: int,
               interpolation: str) -> _Plan:
    """The plan of :func:`_resize_crop`, once per frame size and spec, not per frame.

    torch's vertical pass takes another code path, with other float rounding, on a picture
    1 pixel wide: a 1-column crop of a wider picture is computed 2 columns wide.
    """
    left = _centre_crop_start(rw, crop_w)
    width = 2 if crop_w == 1 and rw > 1 else crop_w
    first = min(left, rw - width)
    return _Plan(_axis(h, rh, _centre_crop_start(rh, crop_h), crop_h, interpolation),
                 _axis(w, rw, first, width, interpolation), left - first, crop_w)


def _resize_axis(x: torch.Tensor, axis: _Axis, dim: int, mode: str) -> torch.Tensor:
    """torch's antialiased resize of dim 2 (rows) or 3 (columns) of a float ``[1,C,H,W]``
    whose ``dim`` holds ``axis.end`` pixels; the other dim keeps its size (one pass)."""
    import torch.nn.functional as TF

    if axis.factor is None:
        size = list(x.shape[2:])
        size[dim - 2] = axis.n_out
        return TF.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    factors = [1.0, 1.0]
    factors[dim - 2] = axis.factor
    return TF.interpolate(x, scale_factor=factors, mode=mode, antialias=True,
                          align_corners=False, recompute_scale_factor=False)


def _resize_crop(image: torch.Tensor, plan: _Plan, mode: str) -> torch.Tensor:
    """``center_crop(resize(image))`` as torchvision computes it, for the kept pixels only.

    torchvision's separable pass order is kept: the horizontal pass on the input rows the
    vertical pass reads (and the columns up to the crop's right edge), then the vertical
    pass on the crop's columns (rows up to its bottom edge). Each output pixel depends only
    on its own window and weights, so it comes out bit for bit as in the whole-frame call.
    The horizontal pass also computes the few rows above the vertical pass's window: cheaper
    than a zero-filled copy of the window at the right height.
    """
    import torch

    rows, cols = plan.rows, plan.cols
    # the vertical pass takes rows 0 .. end; without one, the crop's rows are all there is
    top, bottom = (0, rows.end) if rows.resized else (rows.lo, rows.hi)
    if cols.resized:
        x = image[:, top:bottom, :cols.end].float()[None]
        x = _resize_axis(x, cols, 3, mode)[..., cols.start:cols.start + cols.count]
    else:
        x = image[:, top:bottom, cols.start:cols.start + cols.count].float()[None]
    if rows.resized:
        x = _resize_axis(x, rows, 2, mode)[:, :, rows.start:rows.start + rows.count]
    x = x[0, :, :, plan.pick:plan.pick + plan.crop_w]
    if mode == "bicubic":
        x = x.clamp(0, 255)  # as torchvision does before rounding back to uint8
    return x.round_().to(torch.uint8)
