"""model-instance-id: one model instance shared by several streams, their buffers batched
together into one forward pass, each stream getting its own results back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.conftest import BIKES
from tests.helpers import Run, on_samples, run_pipeline, tensor_output
from torchstream.gst import Gst
from torchstream.gst.meta import read_results
from torchstream.gst.pipeline import PipelineResult, run_to_end
from torchstream.model import sharing
from torchstream.model.engines import usable_cpus

MOBILENET = "torchvision.models.mobilenet_v2"
CPUS = usable_cpus()
# bikes.mp4's first 100 encoded frames of 250 (cut before the decoder, so the same frames
# every run): enough passes to see batches and their order
FRAMES = 100


def top1(buf: Gst.Buffer, caps: Gst.Caps):
    results = read_results(buf)
    best = results.classifications[0]
    return buf.pts, best.label, best.confidence


def streams(count: int, extra: str, weights) -> str:
    return " ".join(
        f"filesrc location={BIKES} ! qtdemux ! h264parse ! identity eos-after={FRAMES} ! "
        "avdec_h264 ! videoconvert ! "
        f"video_inference model={MOBILENET} model-weights={weights} {extra} ! appsink name=s{i}"
        for i in range(count))


def assert_same_results(own: Run, shared: Run, sinks: tuple[str, ...]) -> None:
    """Every stream of the shared run got the results of every frame its own instance did,
    in order, and equal."""
    assert own.result.ok and shared.result.ok, (own.error, shared.error)
    for name in sinks:
        mine, theirs = own.per_sink[name], shared.per_sink[name]
        assert len(theirs) == len(mine) >= 0.95 * FRAMES
        assert [pts for pts, _, _ in theirs] == sorted(pts for pts, _, _ in theirs)
        assert [(pts, label) for pts, label, _ in theirs] == \
            [(pts, label) for pts, label, _ in mine]
        assert np.allclose([c for *_, c in theirs], [c for *_, c in mine], atol=1e-4)


@pytest.mark.slow
def test_streams_sharing_an_instance_get_their_own_results_batched_together(
        mobilenet_weights):
    sinks = tuple(f"s{i}" for i in range(3))
    own = run_pipeline(streams(3, "", mobilenet_weights), sinks=sinks, receive=top1,
                       timeout=300)
    # each pass on every core: one pass at a time, so nothing runs beside a batch
    shared = run_pipeline(streams(3, f"model-instance-id=bikes batch-size=4 threads={CPUS}",
                                  mobilenet_weights), sinks=sinks, receive=top1, timeout=300)
    assert_same_results(own, shared, sinks)
    stats = sharing.finished_stats("bikes")
    assert stats is not None and stats.buffers == sum(len(own.per_sink[name]) for name in sinks)
    # three streams waiting at once go into one pass: far fewer passes than frames
    assert stats.mean_batch > 1.5 and stats.largest == 3 and stats.most_at_once == 1, stats


@pytest.mark.serial
@pytest.mark.skipif(CPUS < 2, reason="one CPU: one forward pass at a time")
def test_streams_sharing_an_instance_on_the_cpu_run_passes_side_by_side(mobilenet_weights):
    """By default a shared instance runs one pass per core at once, one thread each, while
    several streams send frames; the results stay each stream's own and equal."""
    sinks = tuple(f"s{i}" for i in range(3))
    own = run_pipeline(streams(3, "", mobilenet_weights), sinks=sinks, receive=top1,
                       timeout=300)
    shared = run_pipeline(streams(3, "model-instance-id=side batch-size=4",
                                  mobilenet_weights), sinks=sinks, receive=top1, timeout=300)
    assert_same_results(own, shared, sinks)
    stats = sharing.finished_stats("side")
    assert stats is not None and stats.buffers == sum(len(own.per_sink[name]) for name in sinks)
    assert stats.most_at_once >= 2, stats
    notes = [n for n in shared.result.infos if "while several streams share it" in n]
    assert notes and f"{CPUS} forward passes at once" in notes[0], shared.result.infos
    assert f"(f32, 1 thread, {CPUS} passes at once)" in notes[0], notes[0]


def test_elements_naming_one_instance_must_agree(mobilenet_weights):
    run = run_pipeline(
        f"filesrc location={BIKES} ! decodebin ! videoconvert ! tee name=t "
        f"t. ! queue ! video_inference model={MOBILENET} model-weights={mobilenet_weights} "
        "model-instance-id=one batch-size=2 ! appsink name=a "
        f"t. ! queue ! video_inference model={MOBILENET} model-weights={mobilenet_weights} "
        "model-instance-id=one batch-size=4 ! appsink name=b", sinks=("a", "b"), timeout=60)
    assert not run.result.ok
    assert "model-instance-id 'one' is already used with batch-size=" in run.error
    assert "batch-size=2" in run.error and "batch-size=4" in run.error
    assert "one" not in sharing.running_instances()  # the first element left it at stop


class FailsOnWhite(torch.nn.Module):
    """Channel means; a white frame anywhere in the batch fails the whole forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).amin(dim=1) == 255).any()):
            raise RuntimeError("a white frame")
        return x.float().mean(dim=(1, 2))


def run_together(descriptions: dict[str, str], receive=tensor_output,
                 timeout: float = 60) -> dict[str, Run]:
    """Separate pipelines of one process, run at the same time (as `torchstream run` does);
    each has one appsink named "sink"."""
    runs = {}
    threads = []
    for name, description in descriptions.items():
        pipeline = Gst.parse_launch(description)
        run = Run(PipelineResult(ok=False))
        on_samples(pipeline, "sink", lambda buf, caps, run=run: run.outputs.append(
            receive(buf, caps)))
        runs[name] = run

        def go(pipeline=pipeline, run=run):
            run.result = run_to_end(pipeline, timeout)

        threads.append(threading.Thread(target=go))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


def test_an_error_in_one_streams_data_stays_in_that_stream(tmp_path):
    model = tmp_path / "white.ts"
    torch.jit.save(torch.jit.script(FailsOnWhite()), model)
    # one pass at a time (every core each), so the two streams' frames share batches
    infer = (f"pytorch_tensor_inference model={model} engine=torch model-instance-id=white "
             f"batch-size=4 batch-timeout=50 threads={CPUS}")
    caps = "video/x-raw,format=RGB,width=64,height=48,framerate=30/1"
    runs = run_together({
        "white": f"videotestsrc pattern=white num-buffers=30 ! {caps} ! tensor_convert ! "
                 f"{infer} ! appsink name=sink",
        "bars": f"videotestsrc pattern=smpte num-buffers=60 ! {caps} ! tensor_convert ! "
                f"{infer} ! appsink name=sink",
    })
    assert "a white frame" in runs["white"].result.error
    assert runs["bars"].result.ok, runs["bars"].result.error
    alone = run_pipeline(f"videotestsrc pattern=smpte num-buffers=60 ! {caps} ! tensor_convert "
                         f"! pytorch_tensor_inference model={model} engine=torch ! "
                         "appsink name=sink")
    assert len(runs["bars"].outputs) == 60
    for a, b in zip(runs["bars"].outputs, alone.outputs, strict=True):
        assert a.pts == b.pts and np.array_equal(a.arrays[0], b.arrays[0])


class Means(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(1, 2))


@pytest.mark.serial
def test_a_slow_stream_does_not_hold_a_fast_one_back(tmp_path):
    """A live camera at 10 fps and a file stream share an instance: the file's 300 frames
    are done before the camera's 30th frame (held to the camera's pace they would take 30 s)."""
    model = tmp_path / "means.ts"
    torch.jit.save(torch.jit.script(Means()), model)
    infer = (f"pytorch_tensor_inference model={model} engine=torch model-instance-id=pace "
             "batch-size=2")
    caps = "video/x-raw,format=RGB,width=64,height=48"

    def stamp(buf, caps):
        return time.monotonic()

    runs = run_together({
        "camera": f"videotestsrc is-live=true num-buffers=50 ! {caps},framerate=10/1 ! "
                  f"tensor_convert ! {infer} ! appsink name=sink",
        "file": f"videotestsrc num-buffers=300 ! {caps},framerate=30/1 ! tensor_convert ! "
                f"{infer} ! appsink name=sink",
    }, receive=stamp)
    camera, file = runs["camera"], runs["file"]
    assert camera.result.ok and file.result.ok
    assert len(camera.outputs) == 50 and len(file.outputs) == 300
    assert file.outputs[-1] < camera.outputs[29]
