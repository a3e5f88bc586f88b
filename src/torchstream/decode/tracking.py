"""Object tracking: boxes, labels and scores of each frame in, a stable id per object out
(numpy + scipy, no GStreamer); the core of ``object_track``.

Two kinds, named as DL Streamer's ``gvatrack`` names them:

- ``zero-term-imageless``: a detection takes the id of the track whose last box it overlaps
  most (optimal assignment on IoU, ``scipy.optimize.linear_sum_assignment``); no motion model,
  so a track is only reported on frames where it was detected;
- ``short-term-imageless``: each track has a constant-velocity Kalman filter on its box
  (centre, width, height and their velocities), matched on the IoU of its *predicted* box.
  Frames without detections (``inference-interval`` > 1) get the predicted boxes of the
  tracks, with their ids; a track the detector misses keeps being reported (predicted) for
  ``max-predicted`` frames, and lives on, unreported, until ``max-age`` frames without a
  match.

Association in two passes, as ByteTrack does: detections scoring ``high_threshold`` or more
are matched first against every live track; the remaining tracks that were matched on the
previous detection frame then get a chance with the lower-scoring detections (down to
``low_threshold``), which keeps an occluded object's track alive without letting weak
detections start tracks. Unmatched high detections start tracks; a track gets its id once it
has been matched ``n_init`` times. With ``per_class`` a detection only matches a track of its
own label.

Boxes are ``[x1, y1, x2, y2]`` in any units (normalised or pixels: IoU and the filter's noise,
relative to the box size, do not depend on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torchstream.errors import ConfigError

ZERO_TERM, SHORT_TERM = "zero-term-imageless", "short-term-imageless"
TRACKING_TYPES = (ZERO_TERM, SHORT_TERM)

_POSITION_NOISE = 1 / 20  # std of the box's position and size, relative to its size
_VELOCITY_NOISE = 1 / 160  # std of their per-frame change, relative to the size
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # constant velocity: x += v each frame


@dataclass(frozen=True)
class TrackerSettings:
    """The tracker's settings, checked on creation (errors name the property)."""

    tracking_type: str = SHORT_TERM
    max_age: int = 30
    max_predicted: int = 2
    n_init: int = 1
    iou_threshold: float = 0.3
    per_class: bool = True
    high_threshold: float = 0.5
    low_threshold: float = 0.1

    def __post_init__(self) -> None:
        if self.tracking_type not in TRACKING_TYPES:
            raise ConfigError(f"property 'tracking-type' must be one of "
                              f"{', '.join(TRACKING_TYPES)}, got {self.tracking_type!r}")
        for prop, value, low in (("max-age", self.max_age, 0),
                                 ("max-predicted", self.max_predicted, 0),
                                 ("n-init", self.n_init, 1)):
            if int(value) < low:
                raise ConfigError(f"property '{prop}' must be at least {low}, got {value}")
        for prop, value in (("iou-threshold", self.iou_threshold),
                            ("high-threshold", self.high_threshold),
                            ("low-threshold", self.low_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"property '{prop}' must be in 0..1, got {value}")
        if self.low_threshold > self.high_threshold:
            raise ConfigError(f"property 'low-threshold' ({self.low_threshold}) must not be "
                              f"above 'high-threshold' ({self.high_threshold})")


@dataclass
class TrackedBox:
    """One reported object: its ``track_id``, box, label and score; ``index`` is the
    detection it came from (-1: a box the motion model predicted)."""

    track_id: int
    box: np.ndarray
    label_id: int
    score: float
    index: int


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N,4] with every box of ``b`` [M,4] (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _to_state(boxes: np.ndarray) -> np.ndarray:
    """[N,4] x1,y1,x2,y2 -> [N,4] cx,cy,w,h."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, wh], 1)


def _to_boxes(state: np.ndarray) -> np.ndarray:
    half = np.abs(state[:, 2:4]) / 2
    return np.concatenate([state[:, :2] - half, state[:, :2] + half], 1)


def _noise(state: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Diagonal covariances [N,2k,2k] of k (x-like, y-like) component pairs: each pair's
    weight times the box's width (x, w components) and height (y, h), squared."""
    k = 2 * len(weights)
    sizes = np.tile(np.abs(state[:, [2, 3]]), (1, len(weights)))
    std = sizes * np.repeat(np.asarray(weights, float), 2)[None, :]
    out = np.zeros((len(state), k, k))
    idx = np.arange(k)
    out[:, idx, idx] = std ** 2
    return out


def _assign(cost_iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Optimal pairs (row, column) of an IoU matrix, each at least ``threshold``."""
    from scipy.optimize import linear_sum_assignment

    if cost_iou.size == 0:
        return []
    gated = np.where(cost_iou >= threshold, cost_iou, 0.0)
    rows, cols = linear_sum_assignment(-gated)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)
            if cost_iou[r, c] >= threshold and cost_iou[r, c] > 0]


class Tracker:
    """The tracks of one stream. Call :meth:`update` on a frame with detections and
    :meth:`predict` on a frame without; each call is one frame."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.mean = np.zeros((0, 8))  # Kalman state per track (zero-term: the box, no velocity)
        self.cov = np.zeros((0, 8, 8))
        self.ids = np.zeros(0, np.int64)  # 0: not confirmed yet
        self.labels = np.zeros(0, np.int64)
        self.scores = np.zeros(0)
        self.hits = np.zeros(0, np.int64)
        self.misses = np.zeros(0, np.int64)  # frames since the last match (max_age)
        self.missed = np.zeros(0, np.int64)  # detection frames since then (max_predicted)
        self.matched_last = np.zeros(0, bool)  # matched on the last detection frame
        self.next_id = 1

    @property
    def motion(self) -> bool:
        return self.settings.tracking_type == SHORT_TERM

    def __len__(self) -> int:
        return len(self.ids)

    _FIELDS = ("mean", "cov", "ids", "labels", "scores", "hits", "misses", "missed",
               "matched_last")

    def _step(self) -> None:
        """One frame passes: tracks unmatched for more than max_age frames, and unconfirmed
        ones that missed, end; the filters predict; every track misses until matched."""
        keep = (self.misses <= self.settings.max_age) & ((self.ids > 0) | (self.misses == 0))
        if not keep.all():
            for name in self._FIELDS:
                setattr(self, name, getattr(self, name)[keep])
        if self.motion and len(self):
            q = _noise(self.mean, [_POSITION_NOISE] * 2 + [_VELOCITY_NOISE] * 2)
            self.mean = self.mean @ _F.T
            self.cov = _F @ self.cov @ _F.T + q
        self.misses += 1

    def boxes(self) -> np.ndarray:
        return _to_boxes(self.mean[:, :4])

    def _correct(self, tracks: np.ndarray, boxes: np.ndarray) -> None:
        measured = _to_state(boxes)
        if not self.motion:
            self.mean[tracks, :4] = measured
            return
        mean, cov = self.mean[tracks], self.cov[tracks]
        r = _noise(mean, [_POSITION_NOISE] * 2)
        s = cov[:, :4, :4] + r  # H P H^T: H picks the first four components
        gain = cov[:, :, :4] @ np.linalg.inv(s)  # P H^T S^-1
        innovation = measured - mean[:, :4]
        self.mean[tracks] = mean + (gain @ innovation[:, :, None])[:, :, 0]
        self.cov[tracks] = cov - gain @ cov[:, :4, :]  # (I - K H) P

    def _pairs(self, tracks: np.ndarray, boxes: np.ndarray,
               labels: np.ndarray) -> list[tuple[int, int]]:
        """(track, detection) pairs among ``tracks`` (indices) and the detections."""
        if len(tracks) == 0 or len(boxes) == 0:
            return []
        iou = iou_matrix(self.boxes()[tracks], boxes)
        if self.settings.per_class:
            iou = np.where(self.labels[tracks][:, None] == labels[None, :], iou, 0.0)
        return [(int(tracks[t]), d) for t, d in _assign(iou, self.settings.iou_threshold)]

    def update(self, boxes: np.ndarray, labels: Sequence[int],
               scores: Sequence[float]) -> list[TrackedBox]:
        """Match this frame's detections; returns the objects to report: the detections of
        confirmed tracks, then (short-term) the predicted boxes of tracks missed for at most
        ``max_predicted`` frames."""
        s = self.settings
        self._step()
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        labels = np.asarray(labels, np.int64).reshape(-1)
        scores = np.asarray(scores, float).reshape(-1)
        high = np.flatnonzero(scores >= s.high_threshold)
        low = np.flatnonzero((scores >= s.low_threshold) & (scores < s.high_threshold))
        everyone = np.arange(len(self))
        first = [(t, int(high[d])) for t, d in self._pairs(everyone, boxes[high], labels[high])]
        taken = {t for t, _ in first}
        recent = np.array([t for t in everyone if t not in taken and self.matched_last[t]],
                          np.int64)
        second = [(t, int(low[d])) for t, d in self._pairs(recent, boxes[low], labels[low])]
        pairs = first + second
        matched_det = np.full(len(boxes), -1, np.int64)
        self.matched_last = np.zeros(len(self), bool)
        self.missed += 1  # a detection frame: one more for every track it does not match
        if pairs:
            tracks = np.array([t for t, _ in pairs], np.int64)
            dets = np.array([d for _, d in pairs], np.int64)
            self._correct(tracks, boxes[dets])
            self.hits[tracks] += 1
            self.misses[tracks] = 0
            self.missed[tracks] = 0
            self.scores[tracks] = scores[dets]
            self.matched_last[tracks] = True
            matched_det[dets] = tracks
        new = [int(d) for d in high if matched_det[d] < 0]
        self._start(boxes[new], labels[new], scores[new])
        matched_det[new] = np.arange(len(self) - len(new), len(self))
        self._confirm()
        out = [TrackedBox(int(self.ids[t]), boxes[d], int(labels[d]), float(scores[d]), d)
               for d, t in enumerate(matched_det) if t >= 0 and self.ids[t] > 0]
        return out + (self._predicted(1) if self.motion else [])

    def predict(self) -> list[TrackedBox]:
        """A frame without detections: short-term reports the predicted box of every
        confirmed track matched on the last detection frame (or within ``max_predicted``
        frames); zero-term reports nothing."""
        self._step()
        return self._predicted(0) if self.motion else []

    def _start(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        n = len(boxes)
        if n == 0:
            return
        state = _to_state(boxes)
        mean = np.concatenate([state, np.zeros((n, 4))], 1)
        cov = _noise(state, [2 * _POSITION_NOISE] * 2 + [10 * _VELOCITY_NOISE] * 2)
        self.mean = np.concatenate([self.mean, mean])
        self.cov = np.concatenate([self.cov, cov])
        self.ids = np.concatenate([self.ids, np.zeros(n, np.int64)])
        self.labels = np.concatenate([self.labels, labels])
        self.scores = np.concatenate([self.scores, scores])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.misses = np.concatenate([self.misses, np.zeros(n, np.int64)])
        self.missed = np.concatenate([self.missed, np.zeros(n, np.int64)])
        self.matched_last = np.concatenate([self.matched_last, np.ones(n, bool)])

    def _confirm(self) -> None:
        for t in np.flatnonzero((self.ids == 0) & (self.hits >= self.settings.n_init)):
            self.ids[t] = self.next_id
            self.next_id += 1

    def _predicted(self, fewest: int) -> list[TrackedBox]:
        """The predicted boxes of confirmed tracks missed on ``fewest`` to max_predicted
        detection frames since their last match."""
        boxes = self.boxes()
        return [TrackedBox(int(self.ids[t]), boxes[t], int(self.labels[t]),
                           float(self.scores[t]), -1)
                for t in range(len(self))
                if self.ids[t] > 0 and fewest <= self.missed[t] <= self.settings.max_predicted]
