"""Matching inference results to frames by running time, and merging them (meta_aggregate).

Plain Python, no GStreamer: the element shell feeds it running times and results.

A frame at running time ``t`` is ready when every results stream has shown what it holds for
``t``: a result at ``t`` was received (one result per frame and stream), a later result is
queued (nothing will come for ``t``: the stream skipped that frame), or the stream ended.
Results older than the frame being matched belong to no frame still waiting and are dropped.
The element takes (pushes here) only results up to the frame's running time and leaves a
later one queued on its pad (``head``): GstAggregator calls its aggregate function only while
every pad holds a buffer, so the later result must stay there to let the next frames go.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from torchstream.results.data import FrameResults, Region, Segmentation


@dataclass
class _Stream:
    pending: deque = field(default_factory=deque)  # (running_time, item), in order
    eos: bool = False
    head: int | None = None  # running time of the result still queued upstream, if any


class ResultsMatcher:
    """Per-stream queues of (running time, results), and the decision for one frame."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.dropped = 0  # results that matched no frame (a running time no frame had)

    def add_stream(self, key: str) -> None:
        self.streams.setdefault(key, _Stream())

    def remove_stream(self, key: str) -> None:
        self.streams.pop(key, None)

    def push(self, key: str, running_time: int, item) -> None:
        self.add_stream(key)
        self.streams[key].pending.append((running_time, item))

    def set_state(self, key: str, eos: bool, head: int | None) -> None:
        """Whether stream ``key`` ended, and the running time of the result it has queued
        but not pushed (None: none)."""
        self.add_stream(key)
        self.streams[key].eos = eos
        self.streams[key].head = head

    def clear(self) -> None:
        for stream in self.streams.values():
            stream.pending.clear()
            stream.eos = False
            stream.head = None

    def waiting_on(self, running_time: int) -> list[str]:
        """The streams that have not yet shown what they hold for ``running_time``."""
        waiting = []
        for key, stream in self.streams.items():
            self._drop_older(stream, running_time)
            if stream.pending or stream.eos or (
                    stream.head is not None and stream.head > running_time):
                continue
            waiting.append(key)
        return waiting

    def take(self, running_time: int | None) -> list:
        """The results for the frame at ``running_time``, removed from the queues (call when
        :meth:`waiting_on` is empty, or to release the frame anyway). A frame without a running
        time matches nothing."""
        if running_time is None:
            return []
        taken = []
        for stream in self.streams.values():
            self._drop_older(stream, running_time)
            while stream.pending and stream.pending[0][0] == running_time:
                taken.append(stream.pending.popleft()[1])
        return taken

    def _drop_older(self, stream: _Stream, running_time: int) -> None:
        while stream.pending and stream.pending[0][0] < running_time:
            stream.pending.popleft()
            self.dropped += 1


def _same_region(a: Region, b: Region) -> bool:
    return (a.region_id, a.label, a.label_id, a.x_min, a.y_min, a.x_max, a.y_max) == (
        b.region_id, b.label, b.label_id, b.x_min, b.y_min, b.x_max, b.y_max)


def merge_results(base: FrameResults, others: list[FrameResults]) -> FrameResults:
    """``base`` (what the frame carried) with every one of ``others`` added.

    Inference buffers keep the metadata of the frames they were made from, so a result often
    repeats what the frame already carried: a region equal to one already there (same id,
    label and box) is that region, and only gains the result's classifications of it. Other
    regions are appended, renumbered when their id is taken (parent ids of the same result
    follow). Frame-level classifications, and a class map, replace those of the same attribute
    (the frame's class map); model records are added once.
    """
    merged = FrameResults([_copy_region(r) for r in base.regions], list(base.classifications),
                          list(base.models), base.segmentation)
    for other in others:
        for c in other.classifications:
            merged.set_classification(c)
        if other.segmentation is not None:
            merged.segmentation = other.segmentation
        renumber: dict[int, int] = {}
        new: list[Region] = []
        for r in other.regions:
            known = merged.region(r.region_id)
            if known is not None and _same_region(known, r):
                for c in r.classifications:
                    known.set_classification(c)
                continue
            new.append(r)
        taken = {r.region_id for r in merged.regions}
        next_id = max(taken | {r.region_id for r in new}, default=-1) + 1
        for r in new:
            if r.region_id in taken:
                renumber[r.region_id] = next_id
                next_id += 1
            taken.add(renumber.get(r.region_id, r.region_id))
        for r in new:
            copy = _copy_region(r)
            copy.region_id = renumber.get(r.region_id, r.region_id)
            if copy.parent_id is not None:
                copy.parent_id = renumber.get(copy.parent_id, copy.parent_id)
            merged.regions.append(copy)
        for m in other.models:
            merged.add_model(m)
    return merged


def _copy_region(r: Region) -> Region:
    return replace(r, classifications=list(r.classifications))


# --- repeating the last results on frames the inference branch skipped ----------------------

MATCH_IOU = 0.5


def iou(a: Region, b: Region) -> float:
    """Intersection over union of two normalised boxes."""
    w = min(a.x_max, b.x_max) - max(a.x_min, b.x_min)
    h = min(a.y_max, b.y_max) - max(a.y_min, b.y_min)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = ((a.x_max - a.x_min) * (a.y_max - a.y_min)
             + (b.x_max - b.x_min) * (b.y_max - b.y_min) - inter)
    return inter / union if union > 0 else 0.0


@dataclass
class Contribution:
    """What one result added to the frame it was made from: new regions (a detector's), and
    classifications of regions the frame already had (a region classifier's), with the boxes
    they were attached to. Repeated on later frames with :func:`repeat_contribution`."""

    classifications: list = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    classified: list[Region] = field(default_factory=list)
    segmentation: Segmentation | None = None


def contribution(base: FrameResults, result: FrameResults) -> Contribution:
    added = Contribution(list(result.classifications))
    if result.segmentation is not None and result.segmentation != base.segmentation:
        added.segmentation = result.segmentation
    for r in result.regions:
        known = base.region(r.region_id)
        if known is not None and _same_region(known, r):
            old = {c.attribute for c in known.classifications}
            new = [c for c in r.classifications if c.attribute not in old]
            if new:
                added.classified.append(Region(r.x_min, r.y_min, r.x_max, r.y_max, r.label,
                                               r.label_id, r.confidence, r.region_id,
                                               r.parent_id, new, r.object_id))
        else:
            added.regions.append(_copy_region(r))
    return added


def repeat_contribution(base: FrameResults, added: Contribution) -> FrameResults:
    """``base`` with ``added`` (made on an earlier frame) repeated: frame classifications and
    new regions as they were; a region classification goes to the frame's region of the same
    object id (``object_track``), else to its region of the same label that overlaps the
    classified box most (IoU >= 0.5), if any: the same object, moved a little since."""
    repeated = FrameResults([], list(added.classifications), [], added.segmentation)
    repeated.regions = [_copy_region(r) for r in added.regions]
    merged = merge_results(base, [repeated])
    for old in added.classified:
        best, best_iou = None, MATCH_IOU
        if old.object_id is not None:
            best = next((r for r in merged.regions if r.object_id == old.object_id), None)
        for r in merged.regions if best is None else ():
            overlap = iou(r, old)
            if r.label == old.label and overlap >= best_iou:
                best, best_iou = r, overlap
        if best is not None:
            for c in old.classifications:
                best.set_classification(c)
    return merged
