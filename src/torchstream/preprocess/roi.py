"""Cropping a frame's regions into one batch of equally sized images (tensor_roi_crop's core).

Each selected region's box (normalised to the frame) becomes a pixel box of the frame tensor,
is cut out, then resized/cropped exactly as
:meth:`torchstream.preprocess.resize.ResizeSpec.apply` does
(so a classifier sees what its weights' reference transform gives for that crop), and the
crops are stacked into ``[R, C, h, w]``. GStreamer-free.

Pixel box rounding: the same as the ``GstVideoRegionOfInterestMeta`` mirror of the region
(:meth:`torchstream.gst.meta.Region.pixels`): each edge ``round(coordinate * size)`` (Python's
round, half to even), clipped to the frame, so a C element reading the ROI meta crops the same
pixels. A box that rounds to nothing is widened to 1 pixel (towards the frame's inside at the
right/bottom edge), so every selected region gives a crop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchstream.errors import ConfigError

if TYPE_CHECKING:  # kept out at run time: this module stays GStreamer-free
    from torchstream.caps import TensorsConfig
    from torchstream.preprocess.resize import ResizeSpec
    from torchstream.results.data import Region


def is_region_batch(config: TensorsConfig) -> bool:
    """Every tensor has a first dim of 0 and fixed others: each buffer holds a batch of R items
    (its own R, from its tensors record), e.g. this module's crops after normalisation."""
    return bool(config.tensors) and all(
        len(t.shape) >= 2 and t.shape[0] == 0 and all(d > 0 for d in t.shape[1:])
        for t in config.tensors
    )


def crop_box(region: Region, width: int, height: int) -> tuple[int, int, int, int]:
    """``region``'s box in pixels of a ``width`` x ``height`` frame: ``(x0, y0, x1, y1)``,
    end-exclusive, clipped to the frame, at least 1x1."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} is not positive")
    x, y, w, h = region.pixels(width, height)
    x0, x1 = _at_least_one(x, x + w, width)
    y0, y1 = _at_least_one(y, y + h, height)
    return x0, y0, x1, y1


def _at_least_one(start: int, end: int, limit: int) -> tuple[int, int]:
    if end > start:
        return start, end
    start = min(start, limit - 1)
    return start, start + 1


def select_regions(regions: Iterable[Region], classes: frozenset[str]) -> list[Region]:
    """The regions whose label is in ``classes`` (all of them when ``classes`` is empty), in
    the frame's order."""
    return [r for r in regions if not classes or r.label in classes]


def fixed_output_hw(spec: ResizeSpec) -> tuple[int, int]:
    """The ``(h, w)`` every crop is brought to; crops of any size must stack, so the spec must
    fix it: a ``crop``, a ``letterbox`` size, or a ``no-aspect-ratio`` size."""
    if spec.crop:
        return spec.output_hw(1, 1)
    if spec.size and spec.mode in ("letterbox", "no-aspect-ratio"):
        return spec.output_hw(1, 1)
    raise ConfigError(
        "tensor_roi_crop needs a fixed output size, as regions differ in size: set 'crop' "
        "(e.g. size=256 crop=224), or 'size' with mode=no-aspect-ratio or mode=letterbox"
    )


@dataclass(frozen=True)
class RoiCropper:
    """Crops the selected regions of ``[C,H,W]`` uint8 frames into ``[R,C,h,w]`` batches."""

    spec: ResizeSpec
    classes: frozenset[str] = frozenset()

    @property
    def output_hw(self) -> tuple[int, int]:
        return fixed_output_hw(self.spec)

    def __post_init__(self) -> None:
        fixed_output_hw(self.spec)  # refuse a configuration whose crops could not stack

    def crop(self, image, regions: Sequence[Region]):
        """uint8 torch ``[C,H,W]`` and the regions to crop -> uint8 ``[len(regions),C,h,w]``."""
        import torch

        channels, height, width = image.shape
        h, w = self.output_hw
        if not regions:
            return torch.empty((0, channels, h, w), dtype=image.dtype)
        crops = []
        for r in regions:
            x0, y0, x1, y1 = crop_box(r, width, height)
            crops.append(self.spec.apply(image[:, y0:y1, x0:x1]))
        return torch.stack(crops)
