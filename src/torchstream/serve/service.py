"""The streams of a running service: each in its own thread (``StreamRunner``, as ``torchstream
run``), added, removed and restarted one at a time without disturbing the others; the list
saved whole to the state file after every change, so a restarted service brings it back."""

from __future__ import annotations

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from torchstream.errors import ConfigError
from torchstream.gst import GLib, Gst
from torchstream.props import launch_element
from torchstream.serve.metrics import ServiceMetrics
from torchstream.serve.policy import Refusal
from torchstream.serve.taps import Preview, StreamTap
from torchstream.streams.config import (
    RunSettings,
    StreamSpec,
    instance_key,
    stream_spec,
    with_properties,
)
from torchstream.streams.runner import StreamRunner, Supervisor

STATE_VERSION = 1
NOT_READY = ("starting", "reconnecting", "restarting", "failed")  # a stream that should run


@dataclass
class _Entry:
    spec: StreamSpec
    runner: StreamRunner
    thread: threading.Thread
    stop: threading.Event
    tap: StreamTap


class StreamService:
    def __init__(self, settings: RunSettings, state_file: Path | None = None,
                 preview_fps: float = 5.0, out=sys.stderr) -> None:
        self.settings = settings
        self.state_file = state_file
        self.preview_fps = preview_fps
        self.closing = threading.Event()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._previews = ThreadPoolExecutor(2, thread_name_prefix="preview")
        self.metrics = ServiceMetrics(self.statuses, self.object_counts)
        self._supervisor = Supervisor(settings, out)
        self._monitor = threading.Thread(target=self._report, name="status", daemon=True)

    # -- the streams ----------------------------------------------------------------------

    def start(self, specs: list[StreamSpec], resume: bool = False) -> None:
        """The first streams (a streams file's, or the state file's with ``resume``: file
        streams carry on after their last record)."""
        from torchstream.elements import register_all

        register_all()
        with self._lock:
            for spec in specs:
                self._launch(spec, resume)
            self.save_state()
        self._monitor.start()

    def add(self, spec: StreamSpec) -> dict:
        with self._lock:
            if self.closing.is_set():
                raise Refusal(503, "the service is stopping")
            if spec.name in self._entries:
                raise Refusal(409, f"name: a stream named {spec.name!r} exists (remove it "
                                   "first, or pick another name)")
            for other in self._entries.values():
                if spec.jsonl and other.spec.jsonl == spec.jsonl:
                    raise Refusal(409, f"jsonl: stream {other.spec.name!r} writes "
                                       f"{spec.jsonl!r}")
            self.check_element(spec)
            if spec.jsonl:
                Path(spec.jsonl).parent.mkdir(parents=True, exist_ok=True)
            entry = self._launch(self._shared(spec), resume=False)
            self.save_state()
        return entry.runner.snapshot()

    @staticmethod
    def check_element(spec: StreamSpec) -> None:
        """The stream's element made with its properties, and dropped: a property it does
        not have, or a value it does not take, is refused before anything starts."""
        if spec.pipeline:
            return
        try:
            Gst.parse_launch(launch_element(spec.element, spec.properties))
        except GLib.Error as exc:
            raise Refusal(422, f"properties: {exc.message}") from None

    def _shared(self, spec: StreamSpec) -> StreamSpec:
        """A stream that loads the model of a stream already sharing one joins that
        instance (a model loaded once per process)."""
        key = instance_key(spec)
        for other in self._entries.values():
            if key is not None and instance_key(_without_instance(other.spec)) == key \
                    and "model-instance-id" in other.spec.properties:
                return with_properties(
                    spec, {"model-instance-id": other.spec.properties["model-instance-id"]})
        return spec

    def _launch(self, spec: StreamSpec, resume: bool) -> _Entry:
        stop = threading.Event()
        tap = StreamTap(spec.name, spec.format,
                        Preview(spec.name, self.preview_fps, self._previews),
                        self.metrics)
        runner = StreamRunner(spec, self.settings, stop, resume_first=resume, observer=tap,
                              count_resumed=True)
        thread = threading.Thread(target=runner.run, name=f"stream {spec.name}", daemon=True)
        entry = _Entry(spec, runner, thread, stop, tap)
        self._entries[spec.name] = entry
        thread.start()
        return entry

    def remove(self, name: str) -> dict:
        """The stream ends through EOS (its files complete); its final status."""
        with self._lock:
            entry = self._entry(name)
            del self._entries[name]
            self.save_state()
        entry.stop.set()
        entry.thread.join(self.settings.stop_timeout + 5)
        self.metrics.forget(name)
        final = entry.runner.snapshot()
        self._supervisor.update([*self.statuses(), final])  # its last state said once
        return final

    def restart(self, name: str) -> dict:
        """A running stream's run ends through EOS and the next starts at once; an ended
        one starts again (a file stream after its last record)."""
        with self._lock:
            entry = self._entry(name)
            if entry.thread.is_alive():
                entry.runner.request_restart()
            else:
                entry = self._launch(entry.spec, resume=True)
        return entry.runner.snapshot()

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise Refusal(404, f"no stream named {name!r}")
        return entry

    # -- what it is doing -----------------------------------------------------------------

    def status(self, name: str) -> dict:
        with self._lock:
            return self._entry(name).runner.snapshot()

    def statuses(self) -> list[dict]:
        with self._lock:
            entries = list(self._entries.values())
        return [e.runner.snapshot() for e in entries]

    def tap(self, name: str) -> StreamTap:
        with self._lock:
            return self._entry(name).tap

    def object_counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            entries = list(self._entries.values())
        return {e.spec.name: e.tap.object_counts() for e in entries}

    def not_ready(self) -> list[str]:
        return [s["name"] for s in self.statuses() if s["state"] in NOT_READY]

    def _report(self) -> None:
        while not self.closing.wait(self.settings.status_interval):
            self._supervisor.update(self.statuses())

    def shutdown(self) -> list[dict]:
        """Every stream ends through EOS, its files complete; their final status."""
        self.closing.set()
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            entry.stop.set()
        for entry in entries:
            entry.thread.join(self.settings.stop_timeout + 5)
        final = [e.runner.snapshot() for e in entries]
        self._supervisor.update(final, final=True)
        self.metrics.close()
        self._previews.shutdown(wait=False, cancel_futures=True)
        return final

    # -- the state file -------------------------------------------------------------------

    def save_state(self) -> None:
        """The stream list, replaced whole (with the lock held)."""
        if self.state_file is None:
            return
        body = {"version": STATE_VERSION,
                "streams": [e.spec.table() for e in self._entries.values()]}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_name(f"{self.state_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(temporary, self.state_file)


def _without_instance(spec: StreamSpec) -> StreamSpec:
    properties = {k: v for k, v in spec.properties.items() if k != "model-instance-id"}
    return StreamSpec(**{**spec.__dict__, "properties": properties})


def load_state(path: Path) -> list[StreamSpec] | None:
    """The streams a state file holds (None when there is no file); a damaged one is a
    ConfigError, so the service does not start on a list it cannot read."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the state file ({exc}); move it away to "
                          "start from the streams file") from None
    if not isinstance(body, dict) or not isinstance(body.get("streams"), list):
        raise ConfigError(f"{path}: not a torchstream state file (no 'streams' list)")
    return [stream_spec(table, where=str(path), index=i)
            for i, table in enumerate(body["streams"])]
