"""meta_aggregate on real frames: each frame leaves once, in order, untouched, with the results
of its own inference buffer (matched by running time), or with none when the inference branch
skipped it; slow branches, skipped frames and EOS never hold a frame back for good."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.helpers import _padded_rows, on_samples, resident_mb
from tests.results_helpers import run_results
from torchstream.caps import config_from_fields
from torchstream.gst import Gst, GstVideo
from torchstream.gst.buffers import MappedTensors
from torchstream.gst.meta import (
    add_classification,
    add_region,
    read_results,
    read_tensor_data,
    read_tensors_record,
    write_results,
)
from torchstream.gst.pipeline import run_to_end
from torchstream.results.aggregate import ResultsMatcher, merge_results
from torchstream.results.data import Classification, FrameResults, ModelRecord, Region

SINK = "appsink name=sink"
FRAMES_QUEUE = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0"


def label_index(buf: Gst.Buffer, index: int) -> None:
    """What the tests' inference branch finds in frame ``index``."""
    add_classification(buf, Classification("index", f"frame {index}", index, 1.0),
                       ModelRecord("test-model", ("out",)))


def label_except(dropped: set[int]):
    """Label every frame, and flag those the inference branch then drops (``identity
    drop-buffer-flags=droppable`` after the writer)."""
    def write(buf, index):
        label_index(buf, index)
        if index in dropped:
            buf.set_flags(Gst.BufferFlags.DROPPABLE)

    return write


DROP = "identity drop-buffer-flags=droppable"


def check_frames(outputs, frames, fps=25):
    """Every frame once, in order, its pixels and caps untouched."""
    assert [o.pts for o in outputs] == [i * Gst.SECOND // fps for i in range(len(frames))]
    for out, frame in zip(outputs, frames, strict=True):
        assert out.arrays[0].tobytes() == _padded_rows(frame)
        assert out.caps.startswith("video/x-raw, format=(string)RGB, width=(int)640, "
                                   "height=(int)272")


def labelled_index(out) -> int | None:
    c = out.results.classification("index")
    if c is None:
        return None
    assert c.label == f"frame {c.label_id}" and c.confidence == 1.0
    return c.label_id


def test_each_frame_gets_its_own_result_from_a_slower_branch(bikes_frames):
    run = run_results(
        f"appsrc name=src ! tee name=t ! {FRAMES_QUEUE} ! meta_aggregate name=agg ! {SINK} "
        "t. ! queue max-size-buffers=2 ! identity sleep-time=30000 ! "
        "test_meta_writer name=w ! agg.tensor_0 "
        "t. ! queue ! appsink name=raw",
        bikes_frames, sinks=("sink", "raw"), writers={"w": label_index}, timeout=30,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    check_frames(outputs, bikes_frames)
    assert [labelled_index(o) for o in outputs] == list(range(len(bikes_frames)))
    for out in outputs:
        assert out.results.models == [ModelRecord("test-model", ("out",))]
        assert out.results.regions == []
    # the frames were shared with the tee's other branches: results were added to a copy
    assert len(run.per_sink["raw"]) == len(bikes_frames)
    assert not any(r.results for r in run.per_sink["raw"])


def test_frames_the_inference_branch_dropped_pass_without_results(bikes_frames):
    dropped = {1, 2, 3, 5, 8, 9}  # a run of three, singles, and the last two
    run = run_results(
        f"appsrc name=src ! tee name=t ! {FRAMES_QUEUE} ! meta_aggregate name=agg ! {SINK} "
        f"t. ! queue ! test_meta_writer name=w ! {DROP} ! agg.tensor_0",
        bikes_frames, writers={"w": label_except(dropped)}, timeout=30,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    check_frames(outputs, bikes_frames)
    expected = [None if i in dropped else i for i in range(len(bikes_frames))]
    assert [labelled_index(o) for o in outputs] == expected
    assert [bool(o.results) for o in outputs] == [i not in dropped for i in range(10)]


def test_videorate_in_the_inference_branch(bikes_frames):
    """The inference branch runs at 5 fps of a 25 fps video: one frame in five gets results."""
    passed: list[int] = []

    def write(buf, index):
        passed.append(buf.pts)
        label_index(buf, int(buf.pts * 25 // Gst.SECOND))

    run = run_results(
        f"appsrc name=src ! tee name=t ! {FRAMES_QUEUE} ! meta_aggregate name=agg ! {SINK} "
        "t. ! queue ! videorate drop-only=true max-rate=5 ! test_meta_writer name=w ! "
        "agg.tensor_0",
        bikes_frames, writers={"w": write}, timeout=30,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    check_frames(outputs, bikes_frames)
    labelled = [i for i, o in enumerate(outputs) if labelled_index(o) is not None]
    assert 2 <= len(labelled) <= 3 and len(labelled) == len(passed)
    assert [outputs[i].pts for i in labelled] == passed
    assert all(labelled_index(outputs[i]) == i for i in labelled)


def test_eos_releases_frames_still_waiting(bikes_frames):
    """After frame 3 the inference branch produces nothing: frames 4.. wait for a later result
    that never comes, and leave at EOS without results."""
    run = run_results(
        f"appsrc name=src ! tee name=t ! {FRAMES_QUEUE} ! meta_aggregate name=agg ! {SINK} "
        f"t. ! queue ! test_meta_writer name=w ! {DROP} ! agg.tensor_0",
        bikes_frames, writers={"w": label_except(set(range(4, 10)))}, timeout=30,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    check_frames(outputs, bikes_frames)
    assert [labelled_index(o) for o in outputs] == [0, 1, 2, 3] + [None] * 6


def test_two_inference_branches_and_results_already_on_the_frame(bikes_frames):
    """The branches' buffers carry the frame's own region (as inference buffers keep their
    input metadata): it is not duplicated, it gains the branches' classifications of it, and
    new regions of both branches that claim the same id are renumbered."""
    def upstream(buf, index):
        add_region(buf, Region(0.1, 0.2, 0.5, 0.6, "car", 3, 0.9, 0), 640, 272)

    def first(buf, index):
        label_index(buf, index)
        add_region(buf, Region(0.5, 0.5, 1.0, 1.0, "bicycle", 2, 0.7, 1), 640, 272)

    def second(buf, index):
        results = read_results(buf)
        results.set_classification(Classification("parity", "odd" if index % 2 else "even",
                                                   index % 2, 0.5))
        results.region(0).set_classification(Classification("color", "red", 5, 0.6))
        results.regions.append(Region(0.0, 0.0, 0.25, 0.5, "person", 1, 0.8, 1))
        write_results(buf, results, 640, 272)

    run = run_results(
        "appsrc name=src ! test_meta_writer name=up ! tee name=t ! "
        f"{FRAMES_QUEUE} ! meta_aggregate name=agg ! {SINK} "
        "t. ! queue ! test_meta_writer name=w ! agg.tensor_0 "
        "t. ! queue ! identity sleep-time=10000 ! test_meta_writer name=w2 ! agg.tensor_1",
        bikes_frames[:6], writers={"up": upstream, "w": first, "w2": second},
        timeout=30,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    check_frames(outputs, bikes_frames[:6])
    for i, out in enumerate(outputs):
        r = out.results
        assert labelled_index(out) == i
        assert r.classification("parity").label_id == i % 2
        assert [(g.region_id, g.label) for g in r.regions] == [
            (0, "car"), (1, "bicycle"), (2, "person")]
        assert r.regions[0].classifications == [Classification("color", "red", 5, 0.6)]
        assert sorted((x.id, x.roi_type, x.x, x.y, x.w, x.h) for x in out.rois) == [
            (0, "car", 64, 54, 256, 109), (1, "bicycle", 320, 136, 320, 136),
            (2, "person", 0, 0, 160, 136)]


def test_tensor_pads_are_named_after_their_template():
    agg = Gst.ElementFactory.make("meta_aggregate", None)
    first = agg.request_pad_simple("tensor_%u")
    second = agg.request_pad_simple("tensor_%u")
    assert (first.get_name(), second.get_name()) == ("tensor_0", "tensor_1")
    assert agg.get_static_pad("sink") is not None


def test_matcher_and_merge_rules():
    m = ResultsMatcher()
    m.add_stream("a")
    assert m.waiting_on(10) == ["a"]
    m.push("a", 5, FrameResults())  # older than the frame: dropped
    m.push("a", 10, FrameResults(classifications=[Classification("x", "y", 1, 0.5)]))
    assert m.waiting_on(10) == [] and m.dropped == 1
    assert len(m.take(10)) == 1
    m.set_state("a", eos=False, head=30)
    assert m.waiting_on(20) == [] and m.take(20) == []  # skipped: a later result is queued
    assert m.waiting_on(30) == ["a"]  # ... but not yet taken
    m.set_state("a", eos=True, head=None)
    assert m.waiting_on(40) == [] and m.take(None) == []
    base = FrameResults(regions=[Region(0, 0, 1, 1, "a", 0, 1.0, 0)])
    other = FrameResults(regions=[Region(0, 0, 0.5, 0.5, "b", 1, 1.0, 0),
                                  Region(0, 0, 0.2, 0.2, "c", 2, 1.0, 1, parent_id=0)])
    merged = merge_results(base, [other])
    assert [(r.region_id, r.parent_id) for r in merged.regions] == [(0, None), (2, None),
                                                                    (1, 2)]
    assert merge_results(base, [base, base]).regions == base.regions


def kept_tensors(store: list):
    """A writer function (used only to read) that maps the tensors kept on each frame."""
    def read(buf, index):
        kept = []
        for item in read_tensor_data(buf):
            config = config_from_fields(item.caps.get_structure(0))
            with MappedTensors(item.buffer, config) as arrays:
                kept.append((item.source, item.buffer.pts, [a.copy() for a in arrays],
                             read_tensors_record(item.buffer)))
        store.append(kept)

    return read


@pytest.mark.parametrize("attach", [True, False])
def test_attach_tensor_data_keeps_the_tensors_on_the_frame(bikes_frames, attach):
    """The branch turns each frame into a [H,W,C] uint8 tensor: the frame carries that very
    tensor, through videoconvert, and only when attach-tensor-data is on."""
    frames = bikes_frames[:4]
    store: list = []
    run = run_results(
        f"appsrc name=src ! tee name=t ! {FRAMES_QUEUE} ! "
        f"meta_aggregate name=agg attach-tensor-data={str(attach).lower()} ! "
        f"videoconvert ! video/x-raw,format=BGRx ! test_meta_writer name=probe ! {SINK} "
        "t. ! queue ! tensor_convert ! test_meta_writer name=w ! agg.tensor_0",
        frames, writers={"w": label_index, "probe": kept_tensors(store)}, timeout=30,
    )
    assert run.result.ok, run.error
    assert [labelled_index(o) for o in run.per_sink["sink"]] == [0, 1, 2, 3]
    assert len(store) == len(frames)
    for i, (kept, frame) in enumerate(zip(store, frames, strict=True)):
        if not attach:
            assert kept == []
            continue
        [(source, pts, arrays, record)] = kept
        assert record is None  # tensor_convert writes no tensors record
        assert source == "tensor_0" and pts == i * Gst.SECOND // 25
        assert arrays[0].shape == (272, 640, 3) and np.array_equal(arrays[0], frame)


def test_frames_nobody_else_holds_are_not_copied():
    """Frames and tensors from two sources (no tee): each frame is written in place, and each
    gets the tensor buffer of the same timestamp."""
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=8 pattern=ball ! video/x-raw,format=RGB,width=64,height=48,"
        f"framerate=25/1 ! meta_aggregate name=agg ! {SINK} "
        "videotestsrc num-buffers=8 pattern=snow ! video/x-raw,format=RGB,width=32,height=16,"
        "framerate=25/1 ! tensor_convert ! test_meta_writer name=w ! agg.tensor_0"
    )
    pipeline.get_by_name("w").write = label_index
    received = []
    on_samples(pipeline, "sink",
               lambda buf, caps: received.append((buf.pts, labelled_index_of(buf))))
    agg = pipeline.get_by_name("agg")
    result = run_to_end(pipeline, 30)
    assert result.ok, result.error
    assert received == [(i * Gst.SECOND // 25, i) for i in range(8)]
    assert agg.counts == (8, 0)  # frames out, frames copied


def labelled_index_of(buf: Gst.Buffer) -> int | None:
    c = read_results(buf).classification("index")
    return None if c is None else c.label_id


def test_frames_and_kept_tensors_are_freed():
    """800 frames of 320x240 (230 kB each) with results and kept tensors: a frame or tensor
    buffer kept alive by a reference would add 180 MB."""
    def run(n: int) -> None:
        pipeline = Gst.parse_launch(
            f"videotestsrc num-buffers={n} ! video/x-raw,format=RGB,width=320,height=240,"
            f"framerate=25/1 ! tee name=t ! queue ! meta_aggregate name=agg ! fakesink "
            "t. ! queue ! tensor_convert ! test_meta_writer name=w ! agg.tensor_0")
        pipeline.get_by_name("w").write = label_index
        agg = pipeline.get_by_name("agg")
        result = run_to_end(pipeline, 30)
        assert result.ok, result.error
        assert agg.counts[0] == n

    run(200)
    before = resident_mb()
    run(800)
    grown = resident_mb() - before
    assert grown < 20, grown


def test_a_frame_size_change_is_passed_on():
    """The frames change size mid-stream: the output caps follow, and each frame's region
    mirror is sized for its own frame."""
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=12 ! capsfilter name=cf caps=video/x-raw,format=RGB,"
        "width=64,height=48,framerate=25/1 ! tee name=t ! queue ! meta_aggregate name=agg ! "
        f"{SINK} t. ! queue ! test_meta_writer name=w ! agg.tensor_0")
    cf = pipeline.get_by_name("cf")

    def write(buf, index):
        add_region(buf, Region(0.0, 0.0, 0.5, 0.5, "half", 0, 1.0, 0), 1, 1)

    count = []

    def change_size(pad, info):
        count.append(1)
        if len(count) == 5:  # the source produces the next frames at the new size
            cf.set_property("caps", Gst.Caps.from_string(
                "video/x-raw,format=RGB,width=32,height=24,framerate=25/1"))
        return Gst.PadProbeReturn.OK

    cf.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, change_size)
    pipeline.get_by_name("w").write = write
    received = []

    def receive(buf, caps):
        s = caps.get_structure(0)
        roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)
        received.append((s.get_value("width"), s.get_value("height"), buf.get_size(),
                         (roi.w, roi.h)))

    on_samples(pipeline, "sink", receive)
    result = run_to_end(pipeline, 30)
    assert result.ok, result.error
    assert len(received) == 12
    sizes = [r[:2] for r in received]
    assert sizes[0] == (64, 48) and sizes[-1] == (32, 24)
    assert sizes == sorted(sizes, reverse=True)  # one change, big then small
    for width, height, size, roi in received:
        assert size == width * height * 3
        assert roi == (width // 2, height // 2)


def test_live_source_frames_wait_for_a_slow_branch_without_spinning():
    """A live 25 fps source and a branch that takes 60 ms a frame: every frame still gets its
    own result, and waiting costs no CPU (no polling loop)."""
    pipeline = Gst.parse_launch(
        "videotestsrc is-live=true num-buffers=12 ! video/x-raw,format=RGB,width=64,height=48,"
        f"framerate=25/1 ! tee name=t ! queue ! meta_aggregate name=agg ! {SINK} "
        "t. ! queue ! identity sleep-time=60000 ! test_meta_writer name=w ! agg.tensor_0")
    pipeline.get_by_name("w").write = label_index
    received = []
    on_samples(pipeline, "sink", lambda buf, caps: received.append(labelled_index_of(buf)),
               sync=None)
    cpu = time.process_time()
    result = run_to_end(pipeline, 30)
    cpu = time.process_time() - cpu
    assert result.ok, result.error
    assert received == list(range(12))
    assert result.seconds > 0.6 and cpu < 0.5 * result.seconds, (cpu, result.seconds)


def test_a_flushing_seek_restarts_matching():
    """A real video seeked mid-stream (flushing, with a stop): after the seek, every frame
    carries the result made from itself (results are keyed by the frame's pts here)."""
    from tests.conftest import BIKES

    pipeline = Gst.parse_launch(
        f"filesrc location={BIKES} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! "
        f"tee name=t ! queue ! meta_aggregate name=agg ! {SINK} "
        "t. ! queue ! identity sleep-time=5000 ! test_meta_writer name=w ! agg.tensor_0")

    def by_pts(buf, index):
        add_classification(buf, Classification("pts", str(buf.pts), index, 1.0))

    pipeline.get_by_name("w").write = by_pts
    received = []

    def receive(buf, caps):
        c = read_results(buf).classification("pts")
        received.append((buf.pts, None if c is None else int(c.label)))

    on_samples(pipeline, "sink", receive)
    try:
        pipeline.set_state(Gst.State.PAUSED)
        assert pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        assert pipeline.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE,
                             Gst.SeekType.SET, 4 * Gst.SECOND, Gst.SeekType.SET,
                             5 * Gst.SECOND)
        assert pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        received.clear()  # what prerolled before and after the seek
        result = run_to_end(pipeline, 30)
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert result.ok, result.error
    assert 20 <= len(received) <= 30, len(received)
    pts = [p for p, _ in received]
    assert pts == sorted(pts) and 4 * Gst.SECOND - Gst.SECOND // 10 <= pts[0]
    assert all(label == p for p, label in received), received
