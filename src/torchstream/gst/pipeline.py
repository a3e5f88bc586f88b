"""Running a pipeline to its end: one bus loop for the CLI, the tests and the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torchstream.gst import Gst


@dataclass
class PipelineResult:
    ok: bool
    error: str | None = None  # "element-path: message"
    debug: str | None = None
    timed_out: bool = False
    stopped: bool = False  # ``stop`` was set: EOS was sent to the sources
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # "element-path: message"
    infos: list[str] = field(default_factory=list)  # e.g. the engine each model runs with


_WATCHED = (Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.WARNING
            | Gst.MessageType.INFO | Gst.MessageType.LATENCY)


def run_to_end(pipeline: Gst.Pipeline, timeout: float | None = None,
               tick: Callable[[], str | None] | None = None,
               on_note: Callable[[str, str], None] | None = None,
               stop: threading.Event | None = None,
               drain_timeout: float = 10.0) -> PipelineResult:
    """PLAYING until EOS, an ERROR or ``timeout``; always leaves the pipeline in NULL.
    A LATENCY message makes the pipeline distribute its latency again. WARNING and INFO
    messages are collected, and passed to ``on_note(kind, text)`` as they come. ``tick``
    runs every 50 ms; a text it returns ends the run as that error (a watchdog). Once
    ``stop`` is set the sources are sent EOS, so that every element writes out what it
    holds, and the run ends at that EOS (or as an error after ``drain_timeout``)."""
    bus = pipeline.get_bus()
    start = time.monotonic()
    deadline = start + timeout if timeout else None
    result = PipelineResult(ok=False)
    try:
        pipeline.set_state(Gst.State.PLAYING)
        while True:
            msg = bus.timed_pop_filtered(50 * Gst.MSECOND, _WATCHED)
            if stop is not None and stop.is_set() and not result.stopped:
                result.stopped = True
                pipeline.send_event(Gst.Event.new_eos())
                drain_end = time.monotonic() + drain_timeout
                deadline = drain_end if deadline is None else min(deadline, drain_end)
            failure = tick() if tick is not None else None
            if failure:
                result.error = failure
                break
            if msg is not None and msg.type == Gst.MessageType.LATENCY:
                pipeline.recalculate_latency()  # an element's latency changed (as gst-launch)
            elif msg is not None and msg.type in (Gst.MessageType.WARNING,
                                                  Gst.MessageType.INFO):
                err, _ = msg.parse_warning() if msg.type == Gst.MessageType.WARNING \
                    else msg.parse_info()
                warning = msg.type == Gst.MessageType.WARNING
                text = f"{msg.src.get_path_string()}: {err.message}"
                (result.warnings if warning else result.infos).append(text)
                if on_note is not None:
                    on_note("WARNING" if warning else "INFO", text)
            elif msg is not None:
                if msg.type == Gst.MessageType.ERROR:
                    err, debug = msg.parse_error()
                    result.error = f"{msg.src.get_path_string()}: {err.message}"
                    result.debug = debug
                else:
                    result.ok = True
                break
            if deadline is not None and time.monotonic() > deadline:
                result.timed_out = True
                result.error = (f"did not drain within {drain_timeout} s of EOS"
                                if result.stopped else f"timed out after {timeout} s")
                break
    finally:
        pipeline.set_state(Gst.State.NULL)
        result.seconds = time.monotonic() - start
    return result
