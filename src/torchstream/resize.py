"""Resizing and cropping of uint8 image tensors, with torchvision's own functions.

Using ``torchvision.transforms.functional`` on the uint8 ``[C,H,W]`` tensor makes the result
identical to a classifier weights' reference transform (``weights.transforms()``: resize the
shorter side, centre-crop), which a generic scaler (videoscale, cv2.resize) only approximates.

:meth:`ResizeSpec.mapping` says where the output lies in the input (a crop or a letterbox
moves the picture), so boxes found on the output can be put back on the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.errors import ConfigError
from torchstream.meta import FrameMapping

MODES = ("aspect-ratio", "no-aspect-ratio", "letterbox")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


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
    crop: () none, (n,) square or (h, w), taken from the centre after resizing."""

    size: tuple[int, ...] = ()
    mode: str = "aspect-ratio"
    crop: tuple[int, ...] = ()
    interpolation: str = "bilinear"
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"property 'mode' must be one of {', '.join(MODES)}, "
                              f"got {self.mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"property 'interpolation' must be one of "
                              f"{', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.mode == "letterbox" and len(self.size) == 0:
            raise ConfigError("mode=letterbox needs a 'size'")

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        """Size after the resize step (before any crop or letterbox padding)."""
        if not self.size:
            return h, w
        if self.mode == "aspect-ratio" and len(self.size) == 1:
            short, long_ = (h, w) if h <= w else (w, h)
            new_long = int(self.size[0] * long_ / short)  # torchvision's rounding
            return (self.size[0], new_long) if h <= w else (new_long, self.size[0])
        box = self.size if len(self.size) == 2 else (self.size[0], self.size[0])
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

    def apply(self, image):
        """uint8 ``[C,H,W]`` torch tensor -> uint8 ``[C,h,w]`` tensor."""
        import torch
        from torchvision.transforms import functional as F

        _, h, w = image.shape
        out = image
        rh, rw = self.resized_hw(h, w)
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
