"""Semantic segmentation outputs to a class map (numpy only, no GStreamer): the core of
tensor_postproc_segmentation.

A segmentation model gives class scores per pixel, ``[1,C,H,W]`` or ``[C,H,W]``; torchvision's
``torchvision.models.segmentation.*`` name that output ``out`` (and an auxiliary head's
``aux``, not used). The class of a cell is its highest score (torchvision's own
``output.argmax(1)``); the map stays at the output's resolution, laid over the model input,
and the buffer's frame mapping puts it on the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torchstream.decode.detection import describe
from torchstream.decode.labels import Labels, check_covers
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.results.data import FrameMapping, Segmentation

OUTPUT_NAME = "out"  # torchvision's segmentation models' main output


@dataclass(frozen=True)
class SegmentationParams:
    labels: Labels | None = None  # names by class id


def score_output(shapes: Sequence[Sequence[int]], names: Sequence[str]) -> int:
    """The index of the class-scores output: the one named ``out``, else the only one shaped
    ``[1,C,H,W]`` or ``[C,H,W]``."""
    if OUTPUT_NAME in names:
        index = list(names).index(OUTPUT_NAME)
    else:
        maps = [i for i, s in enumerate(shapes) if len(s) == 3 or (len(s) == 4 and s[0] == 1)]
        if len(maps) != 1:
            why = "none is" if not maps else "several are"
            raise ConfigError(f"segmentation: cannot tell the class-scores output of "
                              f"{describe(shapes, names)}: {why} shaped [1,C,H,W] (name it "
                              f"'{OUTPUT_NAME}')")
        index = maps[0]
    shape = tuple(shapes[index])
    if not (len(shape) == 3 or (len(shape) == 4 and shape[0] == 1)) or shape[-3] < 2:
        raise ConfigError(f"segmentation: the class-scores output of {describe(shapes, names)} "
                          "is not one frame's [1,C,H,W] with C >= 2")
    return index


def class_map(scores: np.ndarray) -> np.ndarray:
    """``[1,C,H,W]`` / ``[C,H,W]`` scores -> the ``[H,W]`` class ids (the first of equal
    highest scores, as ``argmax`` takes it)."""
    values = scores.reshape(scores.shape[-3:])
    if not np.isfinite(values).all():
        raise TorchstreamError("segmentation scores hold NaN or infinite values")
    return values.argmax(axis=0)


def segment(arrays: Sequence[np.ndarray], names: Sequence[str], labels: Labels | None,
            mapping: FrameMapping | None) -> tuple[Segmentation, int]:
    """One buffer's class map as a :class:`Segmentation`, and the output it was read from."""
    index = score_output([a.shape for a in arrays], names)
    classes = arrays[index].shape[-3]
    if labels is not None:
        check_covers(labels, classes)
    names_by_id = tuple(labels.names[:classes]) if labels is not None else ()
    return Segmentation.from_array(class_map(arrays[index]), names_by_id, mapping), index
