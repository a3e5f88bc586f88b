"""What the service takes from a stream's frames as they leave it: objects counted per label,
the frame-to-result latency, the live preview (drawn and JPEG-encoded only while someone
watches, at most ``preview-fps`` a second, away from the streaming thread) and result
records for event subscribers (made only while one listens)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass

import cv2

from torchstream.gst import Gst, GstVideo
from torchstream.gst.meta import read_results
from torchstream.results.data import FrameResults
from torchstream.results.overlay import draw_results, frame_to_bgr
from torchstream.results.publish import dlstreamer_record, frame_record

WATCH_SECONDS = 2.0  # a viewer's request keeps the preview made this long
JPEG_QUALITY = 80
EVENT_QUEUE = 256  # records a slow subscriber may fall behind by before records are dropped


@dataclass
class _Frame:
    """A frame copied out of its buffer for the preview worker."""

    data: bytearray
    fmt: str
    width: int
    height: int
    offsets: list[int]
    strides: list[int]
    results: FrameResults


class Preview:
    """The latest annotated JPEG of a stream, made while someone watches."""

    def __init__(self, name: str, fps: float, executor: Executor) -> None:
        self.name = name
        self.interval = 1.0 / fps if fps > 0 else float("inf")
        self.executor = executor
        self.jpeg: bytes | None = None
        self.sequence = 0  # counts the JPEGs made
        self.error = ""  # why no preview can be made of this stream ('' if it can)
        self._watch_until = 0.0
        self._last = 0.0
        self._busy = False
        self._cond = threading.Condition()

    def watch(self) -> None:
        self._watch_until = max(self._watch_until, time.monotonic() + WATCH_SECONDS)

    def wanted(self, now: float) -> bool:
        return now < self._watch_until and not self._busy and now - self._last >= self.interval

    def take(self, frame: _Frame, now: float) -> None:
        self._busy, self._last = True, now
        self.executor.submit(self._make, frame)

    def _make(self, frame: _Frame) -> None:
        try:
            image = frame_to_bgr(frame.data, frame.fmt, frame.width, frame.height,
                                 frame.offsets, frame.strides)
            draw_results(image, frame.results)
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            error = "" if ok else "the JPEG encoder failed"
        except Exception as exc:  # noqa: BLE001 - said on the API instead of the frame
            ok, error = False, f"cannot show this stream's frames: {exc}"
        with self._cond:
            if ok:
                self.jpeg, self.sequence = encoded.tobytes(), self.sequence + 1
            elif error != self.error:  # said once in the log, and on every request
                print(f"torchstream: {self.name}: no preview: {error}", file=sys.stderr,
                      flush=True)
            self.error = error
            self._busy = False
            self._cond.notify_all()

    def after(self, sequence: int) -> tuple[int, bytes] | None:
        """The newest JPEG if it is newer than ``sequence`` (None otherwise)."""
        with self._cond:
            if self.sequence > sequence and self.jpeg is not None:
                return self.sequence, self.jpeg
        return None


class Subscriber:
    """One event-stream client: records handed over to its event loop; when it falls
    ``EVENT_QUEUE`` records behind, newer ones are dropped and counted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict] = asyncio.Queue(EVENT_QUEUE)
        self.dropped = 0

    def offer(self, record: dict) -> None:
        def put() -> None:
            try:
                self.queue.put_nowait(record)
            except asyncio.QueueFull:
                self.dropped += 1
        try:
            self.loop.call_soon_threadsafe(put)
        except RuntimeError:  # the client's loop has closed
            pass


class StreamTap:
    """The service's observer of one stream (``StreamRunner``'s ``observer``)."""

    def __init__(self, name: str, record_format: str, preview: Preview, metrics) -> None:
        self.name = name
        self.record_format = record_format
        self.preview = preview
        self.metrics = metrics  # ServiceMetrics
        self.objects: Counter[str] = Counter()
        self.subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._caps: Gst.Caps | None = None
        self._info: GstVideo.VideoInfo | None = None

    def object_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.objects)

    def frame_out(self, buf: Gst.Buffer, pad: Gst.Pad, number: int,
                  latency: float | None) -> None:
        if latency is not None:
            self.metrics.observe_latency(self.name, latency)
        results = read_results(buf)
        if results.regions:
            with self._lock:
                self.objects.update(r.label for r in results.regions)
        now = time.monotonic()
        subscribers = tuple(self.subscribers)
        if not subscribers and not self.preview.wanted(now):
            return
        info = self._video_info(pad)
        if subscribers:
            width, height = (info.width, info.height) if info else (None, None)
            duration = None if buf.duration == Gst.CLOCK_TIME_NONE else buf.duration
            pts = None if buf.pts == Gst.CLOCK_TIME_NONE else buf.pts
            record = dlstreamer_record(results, pts, width, height) \
                if self.record_format == "dlstreamer" else \
                frame_record(results, number, pts, duration, width, height)
            for subscriber in subscribers:
                subscriber.offer(record)
        if self.preview.wanted(now):
            if info is None:
                if not self.preview.error:
                    self.preview.error = "the stream's output is not raw video"
                    print(f"torchstream: {self.name}: no preview: {self.preview.error}",
                          file=sys.stderr, flush=True)
                return
            offsets, strides = list(info.offset), list(info.stride)
            meta = GstVideo.buffer_get_video_meta(buf)
            if meta is not None:
                offsets, strides = list(meta.offset), list(meta.stride)
            data = bytearray(buf.extract_dup(0, buf.get_size()))
            self.preview.take(_Frame(data, info.finfo.name, info.width, info.height,
                                     offsets, strides, results), now)

    def _video_info(self, pad: Gst.Pad) -> GstVideo.VideoInfo | None:
        caps = pad.get_current_caps()
        if caps is None or self._caps is None or not caps.is_equal(self._caps):
            self._caps = caps
            self._info = None
            if caps is not None and caps.get_structure(0).get_name() == "video/x-raw":
                self._info = GstVideo.VideoInfo.new_from_caps(caps)
        return self._info
