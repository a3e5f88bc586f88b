"""Running a list of streams (``torchstream run``): each stream's pipeline in a thread of its
own, restarted per the ``[run]`` policy; per-stream state on stderr and in a status file;
SIGINT/SIGTERM sends every stream EOS, so each writes out what it holds and closes its files.

A stream's frames are counted where they leave its most downstream torchstream element. A
file stream that is restarted (after a failure, or in a new process when its Ray actor died)
resumes after the last record its ``jsonl`` file holds (or, with MQTT only, the last one this
process published): frames up to that PTS are decoded again but dropped before the first
torchstream element, so every frame is published once and in order.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Protocol

from torchstream.gst import GLib, Gst
from torchstream.gst.pipeline import PipelineResult, run_to_end
from torchstream.streams.config import (
    MAX_RESTART_DELAY,
    ResumePoint,
    RunSettings,
    StreamSpec,
    resume_point,
)


@dataclass
class StreamStatus:
    name: str
    state: str = "starting"
    frames: int = 0  # frames out over every run of the stream (a resumed run: the records
    # its file holds, then its own)
    runs: int = 0
    restarts: int = 0
    last_pts: int | None = None  # ns, of the last frame out
    resumed_after: int | None = None  # the PTS the latest run resumed after (a file stream)
    skipped: int = 0  # frames dropped by resumed runs: published before
    live: bool | None = None
    error: str = ""  # the latest failure
    first_frame_time: float | None = None  # wall clock, for fps across processes
    last_frame_time: float | None = None
    fps: float = 0.0  # since the previous snapshot
    latency: float | None = None  # s from the last frame's entry into the first torchstream
    # element to its exit from the last
    inference_skipped: int = 0  # frames let through without inference (the live frame
    # policy of the inference elements), over every run
    pid: int = 0
    # the latest state changes of this process's runs, in order, numbered by ``event``: a
    # change that lasts less than one status interval (a restart's delay) still reaches the log
    events: list[dict] = field(default_factory=list)


class FrameObserver(Protocol):
    """Told of every frame a stream lets out (in the streaming thread: return quickly)."""

    def frame_out(self, buf: Gst.Buffer, pad: Gst.Pad, number: int,
                  latency: float | None) -> None:
        """``number``: the frame's record number; ``latency``: seconds through the stream."""


class _Either:
    """Set when either event is (what run_to_end asks of its ``stop``)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


KEPT_EVENTS = 50


class StreamRunner:
    """One stream: its runs, one after the other, until it finishes, fails or is stopped."""

    def __init__(self, spec: StreamSpec, settings: RunSettings, stop: threading.Event,
                 resume_first: bool = False, observer: FrameObserver | None = None,
                 count_resumed: bool = False) -> None:
        self.spec = spec
        self.settings = settings
        self.stop = stop
        self.resume_first = resume_first  # the first run carries on an earlier process's
        self.observer = observer
        # a resumed first run counts the records its file holds as frames out (the service;
        # Ray's supervisor adds the earlier process's count itself)
        self.count_resumed = count_resumed
        self._new_pass = False  # the next run is a looped file's next pass
        self._run_numbers = (0, 0)  # the current run's first record number, frames before it
        self.status = StreamStatus(spec.name, pid=os.getpid())
        self._lock = threading.Lock()
        self._sampled = (time.monotonic(), 0)
        self._restart = threading.Event()  # ends the current run; the next starts at once
        self._entered: dict[int, float] = {}  # PTS -> when it entered the first element
        self._awaiting_frame = False  # a camera is shown running once its first frame is out
        self._skip_counters: list[Gst.Element] = []  # the run's elements that skip inference
        self._skipped_before = 0  # inference-skipped of the earlier runs
        self.pipeline: Gst.Pipeline | None = None  # the current run's

    def snapshot(self) -> dict:
        with self._lock:
            now, frames = time.monotonic(), self.status.frames
            then, before = self._sampled
            if now - then > 0.2:
                self.status.fps = (frames - before) / (now - then)
                self._sampled = (now, frames)
            self.status.inference_skipped = self._skipped_before + self._skipped_now()
            return asdict(self.status)

    def _skipped_now(self) -> int:
        return sum(e.get_property("inference-skipped") for e in self._skip_counters)

    def request_restart(self) -> None:
        """End the current run through EOS and start the next at once."""
        self._restart.set()

    def run(self) -> dict:
        delay = self.settings.restart_delay
        policy = self.spec.restart or self.settings.restart
        while True:
            frames_before = self.status.frames
            result, permanent = self._run_once()
            with self._lock:
                if result.error:
                    self.status.error = result.error
            if self.stop.is_set():
                self._set_state("stopped")
                break
            if self._restart.is_set():
                self._restart.clear()
                with self._lock:
                    self.status.restarts += 1
                    self._change_state("restarting", requested=True)
                continue
            if result.ok and self.spec.loop:
                self._new_pass = True  # the file again from its start; the frames count on
                continue
            if self.spec.is_camera and not permanent and policy != "never":
                # a camera that failed or ended is gone for a while, not for good
                if self.status.frames > frames_before:
                    delay = self.settings.restart_delay  # it was back: start the wait over
                self._set_state("reconnecting")
                if self.stop.wait(delay):
                    self._set_state("stopped")
                    break
                delay = min(delay * 2, self.settings.reconnect_max_delay)
                with self._lock:
                    self.status.restarts += 1
                continue
            if result.ok and not (self.status.live and policy == "always"):
                self._set_state("finished")
                break
            if permanent or policy == "never" \
                    or self.status.restarts >= self.settings.max_restarts:
                self._set_state("failed" if not result.ok else "finished")
                break
            self._set_state("restarting")
            if self.stop.wait(delay):
                self._set_state("stopped")
                break
            delay = min(delay * 2, MAX_RESTART_DELAY)
            with self._lock:
                self.status.restarts += 1
        return self.snapshot()

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._change_state(state)

    def _change_state(self, state: str, requested: bool = False) -> None:
        """With the lock held; ``requested``: a restart asked for, not a failure."""
        status = self.status
        status.state = state
        number = status.events[-1]["event"] + 1 if status.events else 1
        if len(status.events) >= KEPT_EVENTS:  # a long-lived stream keeps its latest
            del status.events[0]
        status.events.append({"event": number, "state": state, "runs": status.runs,
                              "restarts": status.restarts,
                              "error": status.error, "resumed_after": status.resumed_after,
                              "frames": status.frames, "requested": requested})

    def _run_once(self) -> tuple[PipelineResult, bool]:
        """One run of the pipeline; ``permanent``: it could not be built, a restart won't
        help."""
        again = self.status.runs > 0 or self.resume_first
        point, first_frame = None, 0
        if self._new_pass:  # a looped file from its start: nothing to resume, numbers go on
            self._new_pass = False
            first_frame = self._run_numbers[0] + self.status.frames - self._run_numbers[1]
        elif again:
            if self.spec.jsonl:
                point = resume_point(self.spec.jsonl, self.spec.format)
            elif self.status.last_pts is not None:
                point = ResumePoint(self.status.last_pts, self.status.frames)
            first_frame = point.records if point else self.status.frames
        # a file is read again from its start; a live source carries on where it is
        resume = point.pts if point is not None and self.spec.file_path is not None else None
        try:
            pipeline = Gst.parse_launch(self.spec.description(again, first_frame))
        except GLib.Error as exc:
            return PipelineResult(ok=False, error=f"could not build the pipeline: "
                                                  f"{exc.message}"), True
        first, last = torchstream_ends(pipeline)
        if first is None:
            return PipelineResult(ok=False, error="the pipeline holds no torchstream "
                                                  "element"), True
        with self._lock:
            if point is not None and self.spec.jsonl \
                    and (self.status.runs > 0 or self.count_resumed):
                # the file holds what the failed run published: a frame written there while
                # the failing pipeline flushed never reached the count
                self.status.frames = point.records
            self._run_numbers = (first_frame, self.status.frames)
            self.status.runs += 1
            self.status.resumed_after = resume
            self._awaiting_frame = self.spec.is_camera
            if not self._awaiting_frame and self.status.state != "running":  # (a loop's
                self._change_state("running")  # next pass is no change)
            self._skipped_before += self._skipped_now()
            self._skip_counters = skip_counters(pipeline)
        for pad in first.sinkpads:
            if resume is not None:
                pad.add_probe(Gst.PadProbeType.BUFFER, self._drop_published, resume)
            pad.add_probe(Gst.PadProbeType.BUFFER, self._on_frame_in)
        for pad in last.srcpads:
            pad.add_probe(Gst.PadProbeType.BUFFER, self._on_frame_out)
        self.pipeline = pipeline
        try:
            return run_to_end(pipeline, tick=self._watchdog(first),
                              stop=_Either(self.stop, self._restart),
                              drain_timeout=self.settings.stop_timeout), False
        finally:
            self.pipeline = None
            self._entered.clear()

    def _drop_published(self, _pad, info, resume: int):
        pts = info.get_buffer().pts
        if pts != Gst.CLOCK_TIME_NONE and pts <= resume:
            with self._lock:
                self.status.skipped += 1
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    def _on_frame_in(self, _pad, info):
        pts = info.get_buffer().pts
        if pts != Gst.CLOCK_TIME_NONE:
            if len(self._entered) > 1000:  # frames that never came out (dropped, re-stamped)
                self._entered.clear()
            self._entered[pts] = time.monotonic()
        return Gst.PadProbeReturn.OK

    def _on_frame_out(self, pad, info):
        buf = info.get_buffer()
        pts = buf.pts
        entered = self._entered.pop(pts, None)
        latency = time.monotonic() - entered if entered is not None else None
        with self._lock:
            s = self.status
            s.frames += 1
            number = s.frames - 1
            s.last_frame_time = time.time()
            if s.first_frame_time is None:
                s.first_frame_time = s.last_frame_time
            if pts != Gst.CLOCK_TIME_NONE:
                s.last_pts = pts
            if latency is not None:
                s.latency = round(latency, 6)
            if self._awaiting_frame:
                self._awaiting_frame = False
                self._change_state("running")
        if self.observer is not None:
            self.observer.frame_out(buf, pad, number, latency)
        return Gst.PadProbeReturn.OK

    def _watchdog(self, first: Gst.Element) -> Callable[[], str | None]:
        """A tick for run_to_end: finds out once whether the stream is live, and fails a run
        that has let no frame out for ``stall-timeout`` seconds.

        Liveness is asked upstream of the first torchstream element: a sink that does not
        sync (fakesink, appsink sync=false) answers "not live" for a live camera."""
        frames_at_start = self.status.frames
        moved = [time.monotonic(), frames_at_start]

        def tick() -> str | None:
            now = time.monotonic()
            frames = self.status.frames
            if frames != moved[1]:
                moved[:] = [now, frames]
                if self.status.live is None:
                    query = Gst.Query.new_latency()
                    if first.sinkpads and first.sinkpads[0].peer_query(query):
                        self.status.live = bool(query.parse_latency()[0])
            stall = self.settings.stall_timeout
            if stall and now - moved[0] > stall and not self.stop.is_set():
                return f"no frame came out for {stall:g} s"
            return None

        return tick


def skip_counters(pipeline: Gst.Bin) -> list[Gst.Element]:
    """The top-level elements that count frames let through without inference."""
    found = []
    it = pipeline.iterate_elements()
    while True:
        res, element = it.next()
        if res != Gst.IteratorResult.OK:
            break
        if element.find_property("inference-skipped") is not None:
            found.append(element)
    return found


def torchstream_ends(pipeline: Gst.Bin):
    """The most upstream and the most downstream top-level torchstream elements."""
    from torchstream.elements import ELEMENTS

    ours = []
    it = pipeline.iterate_sorted()  # sinks first
    while True:
        res, element = it.next()
        if res != Gst.IteratorResult.OK:
            break
        factory = element.get_factory()
        if factory is not None and factory.get_name() in ELEMENTS:
            ours.append(element)
    return (ours[-1], ours[0]) if ours else (None, None)


class Supervisor:
    """Reports the streams: a line whenever one changes state or fails, every
    ``status-interval`` one line of all of them on stderr, and the status file."""

    def __init__(self, settings: RunSettings, out=sys.stderr) -> None:
        self.settings = settings
        self.out = out
        self.start = time.monotonic()
        self._printed: dict[tuple[str, int], int] = {}  # events printed per stream and process
        self._last_state: dict[str, str] = {}
        self._lock = threading.Lock()  # the service's monitor and its removals both report

    def update(self, snapshots: Iterable[dict], final: bool = False) -> None:
        with self._lock:
            self._update(list(snapshots), final)

    def _update(self, snapshots: list[dict], final: bool) -> None:
        for snap in snapshots:
            name, process = snap["name"], (snap["name"], snap["pid"])
            events = snap.get("events", [])
            for event in events:
                if event["event"] > self._printed.get(process, 0):
                    self._event(name, event)
            if events:
                self._printed[process] = events[-1]["event"]
            if self._last_state.get(name) != snap["state"]:  # a state no event has told
                self._event(name, snap)
        elapsed = time.monotonic() - self.start
        line = " | ".join(f"{s['name']} {s['state']} {s['frames']} frames {s['fps']:.1f} fps"
                          for s in snapshots)
        print(f"[{elapsed:6.1f} s] {line}", file=self.out, flush=True)
        if self.settings.status_file:
            write_status(self.settings.status_file, snapshots, elapsed, final)

    def _event(self, name: str, snap: dict) -> None:
        state = snap["state"]
        self._last_state[name] = state
        text = {"restarting": "restarting on request" if snap.get("requested") else
                              f"failed: {snap['error']}; restart {snap['restarts'] + 1} of "
                              f"{self.settings.max_restarts} follows",
                "failed": f"failed: {snap['error']}; not restarted",
                "reconnecting": f"reconnecting (try {snap['restarts'] + 1}): "
                                f"{snap['error'] or 'the camera ended its stream'}",
                "running": f"running (run {snap['runs']}"
                           + (f", resumed after PTS {snap['resumed_after']} ns"
                              if snap["resumed_after"] is not None else "") + ")",
                "finished": f"finished: {snap['frames']} frames",
                "stopped": f"stopped: {snap['frames']} frames"}.get(state)
        if text:
            print(f"torchstream: {name}: {text}", file=self.out, flush=True)


def write_status(path: str, snapshots: list[dict], elapsed: float, final: bool) -> None:
    """The status file, replaced whole (a reader never sees half of it)."""
    body = {"time": time.time(), "elapsed": round(elapsed, 3), "final": final,
            "streams": snapshots}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=1)
    os.replace(temporary, path)


@contextmanager
def stop_on_signals(stop: threading.Event, out=sys.stderr):
    """SIGINT and SIGTERM set ``stop`` (a second one ends the process at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print(f"torchstream: {signal.Signals(signum).name}: stopping every stream (EOS)",
              file=out, flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_code(snapshots: list[dict]) -> int:
    return 1 if any(s["state"] == "failed" for s in snapshots) else 0


def run_streams(streams: Iterable[StreamSpec], settings: RunSettings,
                stop: threading.Event | None = None, out=sys.stderr) -> list[dict]:
    """Every stream in this process, each in its own thread; returns their final status."""
    stop = stop or threading.Event()
    return supervise([StreamRunner(spec, settings, stop) for spec in streams], settings, stop,
                     out)


def supervise(runners: list[StreamRunner], settings: RunSettings, stop: threading.Event,
              out=sys.stderr) -> list[dict]:
    from torchstream.elements import register_all

    register_all()
    threads = [threading.Thread(target=r.run, name=f"stream {r.spec.name}", daemon=True)
               for r in runners]
    supervisor = Supervisor(settings, out)
    with stop_on_signals(stop, out):
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            deadline = time.monotonic() + settings.status_interval
            while time.monotonic() < deadline and any(t.is_alive() for t in threads):
                time.sleep(0.05)
            supervisor.update(r.snapshot() for r in runners)
    final = [r.snapshot() for r in runners]
    supervisor.update(final, final=True)
    return final
