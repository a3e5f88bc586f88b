"""YOLO output layouts to candidate detections (numpy only, no GStreamer).

Exported YOLO models end in one tensor per image, in one of three layouts (the batch axis, or a
leading 1, aside):

- ``anchor-free`` (``yolo_v8``, ``yolo_v11``, also YOLOv5u and later heads): ``[4+nc, N]``
  rows cx, cy, w, h in model-input pixels, then one score per class (already a sigmoid, no
  objectness); some exports transpose it to ``[N, 4+nc]``;
- ``objectness`` (``yolo_v5``, ``yolo_v7`` exports with the Detect layer decoded):
  ``[N, 5+nc]`` cx, cy, w, h, objectness, class scores; a class's score is
  objectness x class score;
- ``end-to-end`` (``yolo_v10`` and other NMS-free exports): ``[N, 6]`` x1, y1, x2, y2, score,
  class id.

:func:`candidates` turns one image's tensor into rows ``x1, y1, x2, y2, score, class`` (model
input pixels) of the best class of each box whose score reaches the threshold; the detection
post-processing then runs NMS on them (not for end-to-end outputs) and maps them to the frame
(:mod:`torchstream.decode.detection`). Without a converter name the layout is told from the shape:
6 columns is end-to-end; otherwise the shorter axis holds the channels, first (anchor-free)
or last (objectness), unless the class count is known and says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torchstream.errors import ConfigError, TorchstreamError

ANCHOR_FREE, OBJECTNESS, END_TO_END = "anchor-free", "objectness", "end-to-end"
#: DL Streamer's converter names for the layouts (model-proc ``converter``, the element's
#: ``converter`` property); "yolo" tells the layout from the shape.
CONVERTERS = {"yolo_v8": ANCHOR_FREE, "yolo_v11": ANCHOR_FREE, "yolo_v5": OBJECTNESS,
              "yolo_v7": OBJECTNESS, "yolo_v10": END_TO_END, "yolo": ""}
_EXTRA = {ANCHOR_FREE: 4, OBJECTNESS: 5}  # channels before the class scores


@dataclass(frozen=True)
class YoloLayout:
    """How one image's YOLO tensor holds its boxes; ``why`` says how it was decided."""

    kind: str
    channels_first: bool  # [C, N] (anchor-free as exported) rather than [N, C]
    classes: int
    why: str

    @property
    def nms(self) -> bool:
        """Whether the boxes still need NMS (an end-to-end model has done its own)."""
        return self.kind != END_TO_END

    def __str__(self) -> str:
        order = "[4+nc, N]" if self.channels_first else (
            "[N, 6]" if self.kind == END_TO_END else f"[N, {_EXTRA[self.kind]}+nc]")
        return f"YOLO {self.kind} {order}, {self.classes} classes ({self.why})"


def _matrix_shape(shape: Sequence[int]) -> tuple[int, int] | None:
    """The last two dims of ``shape`` when every dim before them is 1 (one image)."""
    dims = [int(d) for d in shape]
    if len(dims) < 2 or any(d != 1 for d in dims[:-2]):
        return None
    return dims[-2], dims[-1]


def looks_like_yolo(shape: Sequence[int]) -> bool:
    """A shape the auto layout can read as YOLO: one image's ``[a, b]`` with at least 5
    channels on its shorter axis and more candidates than channels (or 6 columns)."""
    matrix = _matrix_shape(shape)
    if matrix is None:
        return False
    a, b = matrix
    return b == 6 or (min(a, b) >= 5 and max(a, b) > min(a, b))


def resolve_yolo_layout(shape: Sequence[int], converter: str = "yolo",
                        classes: int | None = None) -> YoloLayout:
    """The layout of one image's tensor of ``shape``; ``classes``: the class count when known
    (labels, model-proc ``classes``), which settles the orientation of a square-ish tensor."""
    if converter not in CONVERTERS:
        raise ConfigError(f"converter '{converter}' is not a YOLO converter; known: "
                          f"{', '.join(CONVERTERS)}")
    matrix = _matrix_shape(shape)
    if matrix is None:
        raise TorchstreamError(f"a YOLO output is one [C, N] or [N, C] tensor per image, got "
                               f"{list(shape)}")
    a, b = matrix
    kind = CONVERTERS[converter]
    named = f"converter {converter}"
    if not kind:
        if b == 6 and a != 6:
            kind, named = END_TO_END, "6 columns"
        elif a < b:
            kind, named = ANCHOR_FREE, "fewer rows than columns: channels first"
        elif classes is not None and b == 4 + classes:
            kind, named = ANCHOR_FREE, f"{b} columns = 4 + {classes} classes"
        else:
            kind, named = OBJECTNESS, "fewer columns than rows: channels last"
    if kind == END_TO_END:
        if b != 6:
            raise TorchstreamError(f"{named}: an end-to-end YOLO output is [N, 6] (x1, y1, x2, "
                                   f"y2, score, class), got {list(shape)}")
        return YoloLayout(kind, False, classes or 0, named)
    extra = _EXTRA[kind]
    if classes is not None:
        if a == extra + classes and b != extra + classes:
            first = True
        elif b == extra + classes:
            first = False
        else:
            raise TorchstreamError(f"{named}: an {kind} output with {classes} classes has "
                                   f"{extra + classes} channels, got {list(shape)}")
    else:
        first = a < b
    channels = a if first else b
    if channels <= extra:
        raise TorchstreamError(f"{named}: an {kind} output needs more than {extra} channels "
                               f"(box{', objectness' if extra == 5 else ''}, class scores), "
                               f"got {list(shape)}")
    return YoloLayout(kind, first, channels - extra, named)


def candidates(array: np.ndarray, layout: YoloLayout, threshold: float) -> np.ndarray:
    """Rows ``x1, y1, x2, y2, score, class`` (float64, model-input pixels) of the boxes whose
    best class scores at least ``threshold``, in the model's order."""
    a, b = array.shape[-2:]
    values = array.reshape(a, b)
    if layout.kind == END_TO_END:
        rows = values.astype(np.float64)
        return rows[rows[:, 4] >= threshold] if threshold > 0 else rows
    channels = values if layout.channels_first else values.T  # [C, N], a view
    extra = _EXTRA[layout.kind]
    scores = channels[extra:]
    score = scores.max(axis=0)  # the best class first: argmax only for the boxes kept
    if layout.kind == OBJECTNESS:
        score = channels[4] * score  # objectness x class score (both sigmoids, >= 0)
    keep = np.flatnonzero(score >= threshold)
    best = scores[:, keep].argmax(axis=0)
    box = channels[:4, keep].astype(np.float64)
    half_w, half_h = box[2] / 2, box[3] / 2
    rows = np.empty((len(keep), 6), np.float64)
    rows[:, 0] = box[0] - half_w
    rows[:, 1] = box[1] - half_h
    rows[:, 2] = box[0] + half_w
    rows[:, 3] = box[1] + half_h
    rows[:, 4] = score[keep]
    rows[:, 5] = best
    return rows
