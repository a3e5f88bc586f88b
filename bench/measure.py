"""Small measuring tools shared by every side: a frame clock, memory, steady-state fps."""

from __future__ import annotations

import math
import os
import resource
import statistics
import time


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``), in MB; None without it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def current_rss_mb() -> float:
    """Resident memory now (VmRSS), in MB."""
    rss = _status_mb("VmRSS")
    return math.nan if rss is None else rss


def peak_rss_mb() -> float:
    """Peak resident memory (VmHWM) since :func:`start_memory_window`, in MB (the process's
    lifetime peak where the kernel has no VmHWM)."""
    peak = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def start_memory_window() -> None:
    """Start a run's memory measurement from what the process really holds: give the heap
    memory earlier runs freed back to the system (glibc keeps it otherwise: the previous
    pipeline's buffers and elements, which a program running one pipeline never has), then
    reset the peak (``clear_refs`` 5) so that the next peak is this run's own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not glibc or no clear_refs: the peak stays the process's lifetime peak


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FrameClock:
    """Completion time of every frame, and the memory once warm and at the end.

    Every side calls :meth:`done` when a frame's result is ready (all frames of a batch at
    once), so all sides are timed the same way: steady-state fps from the end of the warm-up
    frames to the last frame, which leaves model loading, pipeline start and first-call costs
    out.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = max(1, min(warmup, total - 1)) if total > 1 else 1
        self.total = total
        self.times: list[float] = []
        self.rss_warm = math.nan
        self.rss_end = math.nan
        self.cpu_warm = self.cpu_end = math.nan  # the process's CPU seconds (every thread)

    def reset(self) -> None:
        self.times.clear()
        self.rss_warm = self.rss_end = math.nan
        self.cpu_warm = self.cpu_end = math.nan

    def done(self, count: int = 1) -> None:
        now = time.perf_counter()
        for _ in range(count):
            self.times.append(now)
            n = len(self.times)
            if n == self.warmup:
                self.rss_warm = current_rss_mb()
                self.cpu_warm = cpu_seconds()
            if n == self.total:
                self.rss_end = current_rss_mb()
                self.cpu_end = cpu_seconds()

    def fps(self) -> float:
        """Frames after the warm-up divided by the time they took (nan if too few)."""
        n, w = len(self.times), self.warmup
        if n <= w:
            return math.nan
        span = self.times[-1] - self.times[w - 1]
        return (n - w) / span if span > 0 else math.nan

    def cpu_ms_per_frame(self) -> float:
        """CPU milliseconds of the whole process (every thread: getrusage) per frame after
        the warm-up: on a noisy machine steadier than fps."""
        timed = len(self.times) - self.warmup
        if timed <= 0 or math.isnan(self.cpu_warm):
            return math.nan
        return 1000 * (self.cpu_end - self.cpu_warm) / timed

    def summary(self) -> dict:
        if math.isnan(self.rss_end) and self.times:
            self.rss_end = current_rss_mb()
            self.cpu_end = cpu_seconds()
        return {
            "fps": self.fps(),
            "cpu_ms_per_frame": self.cpu_ms_per_frame(),
            "frames": len(self.times),
            "warmup": self.warmup,
            "peak_rss_mb": peak_rss_mb(),
            "rss_growth_mb": self.rss_end - self.rss_warm,
        }


def plan_frames(batch: int, frames: int, quick: bool = False) -> tuple[int, int]:
    """(frames, warm-up frames) for a run: the warm-up is whole batches (at least 5 frames and
    2 batches; 3 frames in a quick run), and at least 2 timed batches follow it, so that fps
    is measured from the end of one batch to the end of another."""
    wanted = 3 if quick else max(5, 2 * batch)
    warmup = -(-wanted // batch) * batch
    return max(frames, warmup + 2 * batch), warmup


def median(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def thread_cpu_ticks() -> dict[int, tuple[str, int]]:
    """CPU time (user + system, in clock ticks) of every thread of this process, by tid."""
    out: dict[int, tuple[str, int]] = {}
    base = "/proc/self/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                stat = f.read()
            with open(f"{base}/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))
    return out


CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
