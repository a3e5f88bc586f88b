"""Clips of frames for video (clip) classifiers, GStreamer-free.

A clip model (``torchvision.models.video.*``) classifies T frames at once: its input is
``[C,T,H,W]``, each frame preprocessed as torchvision's ``VideoClassification`` transform does
(an exact resize, no antialiasing, centre crop, mean/std). :class:`ClipWindow` keeps the last
T preprocessed frames and gives the stacked clip on every ``stride``-th frame once T have been
seen; the result belongs to the frame that closes the window.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from torchstream.errors import ConfigError

VIDEO_PREFIX = "torchvision.models.video."
DEFAULT_CLIP_LENGTH = 16  # the clip_len of torchvision's R(2+1)D, R3D, MC3 and MViT figures


def is_clip_model(model: str) -> bool:
    return (model or "").startswith(VIDEO_PREFIX)


def weights_clip_length(weights) -> int | None:
    """The clip length a torchvision video weights entry was evaluated with (``clip_len=16``
    in its documentation), or None when it does not say."""
    meta = getattr(weights, "meta", None) or {}
    found = re.search(r"clip_len=(\d+)", str(meta.get("_docs", "")))
    return int(found.group(1)) if found else None


def clip_shape(frame_shape: tuple[int, ...], length: int) -> tuple[int, ...]:
    """``[C,H,W]`` frames -> the ``[C,T,H,W]`` clip."""
    if len(frame_shape) != 3:
        raise ConfigError(f"a clip is built from [C,H,W] frame tensors, got "
                          f"{list(frame_shape)}")
    channels, height, width = frame_shape
    return (channels, length, height, width)


@dataclass
class ClipWindow:
    """The last ``length`` frames; :meth:`push` returns a clip on every ``stride``-th frame
    from the ``length``-th on (the frames in between close no window)."""

    length: int
    stride: int
    frames: deque = field(default_factory=deque)
    seen: int = 0
    clips: int = 0

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1:
            raise ConfigError(f"a clip window needs length >= 1 and stride >= 1, got "
                              f"{self.length} and {self.stride}")
        self.frames = deque(maxlen=self.length)

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        self.frames.append(np.array(frame, copy=True))  # the buffer it came from is reused
        self.seen += 1
        if self.seen < self.length or (self.seen - self.length) % self.stride:
            return None
        self.clips += 1
        return np.stack(self.frames, axis=1)

    def reset(self) -> None:
        """A new stream (seek, flush): the next clip waits for ``length`` new frames."""
        self.frames.clear()
        self.seen = 0
