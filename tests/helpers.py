"""Test helpers: real pipelines fed with real frames, outputs collected from an appsink."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchstream.caps import config_from_fields
from torchstream.elements import register_all
from torchstream.gst import Gst
from torchstream.gst.buffers import MappedTensors
from torchstream.gst.meta import read_tensors_record
from torchstream.gst.pipeline import PipelineResult, run_to_end
from torchstream.results.data import TensorsRecord

register_all()

SITE = Path(__file__).resolve().parents[1] / ".venv" / "lib" / "python3.11" / "site-packages"


@dataclass
class Output:
    pts: int
    arrays: list[np.ndarray]
    caps: str
    record: TensorsRecord | None


@dataclass
class Run:
    result: PipelineResult
    outputs: list = field(default_factory=list)  # Output, or what ``receive`` made
    per_sink: dict[str, list] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.result.error


def buffer_arrays(buf: Gst.Buffer, caps: Gst.Caps) -> list[np.ndarray]:
    """Copies of a buffer's tensors (tensor caps) or of its raw bytes (anything else)."""
    s = caps.get_structure(0)
    if s.get_name() == "other/tensors":
        with MappedTensors(buf, config_from_fields(s)) as arrays:
            return [a.copy() for a in arrays]
    ok, info = buf.map(Gst.MapFlags.READ)
    try:
        return [np.frombuffer(info.data, np.uint8).copy()]
    finally:
        buf.unmap(info)


def on_samples(pipeline: Gst.Pipeline, name: str,
               receive: Callable[[Gst.Buffer, Gst.Caps], None],
               sync: bool | None = False) -> None:
    """Call ``receive(buffer, caps)`` for every buffer reaching the appsink ``name``
    (``sync``: the appsink's own, None leaves it as the description sets it)."""
    sink = pipeline.get_by_name(name)
    sink.set_property("emit-signals", True)
    if sync is not None:
        sink.set_property("sync", sync)

    def on_sample(appsink):
        sample = appsink.emit("pull-sample")
        receive(sample.get_buffer(), sample.get_caps())
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)


def tensor_output(buf: Gst.Buffer, caps: Gst.Caps) -> Output:
    return Output(buf.pts, buffer_arrays(buf, caps), caps.to_string(), read_tensors_record(buf))


def run_pipeline(description: str, frames: list[np.ndarray] | None = None, fmt: str = "RGB",
                 timeout: float = 60, fps: int = 25, sinks: tuple[str, ...] = ("sink",),
                 receive: Callable[[Gst.Buffer, Gst.Caps], Any] = tensor_output,
                 setup: Callable[[Gst.Pipeline], None] | None = None) -> Run:
    """The one test harness: run ``description`` (which names appsinks ``sinks`` and, with
    frames, an appsrc "src" that plays them) to its end; each sink's buffers become
    ``receive(buffer, caps)`` items, in ``run.per_sink`` (``run.outputs``: the first sink's).
    ``setup`` gets the pipeline before it starts."""
    pipeline = Gst.parse_launch(description)
    run = Run(PipelineResult(ok=False))
    for name in sinks:
        items: list = []
        run.per_sink[name] = items
        on_samples(pipeline, name, lambda buf, caps, items=items: items.append(
            receive(buf, caps)))
    if setup is not None:
        setup(pipeline)
    if frames is not None:
        feed_frames(pipeline.get_by_name("src"), frames, fmt, fps)
    run.result = run_to_end(pipeline, timeout)
    run.outputs = run.per_sink[sinks[0]]
    return run


def feed_frames(src, frames: list[np.ndarray], fmt: str = "RGB", fps: int = 25) -> None:
    """Make the appsrc ``src`` play ``frames`` (numpy HxWxC) at ``fps``, then end the stream."""
    h, w = frames[0].shape[:2]
    src.set_property("caps", Gst.Caps.from_string(
        f"video/x-raw,format={fmt},width={w},height={h},framerate={fps}/1"))
    src.set_property("format", Gst.Format.TIME)
    src.set_property("max-buffers", 4)
    src.set_property("block", False)
    feed = iter(enumerate(frames))

    def need_data(appsrc, _length):
        try:
            i, frame = next(feed)
        except StopIteration:
            appsrc.emit("end-of-stream")
            return
        buf = Gst.Buffer.new_wrapped(_padded_rows(frame))
        buf.pts = i * Gst.SECOND // fps
        buf.duration = Gst.SECOND // fps
        appsrc.emit("push-buffer", buf)

    src.connect("need-data", need_data)


def _padded_rows(frame: np.ndarray) -> bytes:
    """Packed frame bytes with GStreamer's default row stride (rows padded to 4 bytes)."""
    h = frame.shape[0]
    row = frame.reshape(h, -1)
    stride = (row.shape[1] + 3) // 4 * 4
    if stride == row.shape[1]:
        return np.ascontiguousarray(row).tobytes()
    padded = np.zeros((h, stride), np.uint8)
    padded[:, : row.shape[1]] = row
    return padded.tobytes()


def decode_frames(path: Path, count: int, start: int = 0, fmt: str = "RGB") -> list[np.ndarray]:
    """The frames ``start``..``start+count-1`` of a video, decoded by GStreamer."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format={fmt} ! '
        "appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    frames: list[np.ndarray] = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        index = 0
        while len(frames) < count:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            if index >= start:
                s = sample.get_caps().get_structure(0)
                w, h = s.get_value("width"), s.get_value("height")
                buf = sample.get_buffer()
                ok, info = buf.map(Gst.MapFlags.READ)
                channels = 3 if fmt in ("RGB", "BGR") else 4
                stride = (w * channels + 3) // 4 * 4
                raw = np.frombuffer(info.data, np.uint8)
                rows = np.lib.stride_tricks.as_strided(raw, (h, w * channels), (stride, 1))
                frames.append(rows.reshape(h, w, channels).copy())
                buf.unmap(info)
            index += 1
    finally:
        pipeline.set_state(Gst.State.NULL)
    return frames


def region_pixels(region, frame: np.ndarray) -> np.ndarray:
    """A region's box (normalised) in pixels of ``frame``: x1, y1, x2, y2."""
    h, w = frame.shape[:2]
    return np.array([region.x_min * w, region.y_min * h, region.x_max * w, region.y_max * h])


def box_iou(a, b) -> float:
    """IoU of two x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def steady_growth_mb(step, rounds: int = 3) -> float:
    """The least that one call of step grows resident memory, over a few calls after a warm-up.

    A leak grows memory on every call; the allocator growing its arenas, or another thread of
    the test process allocating meanwhile, shows up in one call and not the next, so the least
    growth is the leak's and the noise's is not.
    """
    step()
    grown = []
    for _ in range(rounds):
        before = resident_mb()
        step()
        grown.append(resident_mb() - before)
    return min(grown)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1):
    """Poll ``condition`` until it gives a true value, and return that value; an
    AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
