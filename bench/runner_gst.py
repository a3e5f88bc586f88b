"""Playing a pipeline for an exact number of frames of a file (capped or looped).

The pipeline is prerolled (PAUSED), then a flushing, accurate seek sets the segment: its stop
caps the frame count; more frames than the file has are played by segment seeks (the file
looped gaplessly, running time still increasing, as meta_aggregate needs). Frames that reached
the sink before the seek (the preroll) are not counted.
"""

from __future__ import annotations

import math
import time

from torchstream.elements._base import ENGINE_DETAILS
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end


def _bus_error(pipeline: Gst.Pipeline) -> str | None:
    msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    if msg is None:
        return None
    err, debug = msg.parse_error()
    return f"{msg.src.get_path_string()}: {err.message} ({debug})"


def _engine_notes(pipeline: Gst.Pipeline) -> list[str]:
    """The engine each inference element chose, from the details of the INFO (WARNING: fell
    back) message it posts at caps negotiation, so during the preroll."""
    bus, notes = pipeline.get_bus(), []
    while True:
        msg = bus.pop_filtered(Gst.MessageType.INFO | Gst.MessageType.WARNING)
        if msg is None:
            return notes
        info = msg.type == Gst.MessageType.INFO
        details = msg.parse_info_details() if info else msg.parse_warning_details()
        if details is not None and details.get_name() == ENGINE_DETAILS:
            notes.append(details.get_value("engine") + ("" if info else " (fallback)"))


def _seek(pipeline: Gst.Pipeline, flags: Gst.SeekFlags, stop_ns: int) -> bool:
    return pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0,
                         Gst.SeekType.SET, stop_ns)


def play(pipeline: Gst.Pipeline, frames: int, video_frames: int, video_fps: float,
         clock, profile=None, timeout: float = 900.0) -> dict:
    """Play ``frames`` frames; returns {"error": ...} or {"engines": [what each inference
    element chose]}."""
    frame_ns = int(Gst.SECOND / video_fps)
    whole_file = video_frames * frame_ns
    outcome: dict = {}
    try:
        if pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            return {"error": _bus_error(pipeline) or "the pipeline failed to go to PAUSED"}
        res, _, _ = pipeline.get_state(int(timeout * Gst.SECOND))
        if res != Gst.StateChangeReturn.SUCCESS:
            return {"error": _bus_error(pipeline) or f"no preroll ({res.value_nick})"}
        outcome["engines"] = _engine_notes(pipeline)
        if profile is not None:
            profile.attach(pipeline)
        loops = math.ceil(frames / video_frames)
        last_stop = (frames - (loops - 1) * video_frames) * frame_ns - frame_ns // 2
        flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE
        start_ns = time.perf_counter_ns()
        if profile is not None:
            profile.start(start_ns)
        if loops == 1:
            if not _seek(pipeline, flags, last_stop):
                return {"error": "the seek that caps the frame count failed"}
            clock.reset()
            result = run_to_end(pipeline, timeout,
                                tick=profile.sample if profile is not None else None)
            if not result.ok:
                return {"error": result.error}
        else:
            if not _seek(pipeline, flags | Gst.SeekFlags.SEGMENT, whole_file):
                return {"error": "the looping segment seek failed"}
            clock.reset()
            error = _loop(pipeline, loops, whole_file, last_stop, timeout)
            if error:
                return {"error": error}
        return outcome
    finally:
        pipeline.set_state(Gst.State.NULL)


def _loop(pipeline: Gst.Pipeline, loops: int, whole_file: int, last_stop: int,
          timeout: float) -> str | None:
    """Bus loop for a looped file: each SEGMENT_DONE queues the next pass (non-flushing)."""
    bus = pipeline.get_bus()
    deadline = time.monotonic() + timeout
    done_loops = 1
    pipeline.set_state(Gst.State.PLAYING)
    wanted = Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.SEGMENT_DONE
    while time.monotonic() < deadline:
        msg = bus.timed_pop_filtered(100 * Gst.MSECOND, wanted)
        if msg is None:
            continue
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            return f"{msg.src.get_path_string()}: {err.message}"
        if msg.type == Gst.MessageType.EOS:
            return None
        done_loops += 1
        if done_loops < loops:
            ok = _seek(pipeline, Gst.SeekFlags.SEGMENT | Gst.SeekFlags.ACCURATE, whole_file)
        else:
            ok = _seek(pipeline, Gst.SeekFlags.ACCURATE, last_stop)
        if not ok:
            return "a looping segment seek failed"
    return f"timed out after {timeout} s"
