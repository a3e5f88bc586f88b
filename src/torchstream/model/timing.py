"""Forward-pass times told to whoever listens (the service's Prometheus histogram): the
inference elements report each pass here; with no listener a report costs one list check."""

from __future__ import annotations

import threading
from collections.abc import Callable

PassListener = Callable[[str, float, int], None]  # (model, seconds, frames in the pass)

_listeners: list[PassListener] = []
_lock = threading.Lock()


def add_listener(listener: PassListener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: PassListener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def report_pass(model: str, seconds: float, frames: int) -> None:
    for listener in tuple(_listeners):
        listener(model, seconds, frames)
