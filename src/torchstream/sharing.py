"""Model instances shared by name (``model-instance-id``), GStreamer-free.

Elements of one process that name the same instance run their buffers through one worker
thread, which puts the buffers of different streams that are waiting at the same moment into
one forward pass (up to ``batch_size``, waiting at most ``timeout`` for more after the first
one arrives) and hands each buffer its own outputs. The elements' own threads wait for their
results, so each stream keeps its buffers, timestamps and metadata, and a stream that sends
nothing for a while costs the others ``timeout`` at most. With ``batch_size`` 1 there is
nothing to gather: each stream runs its forward pass in its own thread, side by side with the
others, as with instances of their own (one worker running them one after the other was half
as fast for CenterNet on 2 streams here: 6.6 against 13.0 fps).

A batch only holds buffers the same engine runs on the same input signature; when a batch's
forward pass fails, each of its buffers is run again alone, so that the error reaches only the
stream whose data caused it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from torchstream.errors import ConfigError

DEFAULT_TIMEOUT_MS = 5
INSTANCE_BLURB = ("Elements of this process with the same id share one model and engine, and "
                  "their buffers run together in one forward pass (up to batch-size buffers "
                  "of different streams); empty: this element's own instance")
BATCH_TIMEOUT_BLURB = ("With model-instance-id: milliseconds the shared instance waits for "
                       "other streams' buffers after the first one of a batch arrives")


@dataclass
class _Request:
    group: Hashable
    run: Callable[[list, list[int] | None], tuple]  # (inputs, row counts) -> (names, rows)
    inputs: list  # one buffer's tensors
    rows: int | None  # a region batch buffer's row count; None: a whole frame
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker ran: forward passes and the buffers in them (for logs, tests, bench)."""

    calls: int = 0
    buffers: int = 0
    largest: int = 0
    retried: int = 0  # batches whose pass failed and whose buffers ran again one by one

    @property
    def mean_batch(self) -> float:
        return self.buffers / self.calls if self.calls else 0.0


class SharedInstance:
    """One named instance: its settings, the streams using it and the batching worker."""

    def __init__(self, name: str, settings: dict[str, Any], batch_size: int,
                 timeout: float) -> None:
        self.name = name
        self.settings = dict(settings)
        self.batch_size = max(1, int(batch_size))
        self.timeout = float(timeout)
        self.stats = BatchStats()
        self.build_lock = threading.Lock()  # one engine choice at a time for this instance
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._users: set[int] = set()  # elements attached
        self._active: set[int] = set()  # attached elements that may still send buffers
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- who uses it ------------------------------------------------------------------------

    def attach(self, user: int) -> None:
        with self._cond:
            self._users.add(user)
            self._active.add(user)
            if self._thread is None and self.batch_size > 1:
                self._stopping = False
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name=f"instance:{self.name}")
                self._thread.start()

    def set_active(self, user: int, active: bool) -> None:
        """An element at EOS sends nothing more: the worker stops waiting for it."""
        with self._cond:
            if active and user in self._users:
                self._active.add(user)
            else:
                self._active.discard(user)
            self._cond.notify_all()

    def detach(self, user: int) -> bool:
        """-> whether nobody uses the instance any more (its worker has then stopped)."""
        with self._cond:
            self._users.discard(user)
            self._active.discard(user)
            if self._users:
                self._cond.notify_all()
                return False
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        return True

    # -- work -------------------------------------------------------------------------------

    def submit(self, group: Hashable, run: Callable[[list, list[int] | None], tuple],
               inputs: list, rows: int | None = None) -> Future:
        """Queue one buffer; the future gives ``(names, tensors)`` for it, or raises what its
        forward pass raised."""
        request = _Request(group, run, inputs, rows)
        if self.batch_size == 1:  # nothing to wait for: run in the caller's thread
            self._run([request])
            return request.future
        with self._cond:
            if self._thread is None:
                raise ConfigError(f"model instance '{self.name}' is not running")
            self._queue.append(request)
            self._cond.notify_all()
        return request.future

    def _take_batch(self) -> list[_Request] | None:
        """The next batch: the oldest request and those of its group that arrive before the
        batch is full, every active stream has sent one, or the timeout has passed."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.timeout
            group = self._queue[0].group
            while True:
                same = [r for r in self._queue if r.group == group]
                if len(same) >= self.batch_size or len(same) >= len(self._active):
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            batch = [r for r in self._queue if r.group == group][:self.batch_size]
            for r in batch:
                self._queue.remove(r)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        counts = None if batch[0].rows is None else [r.rows for r in batch]
        try:
            names, per_buffer = batch[0].run([r.inputs for r in batch], counts)
        except BaseException as exc:  # noqa: BLE001 - handed to the buffers' own streams
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            self.stats.retried += 1
            for request in batch:  # find whose data fails: each alone
                self._run([request])
            return
        with self._cond:
            self.stats.calls += 1
            self.stats.buffers += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        for request, tensors in zip(batch, per_buffer, strict=True):
            request.future.set_result((names, tensors))


_instances: dict[str, SharedInstance] = {}
_instances_lock = threading.Lock()

# the properties that make an instance: elements naming one must agree on all of them
INSTANCE_SETTINGS = ("model", "model-weights", "device", "engine", "graph-mode", "threads",
                     "batch-size", "batch-timeout")


def join_instance(name: str, settings: dict[str, Any], user: int) -> SharedInstance:
    """Attach ``user`` to the instance called ``name``, made with ``settings`` if it is new;
    an element naming an instance with other settings gets an error that says which."""
    wanted = {key: settings.get(key) for key in INSTANCE_SETTINGS}
    with _instances_lock:
        instance = _instances.get(name)
        if instance is None:
            instance = SharedInstance(name, wanted, int(wanted["batch-size"] or 1),
                                      float(wanted["batch-timeout"] or 0) / 1000.0)
            _instances[name] = instance
        else:
            differing = [key for key in INSTANCE_SETTINGS
                         if _normal(instance.settings[key]) != _normal(wanted[key])]
            if differing:
                key = differing[0]
                raise ConfigError(
                    f"model-instance-id '{name}' is already used with {key}="
                    f"{instance.settings[key]!r}; this element has {key}={wanted[key]!r} "
                    "(elements sharing an instance must set the same "
                    f"{', '.join(INSTANCE_SETTINGS)})")
        instance.attach(user)
        return instance


_finished: dict[str, BatchStats] = {}  # the last run of each instance name


def leave_instance(instance: SharedInstance, user: int) -> bool:
    """Detach ``user``; -> whether it was the last (the instance is then gone, its
    statistics kept for :func:`finished_stats`)."""
    if not instance.detach(user):
        return False
    with _instances_lock:
        if _instances.get(instance.name) is instance and not instance._users:
            del _instances[instance.name]
            _finished[instance.name] = instance.stats
    return True


def running_instances() -> list[str]:
    with _instances_lock:
        return sorted(_instances)


def finished_stats(name: str) -> BatchStats | None:
    """The batches of the instance's last run (from its first element's start to its last
    element's stop)."""
    with _instances_lock:
        return _finished.get(name)


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value
