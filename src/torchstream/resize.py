"""Resizing and cropping of uint8 image tensors, with torchvision's own functions.

Using ``torchvision.transforms.functional`` on the uint8 ``[C,H,W]`` tensor makes the result
identical to a classifier weights' reference transform (``weights.transforms()``: resize the
shorter side, centre-crop), which a generic scaler (videoscale, cv2.resize) only approximates.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.errors import ConfigError

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

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.crop:
            return self.crop if len(self.crop) == 2 else (self.crop[0], self.crop[0])
        if self.mode == "letterbox":
            return self.size if len(self.size) == 2 else (self.size[0], self.size[0])
        return self.resized_hw(h, w)

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
            box_h, box_w = self.size if len(self.size) == 2 else (self.size[0], self.size[0])
            canvas = torch.zeros((out.shape[0], box_h, box_w), dtype=out.dtype)
            top, left = (box_h - out.shape[1]) // 2, (box_w - out.shape[2]) // 2
            canvas[:, top:top + out.shape[1], left:left + out.shape[2]] = out
            out = canvas
        if self.crop:
            out = F.center_crop(out, list(self.crop))
        return out
