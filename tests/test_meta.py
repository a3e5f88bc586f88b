"""Results metadata: written on real frames, read back after the elements users put after
inference, and mirrored as standard GstVideoRegionOfInterestMeta."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import steady_growth_mb
from tests.results_helpers import ROI_API, read_rois, run_results
from torchstream.errors import TorchstreamError
from torchstream.gst import Gst, GstVideo
from torchstream.gst.meta import (
    RESULTS_META,
    TENSORS_META,
    add_classification,
    add_region,
    attach_tensors_record,
    clear_results,
    read_custom_meta,
    read_results,
    read_tensors_record,
    write_results,
)
from torchstream.results.data import (
    Classification,
    FrameResults,
    ModelRecord,
    Region,
    TensorsRecord,
)

W, H = 640, 272  # bikes.mp4


def results_for(index: int) -> FrameResults:
    """Different results per frame, with values that do not print short (float32 origins,
    non-ASCII and spaced labels, nested classifications, a parent link)."""
    rng = np.random.default_rng(index)
    corners = np.sort(rng.random((3, 2, 2)).astype(np.float32), axis=1)
    regions = []
    for i, ((x0, y0), (x1, y1)) in enumerate(corners):  # sorted: min corner first
        regions.append(Region(
            float(x0), float(y0), float(x1), float(y1),
            label=["car", "person", "traffic light"][i], label_id=[3, 1, 10][i],
            confidence=float(np.float32(rng.random())), region_id=10 * index + i,
            parent_id=None if i == 0 else 10 * index,
            classifications=[Classification("color", "rouge foncé", 7 + i, 1 / (3 + i))]
            if i < 2 else [],
        ))
    return FrameResults(
        regions=regions,
        classifications=[Classification("classification", "sulphur-crested cockatoo", 89,
                                        float(np.float32(0.85 + index / 1000))),
                         Classification("scene", "street", index, math.pi / 10)],
        models=[ModelRecord("torchvision.models.mobilenet_v2", ("output",)),
                ModelRecord("detector.pt2", ("boxes", "labels", "scores"))],
    )


def write_per_frame(buf, index):
    write_results(buf, results_for(index), W, H)


def test_results_survive_videoconvert_videoscale_queue_and_tee(bikes_frames):
    frames = bikes_frames[:5]
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! videoscale ! "
        "video/x-raw,format=I420,width=320,height=136 ! queue ! tee name=t "
        "t. ! queue ! appsink name=a  t. ! queue ! videoconvert ! video/x-raw,format=BGRx ! "
        "appsink name=b",
        frames, sinks=("a", "b"), writers={"w": write_per_frame},
    )
    assert run.result.ok, run.error
    for name in ("a", "b"):
        received = run.per_sink[name]
        assert len(received) == len(frames)
        for i, got in enumerate(received):
            assert got.pts == i * Gst.SECOND // 25
            assert got.results == results_for(i)  # every field, floats bit for bit
            # the ROI mirror went through videoscale: same ids and labels, box halved
            want = results_for(i).regions
            assert [(r.id, r.roi_type, r.parent_id) for r in got.rois] == [
                (r.region_id, r.label, -1 if r.parent_id is None else r.parent_id)
                for r in want]
            for roi, region in zip(got.rois, want, strict=True):
                x, y, w, h = region.pixels(W, H)
                assert abs(roi.x - x / 2) <= 1 and abs(roi.y - y / 2) <= 1
                assert abs(roi.w - w / 2) <= 1 and abs(roi.h - h / 2) <= 1
    # the frames themselves were converted, not replaced
    assert run.per_sink["a"][0].arrays[0].size == 320 * 136 * 3 // 2
    assert run.per_sink["b"][0].arrays[0].size == 320 * 136 * 4


def test_roi_mirror_is_readable_with_the_standard_api(bikes_frames):
    """No converter in between: ROI params travel too (videoconvert/videoscale drop them)."""
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! queue ! tee name=t ! queue ! "
        "appsink name=sink",
        bikes_frames[:3], writers={"w": write_per_frame}, param_names=("detection", "color"),
    )
    assert run.result.ok, run.error
    for i, got in enumerate(run.per_sink["sink"]):
        want = results_for(i).regions
        assert len(got.rois) == len(want) == 3
        for roi, region in zip(got.rois, want, strict=True):
            assert roi.roi_type == region.label and roi.id == region.region_id
            x0, y0 = round(region.x_min * W), round(region.y_min * H)
            x1, y1 = round(region.x_max * W), round(region.y_max * H)
            assert (roi.x, roi.y, roi.w, roi.h) == (x0, y0, x1 - x0, y1 - y0)
            detection = roi.params["detection"]
            assert detection == {
                "x_min": region.x_min, "y_min": region.y_min, "x_max": region.x_max,
                "y_max": region.y_max, "confidence": region.confidence,
                "label_id": region.label_id, "label": region.label,
            }
            if region.classifications:
                c = region.classifications[0]
                assert roi.params["color"] == {"label": c.label, "label_id": c.label_id,
                                               "confidence": c.confidence}
            else:
                assert "color" not in roi.params


def new_buffer() -> Gst.Buffer:
    return Gst.Buffer.new_allocate(None, W * H * 3, None)


def n_rois(buf) -> int:
    return buf.get_n_meta(ROI_API)


def test_writing_replaces_results_and_own_rois_but_keeps_foreign_rois():
    buf = new_buffer()
    foreign = GstVideo.buffer_add_video_region_of_interest_meta(buf, "face", 5, 6, 7, 8)
    foreign.id = 0  # same id as one of ours below: told apart by its label
    write_results(buf, results_for(0), W, H)
    assert n_rois(buf) == 4
    write_results(buf, results_for(0), W, H)
    assert n_rois(buf) == 4  # replaced, not duplicated
    second = results_for(1)
    write_results(buf, second, 320, 136)
    assert read_results(buf) == second
    assert n_rois(buf) == 4
    rois = read_rois(buf, [r.region_id for r in second.regions])
    assert [(r.x, r.w) for r in rois] == [r.pixels(320, 136)[0:3:2] for r in second.regions]
    face = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)
    assert (face.x, face.y, face.w, face.h) == (5, 6, 7, 8)
    clear_results(buf)
    assert read_results(buf) == FrameResults() and not read_results(buf)
    assert read_custom_meta(buf, RESULTS_META) is None
    assert n_rois(buf) == 1  # the foreign one


def test_without_frame_size_mirrors_of_remaining_regions_are_kept():
    buf = new_buffer()
    results = results_for(2)
    write_results(buf, results, W, H)
    before = read_rois(buf, [20, 21, 22])
    results.regions.pop(1)
    results.regions[0].label_id = 99  # same id and label: its mirror stays as it was
    write_results(buf, results)
    assert read_results(buf) == results
    assert n_rois(buf) == 2
    after = read_rois(buf, [20, 21, 22])
    assert [r.id for r in after] == [20, 22]
    assert after[0] == before[0] and after[1] == before[2]


def test_frame_size_from_the_video_meta():
    buf = new_buffer()
    GstVideo.buffer_add_video_meta(buf, GstVideo.VideoFrameFlags.NONE,
                                   GstVideo.VideoFormat.RGB, W, H)
    write_results(buf, results_for(3))
    assert n_rois(buf) == 3
    roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 30)
    assert (roi.x, roi.y, roi.w, roi.h) == results_for(3).regions[0].pixels(W, H)


def test_convenience_writers_accumulate():
    buf = new_buffer()
    assert read_results(buf) == FrameResults()
    model = ModelRecord("m", ("logits",))
    add_classification(buf, Classification("classification", "cat", 281, 0.7), model)
    add_classification(buf, Classification("scene", "indoor", 3, 0.6), model)
    add_classification(buf, Classification("classification", "tabby", 282, 0.8), model)
    region = Region(0.25, 0.5, 0.75, 1.0, "cat", 17, 0.9, region_id=0)
    region.set_classification(Classification("color", "grey", 1, 0.4))
    region.set_classification(Classification("color", "brown", 2, 0.5))
    assert region.classifications == [Classification("color", "brown", 2, 0.5)]
    add_region(buf, region, W, H)
    results = read_results(buf)
    assert results.classifications == [Classification("classification", "tabby", 282, 0.8),
                                       Classification("scene", "indoor", 3, 0.6)]
    assert results.models == [model]
    assert results.regions == [region] and results.region(0) == region
    assert results.next_region_id() == 1
    assert results.classification("scene").label == "indoor"
    assert n_rois(buf) == 1
    roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)
    assert (roi.x, roi.y, roi.w, roi.h) == (160, 136, 320, 136)
    with pytest.raises(TorchstreamError, match="region id 0 is already used"):
        add_region(buf, region, W, H)


@pytest.mark.parametrize(("region", "message"), [
    (Region(0.5, 0.1, 0.4, 0.2, "x", 1, 0.5, 0), "not a normalised box"),
    (Region(-0.01, 0.1, 0.4, 0.2, "x", 1, 0.5, 0), "not a normalised box"),
    (Region(0.1, 0.1, 1.2, 0.2, "x", 1, 0.5, 0), "not a normalised box"),
    (Region(float("nan"), 0.1, 0.4, 0.2, "x", 1, 0.5, 0), "x_min of region 0 is not a finite"),
    (Region(0.1, 0.1, 0.4, 0.2, "x", 1, float("inf"), 0), "confidence of region 0"),
])
def test_invalid_results_are_refused_and_leave_the_buffer_as_it_was(region, message):
    buf = new_buffer()
    write_results(buf, results_for(4), W, H)
    with pytest.raises(TorchstreamError, match=message):
        write_results(buf, FrameResults(regions=[region]), W, H)
    assert read_results(buf) == results_for(4) and n_rois(buf) == 3
    duplicate = results_for(4)
    duplicate.regions[1].region_id = duplicate.regions[0].region_id
    with pytest.raises(TorchstreamError, match=r"region ids \[40\] are used more than once"):
        write_results(buf, duplicate, W, H)
    assert read_results(buf) == results_for(4)


def test_a_shared_buffer_is_refused_with_a_clear_error():
    import ctypes

    gst = ctypes.CDLL("libgstreamer-1.0.so.0")
    gst.gst_mini_object_ref.restype = ctypes.c_void_p
    gst.gst_mini_object_ref.argtypes = gst.gst_mini_object_unref.argtypes = [ctypes.c_void_p]
    buf = new_buffer()
    write_results(buf, results_for(6), W, H)
    gst.gst_mini_object_ref(hash(buf))  # a second owner, as after a tee
    try:
        with pytest.raises(TorchstreamError, match="only be written on a writable buffer"):
            write_results(buf, results_for(7), W, H)
        with pytest.raises(TorchstreamError, match="writable"):
            clear_results(buf)
        assert read_results(buf) == results_for(6)  # reading needs no ownership
    finally:
        gst.gst_mini_object_unref(hash(buf))
    assert n_rois(buf) == 3


def test_results_and_tensors_record_live_side_by_side():
    buf = new_buffer()
    record = TensorsRecord("torchvision.models.mobilenet_v2", ("output",), ("float32",), "1000",
                           ("float32",), "224:224:3")
    attach_tensors_record(buf, record)
    write_results(buf, results_for(5), W, H)
    attach_tensors_record(buf, record)
    assert read_tensors_record(buf) == record
    assert read_results(buf) == results_for(5)
    for name in (RESULTS_META, TENSORS_META):  # one of each, however often rewritten
        assert buf.get_n_meta(Gst.Meta.get_info(name).api) == 1


def test_region_pixels_round_and_clip():
    r = Region(0.0, 0.0, 1.0, 1.0, "all", 0, 1.0, 0)
    assert r.pixels(W, H) == (0, 0, W, H)
    r = Region(0.1, 0.25, 0.1, 0.5, "thin", 0, 1.0, 0)
    assert r.pixels(W, H) == (64, 68, 0, 68)


@pytest.mark.slow
def test_rewriting_results_keeps_memory_flat():
    results = [results_for(i) for i in range(4)]

    def churn(n: int) -> None:
        for _ in range(n // 10):
            buf = new_buffer()
            for i in range(10):  # rewritten on one buffer, then dropped
                write_results(buf, results[i % 4], W, H)
                add_classification(buf, Classification("scene", "street", i, 0.5))
                read_results(buf)
            clear_results(buf)

    grown = steady_growth_mb(lambda: churn(5000))
    assert grown < 0.5, grown  # less than 100 bytes per write
