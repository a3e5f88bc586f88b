"""A live source and a model slower than it: with the default frame policy the inference
branch takes the newest frame when it is free, every frame still comes out (the skipped ones
without results), and the delay from capture to output stays flat instead of growing."""

from __future__ import annotations

import os
import statistics

import pytest
import torch
import torchvision

from tests.helpers import on_samples, resident_mb
from torchstream.gst import Gst
from torchstream.gst.meta import read_tensor_data
from torchstream.gst.pipeline import run_to_end

FRAMES = 150  # 5 s at 30 fps


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """resnet152 (seeded weights): slower than a 30 fps camera on a 2-core machine whatever
    engine wins (resnet50 in OpenVINO keeps up with 30 fps on a fast one)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("live") / "resnet152_seeded.pth"
    torch.save(torchvision.models.resnet152(weights=None).state_dict(), path)
    return path


def live_run(model, policy: str | None, frames_in: int = FRAMES, memory: dict | None = None):
    """(result, [(pts, delay s, has results)], inference-skipped); ``memory`` gets the
    resident MB every 30 frames, by frame index."""
    setting = f" frame-policy={policy}" if policy else ""
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={frames_in} ! "
        "video/x-raw,width=320,height=240,framerate=30/1 ! "
        f"video_inference name=bin model=torchvision.models.resnet152 model-weights={model}"
        f"{setting} ! appsink name=sink sync=true")
    frames = []

    def receive(buf, caps):
        clock = pipeline.get_clock()
        delay = (clock.get_time() - pipeline.get_base_time() - buf.pts) / Gst.SECOND
        frames.append((buf.pts, delay, bool(read_tensor_data(buf))))
        if memory is not None and len(frames) % 30 == 0:
            memory[len(frames)] = resident_mb()

    on_samples(pipeline, "sink", receive, sync=None)
    result = run_to_end(pipeline, 120 + frames_in / 30)
    skipped = pipeline.get_by_name("bin").get_property("inference-skipped")
    return result, frames, skipped


def test_a_live_source_keeps_its_rate_and_a_flat_delay(slow_model):
    result, frames, skipped = live_run(slow_model, None)
    assert result.ok, result.error
    assert len(frames) == FRAMES  # every frame comes out
    assert [f[0] for f in frames] == sorted(f[0] for f in frames)
    inferred = sum(f[2] for f in frames)
    assert skipped > 0 and inferred + skipped == FRAMES  # each inferred frame has its results
    third = FRAMES // 3
    early = statistics.median(f[1] for f in frames[:third])
    late = statistics.median(f[1] for f in frames[-third:])
    print(f"live, frame-policy=auto: {inferred} of {FRAMES} frames inferred, median delay "
          f"{early:.3f} s (first third), {late:.3f} s (last third)")
    assert late < early + 0.3, (early, late)  # flat, where every-frame grows by seconds


def test_every_frame_infers_every_frame_of_a_live_source(slow_model):
    result, frames, skipped = live_run(slow_model, "every-frame")
    assert result.ok, result.error
    assert len(frames) == FRAMES and skipped == 0
    assert all(f[2] for f in frames)
    third = FRAMES // 3
    print(f"live, frame-policy=every-frame: median delay "
          f"{statistics.median(f[1] for f in frames[:third]):.3f} s (first third), "
          f"{statistics.median(f[1] for f in frames[-third:]):.3f} s (last third)")


@pytest.mark.parametrize("description, fragment", [
    ("video_inference model=torchvision.models.mobilenet_v2 frame-policy=sometimes",
     "property 'frame-policy' must be one of auto, every-frame, newest-frame"),
    ("processbin process=identity frame-policy=newest-frame",
     "frame-policy=newest-frame needs aggregate and a preprocess queue"),
    ("video_inference model=torchvision.models.mobilenet_v2 frame-policy=newest-frame "
     "preprocess-queue-size=-1", "needs aggregate and a preprocess queue"),
])
def test_a_policy_that_cannot_work_is_refused(description, fragment):
    pipeline = Gst.parse_launch(f"videotestsrc num-buffers=1 ! {description} ! fakesink")
    result = run_to_end(pipeline, 30)
    assert not result.ok and fragment in result.error, result.error


@pytest.mark.soak
def test_a_minute_of_live_video_keeps_memory_and_delay_flat(slow_model):
    """1800 frames at 30 fps (TORCHSTREAM_SOAK_MINUTES=30 for a longer soak), the model
    slower than the camera: resident memory after the first 10 s grows less than 20 MB and
    the delay of the last 10 s is that of the first."""
    frames_in = 1800 * int(os.environ.get("TORCHSTREAM_SOAK_MINUTES", "1"))
    memory: dict[int, float] = {}
    result, frames, skipped = live_run(slow_model, None, frames_in, memory)
    assert result.ok, result.error
    assert len(frames) == frames_in and skipped > 0
    window = 300  # 10 s
    early = statistics.median(f[1] for f in frames[window:2 * window])
    late = statistics.median(f[1] for f in frames[-window:])
    grown = memory[max(memory)] - memory[window]
    print(f"live soak: {frames_in} frames, {frames_in - skipped} inferred, median delay "
          f"{early:.3f} s (10-20 s), {late:.3f} s (last 10 s), resident memory +{grown:.1f} MB "
          "after the first 10 s")
    assert late < early + 0.3, (early, late)
    assert grown < 20, memory

