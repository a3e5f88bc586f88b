"""Model instances shared by name (``model-instance-id``), GStreamer-free.

Elements of one process that name the same instance run their buffers through its workers,
which put the buffers of different streams that are waiting at the same moment into one
forward pass (up to ``batch_size``, waiting at most ``timeout`` for more after the first one
arrives) and hand each buffer its own outputs. The elements' own threads wait for their
results, so each stream keeps its buffers, timestamps and metadata, and a stream that sends
nothing for a while costs the others ``timeout`` at most.

On the CPU, while two or more streams send buffers, ``passes`` forward passes run at once
(one per core by default, each on one thread: engines.side_by_side), so a batch of some
streams' buffers runs beside another's; a lone stream's passes use every core as an element
of its own would. With ``batch_size`` 1 there is nothing to gather: each stream runs its
forward pass in its own thread (at most ``passes`` at once when that is more than one).

A batch only holds buffers the same engine runs on the same input signature; when a batch's
forward pass fails, each of its buffers is run again alone, so that the error reaches only the
stream whose data caused it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from torchstream.errors import ConfigError
from torchstream.model.engines import parallel_passes
from torchstream.model.timing import report_pass

DEFAULT_TIMEOUT_MS = 5
INSTANCE_BLURB = ("Elements of this process with the same id share one model and engine; "
                  "their buffers run together in one forward pass (up to batch-size buffers "
                  "of different streams), and on the CPU one pass per core runs at once "
                  "while several streams send buffers; empty: this element's own instance")
BATCH_TIMEOUT_BLURB = ("With model-instance-id: milliseconds the shared instance waits for "
                       "other streams' buffers after the first one of a batch arrives")


@dataclass
class _Request:
    group: Hashable
    # (inputs, row counts, passes may run side by side) -> (names, rows)
    run: Callable[[list, list[int] | None, bool], tuple]
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
    most_at_once: int = 0  # forward passes that ran at the same time, at most

    @property
    def mean_batch(self) -> float:
        return self.buffers / self.calls if self.calls else 0.0


class SharedInstance:
    """One named instance: its settings, the streams using it and the batching workers."""

    def __init__(self, name: str, settings: dict[str, Any], batch_size: int,
                 timeout: float, passes: int = 1) -> None:
        self.name = name
        self.settings = dict(settings)
        self.batch_size = max(1, int(batch_size))
        self.timeout = float(timeout)
        self.passes = max(1, int(passes))  # forward passes at once while streams share it
        self.stats = BatchStats()
        self.build_lock = threading.Lock()  # one engine choice at a time for this instance
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._users: set[int] = set()  # elements attached
        self._active: set[int] = set()  # attached elements that may still send buffers
        self._threads: list[threading.Thread] = []
        # batch_size 1: the callers' passes at once, at most (unbounded with one pass: an
        # accelerator's streams, or a CPU instance of every core, keep their own threads)
        self._slots = threading.Semaphore(self.passes) if self.passes > 1 else nullcontext()
        self._running = 0  # forward passes running now
        self._stopping = False

    # -- who uses it ------------------------------------------------------------------------

    def attach(self, user: int) -> None:
        with self._cond:
            self._users.add(user)
            self._active.add(user)
            if not self._threads and self.batch_size > 1:
                self._stopping = False
                self._threads = [threading.Thread(target=self._work, daemon=True,
                                                  name=f"instance:{self.name}:{i}")
                                 for i in range(self.passes)]
                for thread in self._threads:
                    thread.start()

    def set_active(self, user: int, active: bool) -> None:
        """An element at EOS sends nothing more: the worker stops waiting for it."""
        with self._cond:
            if active and user in self._users:
                self._active.add(user)
            else:
                self._active.discard(user)
            self._cond.notify_all()

    def detach(self, user: int) -> bool:
        """-> whether nobody uses the instance any more (its workers have then stopped)."""
        with self._cond:
            self._users.discard(user)
            self._active.discard(user)
            if self._users:
                self._cond.notify_all()
                return False
            self._stopping = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
        return True

    # -- work -------------------------------------------------------------------------------

    def submit(self, group: Hashable, run: Callable[[list, list[int] | None, bool], tuple],
               inputs: list, rows: int | None = None) -> Future:
        """Queue one buffer; the future gives ``(names, tensors)`` for it, or raises what its
        forward pass raised."""
        request = _Request(group, run, inputs, rows)
        if self.batch_size == 1:  # nothing to wait for: run in the caller's thread
            with self._slots:
                self._run([request])
            return request.future
        with self._cond:
            if not self._threads:
                raise ConfigError(f"model instance '{self.name}' is not running")
            self._queue.append(request)
            self._cond.notify_all()
        return request.future

    def _take_batch(self) -> list[_Request] | None:
        """The next batch: the oldest request and those of its group that arrive before the
        batch is full, every active stream has sent one (with several workers: its share of
        the active streams), or the timeout has passed."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                deadline = time.monotonic() + self.timeout
                while self._queue:  # another worker may take it meanwhile: then start over
                    group = self._queue[0].group
                    same = [r for r in self._queue if r.group == group]
                    share = math.ceil(len(self._active) / self.passes)
                    left = deadline - time.monotonic()
                    if len(same) >= min(self.batch_size, max(1, share)) or left <= 0 \
                            or self._stopping:
                        batch = same[:self.batch_size]
                        for r in batch:
                            self._queue.remove(r)
                        return batch
                    self._cond.wait(left)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        try:
            names, per_buffer = self._forward(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the buffers' own streams
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            with self._cond:
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

    def _forward(self, batch: list[_Request]) -> tuple:
        """One forward pass of the batch, side by side with others while several streams
        are active."""
        counts = None if batch[0].rows is None else [r.rows for r in batch]
        with self._cond:
            side_by_side = self.passes > 1 and len(self._active) > 1
            self._running += 1
            self.stats.most_at_once = max(self.stats.most_at_once, self._running)
        started = time.perf_counter()
        try:
            return batch[0].run([r.inputs for r in batch], counts, side_by_side)
        finally:
            report_pass(self.name, time.perf_counter() - started, len(batch))
            with self._cond:
                self._running -= 1


_instances: dict[str, SharedInstance] = {}
_instances_lock = threading.Lock()

def join_instance(name: str, settings: dict[str, Any], user: int) -> SharedInstance:
    """Attach ``user`` to the instance called ``name``, made with ``settings`` (the property
    values that make an instance: the element says which) if it is new; an element naming an
    instance with other settings gets an error that says which."""
    wanted = dict(settings)
    with _instances_lock:
        instance = _instances.get(name)
        if instance is None:
            instance = SharedInstance(name, wanted, int(wanted["batch-size"] or 1),
                                      float(wanted["batch-timeout"] or 0) / 1000.0,
                                      instance_passes(wanted))
            _instances[name] = instance
        else:
            differing = [key for key in sorted(instance.settings.keys() | wanted.keys())
                         if _normal(instance.settings.get(key)) != _normal(wanted.get(key))]
            if differing:
                key = differing[0]
                raise ConfigError(
                    f"model-instance-id '{name}' is already used with {key}="
                    f"{instance.settings.get(key)!r}; this element has {key}="
                    f"{wanted.get(key)!r} (elements sharing an instance must set the same "
                    f"{', '.join(instance.settings)})")
        instance.attach(user)
        return instance


_finished: dict[str, BatchStats] = {}  # the last run of each instance name


def instance_passes(settings: dict[str, Any]) -> int:
    """Forward passes at once for an instance with these settings: several on the CPU, one
    on an accelerator (which batches instead)."""
    device = str(settings.get("device") or "cpu").strip().lower()
    if not device.startswith("cpu"):
        return 1
    return parallel_passes(int(settings.get("threads") or 0))[0]


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
