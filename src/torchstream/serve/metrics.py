"""The service's Prometheus metrics. Stream figures are read from the streams' status at
each scrape (so ``torchstream_frames_total`` is the status's ``frames``, and so on);
forward-pass times and frame latencies are histograms observed as they happen; the process
and platform collectors come with them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from torchstream.model.timing import add_listener, remove_listener

PASS_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)

# the stream figures: (metric, status key or None for the state, kind, help)
_STREAM_FIGURES = (
    ("torchstream_frames", "frames", "counter", "Frames out of the stream, over all its runs"),
    ("torchstream_stream_fps", "fps", "gauge", "Frames a second out of the stream, lately"),
    ("torchstream_stream_up", None, "gauge", "1 while the stream runs, else 0 (starting, "
     "reconnecting, restarting, finished, failed, stopped)"),
    ("torchstream_stream_restarts", "restarts", "counter", "Restarts and reconnections"),
    ("torchstream_frames_skipped", "inference_skipped", "counter",
     "Frames let through without inference by the live frame policy (newest-frame)"),
    ("torchstream_stream_runs", "runs", "counter", "Runs of the stream's pipeline"),
)


class _StreamCollector:
    def __init__(self, statuses: Callable[[], Iterable[dict]],
                 objects: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.statuses = statuses
        self.objects = objects

    def collect(self):
        statuses = list(self.statuses())
        for metric, key, kind, text in _STREAM_FIGURES:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                metric, text, labels=["stream"])
            for status in statuses:
                value = (status["state"] == "running") if key is None else status[key]
                family.add_metric([status["name"]], float(value))
            yield family
        objects = CounterMetricFamily("torchstream_objects", "Regions out of the stream, per "
                                      "label", labels=["stream", "label"])
        for stream, counts in self.objects().items():
            for label, count in sorted(counts.items()):
                objects.add_metric([stream, label], float(count))
        yield objects


class ServiceMetrics:
    """One registry per service (two services in one process keep their figures apart)."""

    def __init__(self, statuses: Callable[[], Iterable[dict]],
                 objects: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_StreamCollector(statuses, objects))
        self.passes = Histogram("torchstream_inference_seconds", "Forward-pass time per model "
                                "instance (a batch's pass counts once)", ["model"],
                                buckets=PASS_BUCKETS, registry=self.registry)
        self.latency = Histogram("torchstream_latency_seconds", "Time from a frame's entry "
                                 "into the stream's first torchstream element to its exit "
                                 "from the last", ["stream"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        add_listener(self._on_pass)

    def _on_pass(self, model: str, seconds: float, _frames: int) -> None:
        self.passes.labels(model).observe(seconds)

    def observe_latency(self, stream: str, seconds: float) -> None:
        self.latency.labels(stream).observe(seconds)

    def forget(self, stream: str) -> None:
        """A removed stream's latency series goes with it."""
        try:
            self.latency.remove(stream)
        except KeyError:
            pass

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        remove_listener(self._on_pass)
