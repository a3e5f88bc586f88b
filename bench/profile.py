"""Where a pipeline's milliseconds go: pad probes on every element, and CPU per thread.

Per element: a buffer probe on every sink and src pad (ghost pads excluded) records
(pad, pts, time). An element's time for a frame is from the last of its sink pads receiving
that pts to the first of its src pads pushing it. For an element that works in its pad's
chain function (the torchstream elements, videoconvert, videoscale, tee) that is its own
work, excluding what downstream does with the pushed buffer; for a queue or an aggregator it
is the time the frame waited there; for a decoder it is its latency (frame reordering, frame
threads), not its CPU. The per-thread CPU (/proc/self/task/*/stat, sampled every 50 ms)
completes the picture: it is real CPU, and GStreamer names its streaming threads after the
pad that drives them (``queue0:src``).

The probes are Python callbacks (a few microseconds each, ~30 pads): the profile is a separate
run whose fps is not used in the tables.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

from bench.measure import CLOCK_TICK_S, thread_cpu_ticks
from torchstream.gst import Gst

_NONE = Gst.CLOCK_TIME_NONE


def _short_path(element: Gst.Element) -> str:
    names = []
    node = element
    while node is not None and not isinstance(node, Gst.Pipeline):
        names.append(node.get_name())
        node = node.get_parent()
    return "/".join(reversed(names))


class PipelineProfile:
    """Pad-probe timestamps and thread CPU of one pipeline run."""

    def __init__(self) -> None:
        self.pads: list[tuple[str, str, str]] = []  # (element path, factory, "sink"|"src")
        self.records: list[tuple[int, int, int]] = []  # (pad index, pts, ns)
        self.start_ns = 0
        self.cpu_start: dict[int, tuple[str, int]] = {}
        self.cpu_last: dict[int, tuple[str, int]] = {}

    def attach(self, pipeline: Gst.Pipeline) -> None:
        it = pipeline.iterate_recurse()
        while True:
            res, element = it.next()
            if res != Gst.IteratorResult.OK:
                break
            if isinstance(element, Gst.Bin):
                continue
            factory = element.get_factory()
            kind = factory.get_name() if factory is not None else type(element).__name__
            path = _short_path(element)
            for pad in element.pads:
                if isinstance(pad, Gst.GhostPad):
                    continue
                direction = "sink" if pad.get_direction() == Gst.PadDirection.SINK else "src"
                index = len(self.pads)
                self.pads.append((path, kind, direction))
                pad.add_probe(Gst.PadProbeType.BUFFER, self._probe(index))

    def _probe(self, index: int):
        records = self.records
        clock = time.perf_counter_ns

        def on_buffer(_pad, info):
            pts = info.get_buffer().pts
            if pts != _NONE:
                records.append((index, pts, clock()))
            return Gst.PadProbeReturn.OK

        return on_buffer

    def start(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.cpu_start = thread_cpu_ticks()
        self.cpu_last = dict(self.cpu_start)

    def sample(self) -> None:
        """Called from the bus loop every 50 ms: the latest CPU figure of each thread."""
        self.cpu_last.update(thread_cpu_ticks())

    def element_rows(self) -> list[dict]:
        """Per element, in stream order: frames matched, median and mean ms per frame."""
        first: dict[int, dict[int, int]] = defaultdict(dict)
        for index, pts, ns in self.records:
            if ns >= self.start_ns:
                first[index].setdefault(pts, ns)
        by_element: dict[str, dict] = {}
        for index, (path, kind, direction) in enumerate(self.pads):
            entry = by_element.setdefault(path, {"kind": kind, "sink": [], "src": []})
            entry[direction].append(first.get(index, {}))
        rows = []
        for path, entry in by_element.items():
            if not entry["sink"] or not entry["src"]:
                continue
            common = set.intersection(*(set(d) for d in entry["sink"] + entry["src"]))
            spans, arrivals = [], {}
            for pts in common:
                arrived = max(d[pts] for d in entry["sink"])
                left = min(d[pts] for d in entry["src"])
                if left >= arrived:
                    spans.append((left - arrived) / 1e6)
                    arrivals[pts] = arrived
            if spans:
                rows.append(({"element": path, "kind": entry["kind"], "frames": len(spans),
                              "median_ms": statistics.median(spans),
                              "mean_ms": statistics.fmean(spans)}, arrivals))
        # stream order: when each element first saw the frames that every element saw
        shared = set.intersection(*(set(a) for _, a in rows)) if rows else set()
        def order(item: tuple[dict, dict[int, int]]) -> float:
            arrivals = item[1]
            keys = shared or arrivals.keys()
            return statistics.fmean(arrivals[k] for k in keys if k in arrivals)
        return [row for row, _ in sorted(rows, key=order)]

    def thread_rows(self, frames: int) -> list[dict]:
        """CPU ms per frame by thread name, largest first (threads under 1% of it left out)."""
        per_name: dict[str, float] = defaultdict(float)
        for tid, (name, ticks) in self.cpu_last.items():
            before = self.cpu_start.get(tid, (name, 0))[1]
            per_name[name] += (ticks - before) * CLOCK_TICK_S * 1000 / frames
        total = sum(per_name.values()) or 1.0
        rows = [{"thread": name, "cpu_ms_per_frame": ms} for name, ms in per_name.items()
                if ms / total >= 0.01]
        rows.sort(key=lambda row: -row["cpu_ms_per_frame"])
        return rows
