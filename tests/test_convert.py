"""tensor_convert: video frames -> uint8 tensors, pixel for pixel, with timestamps and caps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.helpers import run_pipeline
from torchstream.caps import parse_caps_string
from torchstream.gst import GLib, Gst, GstVideo
from torchstream.preprocess.video import tensor_to_video_caps, video_to_tensor_caps

FPS = 25


def expected_tensor(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """What tensor_convert must give for ``rgb`` converted to ``fmt`` by videoconvert."""
    if fmt == "RGB":
        return rgb
    if fmt == "BGR":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt in ("RGBx", "RGBA"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)  # alpha / padding byte 255
    if fmt in ("BGRx", "BGRA"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    if fmt == "RGBP":
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))
    if fmt == "BGRP":
        return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).transpose(2, 0, 1))
    raise AssertionError(fmt)


def convert(frames: list[np.ndarray], fmt: str, fps: int = FPS):
    return run_pipeline(
        f"appsrc name=src ! videoconvert ! video/x-raw,format={fmt} ! tensor_convert ! "
        "appsink name=sink",
        frames, fmt="RGB", fps=fps, timeout=30,
    )


@pytest.fixture(scope="module")
def odd_frames(bikes_frames):
    """Real frames 321x241: RGB/BGR rows (963 bytes) and planes (321) get padded to 4 bytes."""
    return [np.ascontiguousarray(f[15:256, 100:421]) for f in bikes_frames[:4]]


ALL_FORMATS = ["RGB", "BGR", "RGBx", "BGRx", "RGBA", "BGRA", "RGBP", "BGRP"]
PLANAR = {"RGBP", "BGRP"}


def check_frames(run, frames, fmt):
    assert run.result.ok, run.error
    assert len(run.outputs) == len(frames)
    h, w = frames[0].shape[:2]
    channels = expected_tensor(frames[0], fmt).shape[0 if fmt in PLANAR else 2]
    shape = (channels, h, w) if fmt in PLANAR else (h, w, channels)
    dims = f"{w}:{h}:{channels}" if fmt in PLANAR else f"{channels}:{w}:{h}"
    for out, frame in zip(run.outputs, frames, strict=True):
        config = parse_caps_string(out.caps)
        assert config.types_string == "uint8"
        assert config.dimensions_string == dims
        (tensor,) = out.arrays
        assert tensor.dtype == np.uint8 and tensor.shape == shape
        assert np.array_equal(tensor, expected_tensor(frame, fmt))


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_tensor_is_the_frame(bikes_frames, fmt):
    frames = bikes_frames[:4]
    check_frames(convert(frames, fmt), frames, fmt)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_padded_rows_of_odd_widths(odd_frames, fmt):
    info = GstVideo.VideoInfo.new_from_caps(
        Gst.Caps.from_string(f"video/x-raw,format={fmt},width=321,height=241"))
    channels = 3 if fmt in PLANAR else int(info.finfo.pixel_stride[0])
    row = 321 if fmt in PLANAR else 321 * channels
    if channels == 3:  # the case under test: GStreamer pads these rows
        assert info.stride[0] > row
    check_frames(convert(odd_frames, fmt), odd_frames, fmt)


def test_the_picture_is_not_a_constant(bikes_frames):
    """Guards the equality tests: the frames differ from each other and have texture."""
    a, b = bikes_frames[0], bikes_frames[-1]
    assert a.std() > 20 and np.abs(a.astype(int) - b).mean() > 1


@pytest.mark.parametrize("fmt", ["RGB", "RGBP", "BGRx"])
def test_timestamps_and_frame_count(bikes_frames, fmt):
    run = convert(bikes_frames, fmt, fps=10)
    assert run.result.ok, run.error
    assert [o.pts for o in run.outputs] == [i * Gst.SECOND // 10 for i in range(len(bikes_frames))]


def push_and_pull(description: str, frames: list[np.ndarray], timeout: float = 10,
                  setup=None):
    """Feed frames (with pts, duration, offset and an ROI meta) and keep the whole out buffers.

    ``setup(pipeline)`` runs before the pipeline starts (to add probes)."""
    pipeline = Gst.parse_launch(description)
    if setup is not None:
        setup(pipeline)
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    h, w = frames[0].shape[:2]
    src.set_property("caps", Gst.Caps.from_string(
        f"video/x-raw,format=RGBx,width={w},height={h},framerate={FPS}/1"))
    src.set_property("format", Gst.Format.TIME)
    pipeline.set_state(Gst.State.PLAYING)
    out = []
    try:
        for i, frame in enumerate(frames):
            rgbx = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
            buf = Gst.Buffer.new_wrapped(rgbx.tobytes())
            buf.pts, buf.dts = i * Gst.SECOND // FPS, Gst.CLOCK_TIME_NONE
            buf.duration = Gst.SECOND // FPS
            buf.offset, buf.offset_end = i, i + 1
            GstVideo.buffer_add_video_region_of_interest_meta(buf, "car", i, 2 * i, 10, 20)
            assert src.emit("push-buffer", buf) == Gst.FlowReturn.OK
        src.emit("end-of-stream")
        while len(out) < len(frames):
            sample = sink.emit("try-pull-sample", int(timeout * Gst.SECOND))
            assert sample is not None, f"only {len(out)} of {len(frames)} buffers came out"
            out.append(sample.get_buffer())
    finally:
        pipeline.set_state(Gst.State.NULL)
    return out


@pytest.mark.parametrize("fmt", ["RGBx", "RGB", "RGBP"])
def test_buffer_timing_and_metadata_are_kept(odd_frames, fmt):
    """Both paths (shared memory for unpadded rows, a copy for padded ones) keep pts, duration,
    offsets and metadata of the frame."""
    buffers = push_and_pull(
        f"appsrc name=src ! videoconvert ! video/x-raw,format={fmt} ! tensor_convert ! "
        "appsink name=sink sync=false",
        odd_frames,
    )
    api = GstVideo.VideoRegionOfInterestMeta.get_info().api
    for i, buf in enumerate(buffers):
        assert buf.pts == i * Gst.SECOND // FPS
        assert buf.duration == Gst.SECOND // FPS
        assert (buf.offset, buf.offset_end) == (i, i + 1)
        assert buf.get_n_meta(api) == 1
        roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 0)  # ids start at 0
        assert (roi.x, roi.y, roi.w, roi.h) == (i, 2 * i, 10, 20)


def memory_addresses(pipeline, name: str, seen: dict[str, list[int]]) -> None:
    """Record, per pad of element ``name``, the address of each buffer's first memory."""

    def probe(pad, info):
        buf = info.get_buffer()
        ok, mapinfo = buf.peek_memory(0).map(Gst.MapFlags.READ)
        assert ok
        seen[pad.get_name()].append(np.frombuffer(mapinfo.data, np.uint8).ctypes.data)
        buf.peek_memory(0).unmap(mapinfo)
        return Gst.PadProbeReturn.OK

    element = pipeline.get_by_name(name)
    for pad_name in ("sink", "src"):
        seen[pad_name] = []
        element.get_static_pad(pad_name).add_probe(Gst.PadProbeType.BUFFER, probe)


@pytest.mark.parametrize("fmt, width, shared", [("RGBx", 321, True), ("RGBP", 320, True),
                                                ("RGB", 320, True), ("RGB", 321, False),
                                                ("RGBP", 321, False)])
def test_unpadded_frames_are_not_copied(bikes_frames, fmt, width, shared):
    frames = [np.ascontiguousarray(f[:240, :width]) for f in bikes_frames[:3]]
    seen: dict[str, list[int]] = {}
    buffers = push_and_pull(
        f"appsrc name=src ! videoconvert ! video/x-raw,format={fmt} ! tensor_convert name=tc ! "
        "appsink name=sink sync=false",
        frames, setup=lambda p: memory_addresses(p, "tc", seen),
    )
    assert len(buffers) == len(seen["sink"]) == len(seen["src"]) == 3
    assert (seen["sink"] == seen["src"]) is shared


# --- caps negotiation ----------------------------------------------------------------------


def tensor_caps(dims: str) -> str:
    return ('capsfilter caps="other/tensors,num_tensors=(uint)1,types=(string)uint8,'
            f'dimensions=(string)\\"{dims}\\""')


@pytest.mark.parametrize(
    "fmt, dims, shape",
    [("RGBP", "100:50:3", (3, 50, 100)), ("RGB", "3:100:50", (50, 100, 3)),
     ("BGRx", "4:64:48", (48, 64, 4))],
)
def test_downstream_size_request_reaches_videoscale(bikes_frames, fmt, dims, shape):
    frames = bikes_frames[:3]
    run = run_pipeline(
        f"appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format={fmt} ! "
        f"tensor_convert ! {tensor_caps(dims)} ! appsink name=sink",
        frames, timeout=30,
    )
    assert run.result.ok, run.error
    assert len(run.outputs) == len(frames)
    for out, frame in zip(run.outputs, frames, strict=True):
        assert parse_caps_string(out.caps).dimensions_string == dims
        (tensor,) = out.arrays
        assert tensor.shape == shape
        # the frame was scaled, not cropped or padded: close to OpenCV's resize of it
        h, w = (shape[1], shape[2]) if fmt in PLANAR else (shape[0], shape[1])
        small = expected_tensor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), fmt)
        diff = np.abs(tensor.astype(np.int16) - small.astype(np.int16))
        assert diff.mean() < 6, diff.mean()


def test_tensor_caps_no_video_can_give_are_refused_at_link_time():
    with pytest.raises(GLib.Error, match="link"):
        Gst.parse_launch(
            "videotestsrc ! tensor_convert ! "
            'capsfilter caps="other/tensors,types=(string)float32" ! fakesink'
        )


def test_size_mismatch_without_a_scaler_is_a_negotiation_error(bikes_frames):
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        f"{tensor_caps('100:50:3')} ! appsink name=sink",
        bikes_frames[:2], timeout=10,
    )
    assert not run.result.ok and not run.result.timed_out, run.error
    assert run.outputs == []
    assert "negotiat" in (run.error + (run.result.debug or "")).lower(), run.error


@pytest.mark.parametrize("fmt, width", [("RGBP", 320), ("RGB", 321)])
def test_short_buffer_is_an_error_not_a_read_past_its_end(fmt, width):
    pipeline = Gst.parse_launch("appsrc name=src ! tensor_convert ! appsink name=sink")
    src = pipeline.get_by_name("src")
    src.set_property("caps", Gst.Caps.from_string(
        f"video/x-raw,format={fmt},width={width},height=240,framerate=25/1"))
    src.set_property("format", Gst.Format.TIME)
    try:
        pipeline.set_state(Gst.State.PLAYING)
        buf = Gst.Buffer.new_wrapped(bytes(1000))
        buf.pts = 0
        src.emit("push-buffer", buf)
        src.emit("end-of-stream")
        msg = pipeline.get_bus().timed_pop_filtered(
            10 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)
        assert msg is not None and msg.type == Gst.MessageType.ERROR
        err, _ = msg.parse_error()
        assert "1000 bytes" in err.message
        assert pipeline.get_by_name("sink").emit("try-pull-sample", 0) is None
    finally:
        pipeline.set_state(Gst.State.NULL)


# --- the caps mapping itself ------------------------------------------------------------------


def caps_list(texts: list[str]) -> list[tuple[str, str]]:
    configs = []
    for text in texts:
        s = Gst.Caps.from_string(text).get_structure(0)
        configs.append((s.get_value("types"), s.get_value("dimensions")))
    return configs


def test_video_caps_to_tensor_caps():
    def convert(text):
        return caps_list(video_to_tensor_caps(Gst.Caps.from_string(text).get_structure(0)))

    assert convert("video/x-raw,format=RGBP,width=640,height=272") == [("uint8", "640:272:3")]
    assert convert("video/x-raw,format=BGRA,width=321,height=241") == [("uint8", "4:321:241")]
    assert sorted(convert("video/x-raw,format={RGB,RGBP,RGBx},width=8,height=6")) == [
        ("uint8", "3:8:6"), ("uint8", "4:8:6"), ("uint8", "8:6:3")]
    # no fixed size: no dimensions claimed; formats tensor_convert cannot take: nothing
    assert video_to_tensor_caps(Gst.Caps.from_string(
        "video/x-raw,format=RGB,width=[1,100],height=50").get_structure(0)) == [
        "other/tensors,num_tensors=(uint)1,types=(string)uint8"]
    assert video_to_tensor_caps(Gst.Caps.from_string(
        "video/x-raw,format=I420,width=8,height=6").get_structure(0)) == []


def test_tensor_caps_to_video_caps():
    def convert(text):
        out = Gst.Caps.new_empty()
        for t in tensor_to_video_caps(Gst.Caps.from_string(text).get_structure(0)):
            out = out.merge(Gst.Caps.from_string(t))
        return out

    planar = convert('other/tensors,types=uint8,dimensions=(string)"100:50:3"')
    assert planar.is_equal(Gst.Caps.from_string(
        "video/x-raw,format={RGBP,BGRP},width=100,height=50"))
    packed = convert('other/tensors,types=uint8,dimensions=(string)"4:100:50"')
    assert packed.is_equal(Gst.Caps.from_string(
        "video/x-raw,format={RGBA,BGRA,RGBx,BGRx},width=100,height=50"))
    assert convert('other/tensors,types=float32,dimensions=(string)"100:50:3"').is_empty()
    assert convert('other/tensors,types=uint8,dimensions=(string)"100:50:5"').is_empty()
    assert convert('other/tensors,types=uint8,dimensions=(string)"3:4,3:4"').is_empty()
    assert convert("other/tensors,types=uint8").is_equal(Gst.Caps.from_string(
        "video/x-raw,format={RGB,BGR,RGBA,BGRA,RGBx,BGRx,RGBP,BGRP}"))
