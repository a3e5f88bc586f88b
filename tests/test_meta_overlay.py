"""meta_overlay: results drawn into real frames, in the format they arrive in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import BIKES
from tests.results_helpers import run_results
from torchstream.gst import GLib, Gst, GstVideo
from torchstream.gst.meta import write_results
from torchstream.results.data import Classification, FrameResults, Region
from torchstream.results.overlay import (
    _yuv,
    auto_style,
    color_for,
    draw_on_planes,
    draw_results,
    frame_planes,
)

REPO = Path(__file__).resolve().parents[1]
W, H = 640, 272  # bikes.mp4
RESULTS = FrameResults(
    regions=[Region(0.4, 0.4, 0.7, 0.8, "car", 3, 0.91, region_id=0,
                    classifications=[Classification("color", "red", 2, 0.66)])],
    classifications=[Classification("classification", "street", 1, 0.7)],
)
BOX = RESULTS.regions[0].pixels(W, H)  # (256, 109, 192, 109)
NO_RESULTS_FRAME = 1


def write_except_one(buf, index):
    if index != NO_RESULTS_FRAME:
        write_results(buf, RESULTS, W, H)


def plane0(received) -> np.ndarray:
    """Plane 0 (packed pixels or luma) of a received frame, as rows x bytes."""
    caps = Gst.Caps.from_string(received.caps)
    info = GstVideo.VideoInfo.new_from_caps(caps)
    raw = received.arrays[0]
    row = info.width * info.finfo.pixel_stride[0]
    return np.lib.stride_tricks.as_strided(raw[info.offset[0]:], (info.height, row),
                                           (info.stride[0], 1))


# --- the drawing core, no GStreamer -----------------------------------------------------------


def test_draw_results_on_a_bgr_image(bikes_frames):
    frame = np.ascontiguousarray(bikes_frames[0][:, :, ::-1])  # RGB -> BGR
    drawn = draw_results(frame.copy(), RESULTS)
    x, y, w, h = BOX
    color = np.array(color_for(3), np.uint8)
    # 1 px lines at 640x272, exactly along the box's edges
    assert (drawn[y + 20:y + h, x] == color).all()
    assert (drawn[y + 20:y + h, x + w - 1] == color).all()
    assert (drawn[y + h - 1, x:x + w] == color).all()
    assert (drawn[y + 20:y + h - 1, x + 1:x + w - 1] == frame[y + 20:y + h - 1,
                                                                x + 1:x + w - 1]).all()
    # the label block (two lines: "car 0.91", "red 0.66") sits on the box's top edge
    above = np.nonzero((drawn[:y, x:x + w] != frame[:y, x:x + w]).any(axis=(1, 2)))[0]
    assert above.max() == y - 1 and 20 < y - above.min() < 45
    # the frame classification is at the top left, nothing else changed
    changed = (drawn != frame).any(axis=2)
    top_left = changed[:30, :120]
    assert top_left.sum() > 50
    changed[:30, :120] = False
    changed[y - 40:y + h, x:x + w] = False
    assert changed.sum() == 0


def test_sizes_follow_the_frame_size_unless_set():
    assert auto_style(640, 272) == auto_style(272, 640)
    small, large = auto_style(640, 272), auto_style(1920, 1080)
    assert (small.lines_thickness, small.font_scale, small.font_thickness) == (1, 0.4, 1)
    assert (large.lines_thickness, large.font_scale, large.font_thickness) == (4, 1.35, 2)
    assert auto_style(3840, 2160).lines_thickness == 7
    assert auto_style(640, 272, 6, 1.0, 3) == type(small)(6, 1.0, 3)
    for (w, h), thickness in (((1920, 1080), 4), ((640, 272), 1)):
        image = np.zeros((h, w, 4), np.uint8)
        draw_results(image, RESULTS)
        x, y, bw, bh = RESULTS.regions[0].pixels(w, h)
        row = image[y + bh // 2, :, :3].any(axis=1)
        assert np.nonzero(row)[0].tolist() == (list(range(x, x + thickness))
                                               + list(range(x + bw - thickness, x + bw)))
        assert (image[y + bh // 2, x, 3] == 255)  # the fourth byte is written too (alpha)
    image = np.zeros((H, W, 3), np.uint8)
    draw_results(image, RESULTS, lines_thickness=6)
    assert np.nonzero(image[BOX[1] + 80, :, :].any(axis=1))[0].tolist() == (
        list(range(256, 262)) + list(range(442, 448)))


def test_labels_grow_with_the_font_scale():
    heights = []
    for scale in (0.4, 1.0, 2.0):
        image = np.zeros((H, W, 3), np.uint8)
        draw_results(image, RESULTS, font_scale=scale)
        rows = np.nonzero(image[:BOX[1], BOX[0]:].any(axis=(1, 2)))[0]
        heights.append(BOX[1] - rows.min())
    assert heights[0] < heights[1] < heights[2]
    assert heights[2] > 2.5 * heights[0]


def test_degenerate_boxes_long_labels_and_tiny_frames():
    """Boxes on the frame's edges or of zero size, labels wider than the frame, frames of a
    few pixels: drawn clipped, never an error, in every layout."""
    regions = [
        Region(0, 0, 1, 1, "all", 1, 0.5, region_id=0),
        Region(1, 1, 1, 1, "corner", 2, 0.5, region_id=1),
        Region(0, 0, 0, 0, "origin", 3, 0.5, region_id=2),
        Region(0.5, 0.5, 0.5, 0.9, "a label much wider than the whole frame " * 3, 4, 0.5,
               region_id=3),
    ]
    results = FrameResults(regions=regions,
                           classifications=[Classification("scene", "y" * 200, 1, 0.5)])
    for h, w in ((1, 1), (2, 3), (5, 200), (8, 16), (H, W)):
        image = np.zeros((h, w, 4), np.uint8)
        draw_results(image, results)
        cw, ch = -(-w // 2), -(-h // 2)
        layouts = {
            "I420": ([0, w * h, w * h + cw * ch], [w, cw, cw], w * h + 2 * cw * ch),
            "NV12": ([0, w * h], [w, 2 * cw], w * h + 2 * cw * ch),
            "YUY2": ([0], [4 * cw], 4 * cw * h),
            "P010_10LE": ([0, 2 * w * h], [2 * w, 4 * cw], 2 * (w * h + 2 * cw * ch)),
        }
        for fmt, (offsets, strides, size) in layouts.items():
            planes = frame_planes(bytearray(size), fmt, w, h, offsets, strides)
            draw_on_planes(planes, w, h, results, auto_style(w, h))
    # at full size the whole-frame box runs along the frame's last row and column
    blue, green, red = color_for(1)
    assert (image[H - 1, W // 2, :3] == [blue, green, red]).all()
    assert (image[H // 2, W - 1, :3] == [blue, green, red]).all()


# --- the element on real frames ---------------------------------------------------------------


def overlay_run(frames, fmt: str, props: str = ""):
    """The same frames, converted to ``fmt``, to two branches: one through meta_overlay."""
    return run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! "
        f"video/x-raw,format={fmt} ! tee name=t  t. ! queue ! appsink name=ref  "
        f"t. ! queue ! meta_overlay {props} ! appsink name=out",
        frames, sinks=("ref", "out"), writers={"w": write_except_one},
    )


@pytest.mark.parametrize("fmt", ["I420", "NV12", "RGB", "BGRx"])
def test_overlay_draws_in_the_format_it_receives(bikes_frames, fmt):
    frames = bikes_frames[:4]
    run = overlay_run(frames, fmt)
    assert run.result.ok, run.error
    ref, out = run.per_sink["ref"], run.per_sink["out"]
    assert len(out) == len(ref) == len(frames)
    x, y, w, h = BOX
    blue, green, red = color_for(3)
    for i, (a, b) in enumerate(zip(ref, out, strict=True)):
        assert b.pts == a.pts == i * Gst.SECOND // 25
        s = Gst.Caps.from_string(b.caps).get_structure(0)
        assert (s.get_value("format"), s.get_value("width"), s.get_value("height")) == (
            fmt, W, H)
        if i == NO_RESULTS_FRAME:
            assert np.array_equal(a.arrays[0], b.arrays[0])  # not touched at all
            assert not b.results
            continue
        assert b.results == RESULTS  # the metadata stays on the frame
        before, after = plane0(a), plane0(b)
        per_px = after.shape[1] // W
        if fmt == "RGB":
            want = [red, green, blue]
            # the other branch of the tee still sees the original pixels
            assert np.array_equal(before.reshape(H, W, 3), frames[i])
        elif fmt == "BGRx":
            want = [blue, green, red, 255]
        else:
            want = [_yuv(color_for(3))["Y"]]
        painted = (after.reshape(H, W, per_px) == want).all(axis=2)
        # every pixel of the box's left, right and bottom edges has the label's colour
        assert painted[y + 20:y + h, x].all() and painted[y + 20:y + h, x + w - 1].all()
        assert painted[y + h - 1, x:x + w].all()
        changed = (before != after).reshape(H, W, per_px).any(axis=2)
        assert changed[y + 20:y + h, x].sum() > 0.8 * (h - 20)
        # inside the box (below its label) and far from it: unchanged
        assert not changed[y + 20:y + h - 1, x + 1:x + w - 1].any()
        assert not changed[:, x + w:].any()
        assert not changed[y + h:, :].any()
        assert not changed[40:, :x].any()
        assert changed[:30, :120].sum() > 50  # the frame classification


def test_overlay_properties_set_the_sizes(bikes_frames):
    run = overlay_run(bikes_frames[:1], "RGB", "lines-thickness=5 font-scale=1.2 font-thickness=3")
    assert run.result.ok, run.error
    before, after = plane0(run.per_sink["ref"][0]), plane0(run.per_sink["out"][0])
    changed = (before != after).reshape(H, W, 3).any(axis=2)
    x, y, w, h = BOX
    row = np.nonzero(changed[y + 60])[0].tolist()
    assert row == list(range(x, x + 5)) + list(range(x + w - 5, x + w))
    label_rows = np.nonzero(changed[:y, x:x + w].any(axis=1))[0]
    assert y - label_rows.min() > 60  # two lines at scale 1.2 (about 26 px capitals each)


def test_formats_it_cannot_draw_on_are_refused_at_linking(bikes_frames):
    """Other formats are refused when linking, never converted behind the user's back."""
    with pytest.raises(GLib.Error, match="meta_overlay.*can't handle caps.*AYUV"):
        run_results("appsrc name=src ! videoconvert ! video/x-raw,format=AYUV ! "
                    "meta_overlay ! appsink name=sink", bikes_frames[:1])


@pytest.mark.parametrize(("fmt", "width", "height", "thickness"),
                         [("I420", 1920, 816, 3), ("NV12", 641, 271, 1), ("BGR", 1281, 545, 2)])
def test_overlay_scales_with_the_frame_and_handles_odd_sizes(bikes_frames, fmt, width, height,
                                                             thickness):
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoscale ! videoconvert ! "
        f"video/x-raw,format={fmt},width={width},height={height} ! tee name=t  "
        "t. ! queue ! appsink name=ref  t. ! queue ! meta_overlay ! appsink name=out",
        bikes_frames[:2], sinks=("ref", "out"),
        writers={"w": lambda buf, i: write_results(buf, RESULTS, W, H)},
    )
    assert run.result.ok, run.error
    assert len(run.per_sink["out"]) == 2
    for ref, got in zip(run.per_sink["ref"], run.per_sink["out"], strict=True):
        s = Gst.Caps.from_string(got.caps).get_structure(0)
        assert (s.get_value("format"), s.get_value("width"), s.get_value("height")) == (
            fmt, width, height)
        x, y, w, h = RESULTS.regions[0].pixels(width, height)
        before, after = plane0(ref), plane0(got)
        per_px = after.shape[1] // width
        want = [_yuv(color_for(3))["Y"]] if per_px == 1 else list(color_for(3))
        painted = (after.reshape(height, width, per_px) == want).all(axis=2)
        changed = (before != after).reshape(height, width, per_px).any(axis=2)
        edges = list(range(x, x + thickness)) + list(range(x + w - thickness, x + w))
        middle = y + h // 2
        assert painted[middle, edges].all()
        assert set(np.nonzero(changed[middle])[0].tolist()) <= set(edges)
        assert changed[middle, edges].sum() >= len(edges) // 2


def luma(received, fmt: str) -> np.ndarray:
    """The Y samples of a received YUV frame, H x W, read from the layout GStreamer documents."""
    info = GstVideo.VideoInfo.new_from_caps(Gst.Caps.from_string(received.caps))
    raw, stride = received.arrays[0][info.offset[0]:], info.stride[0]
    as_strided = np.lib.stride_tricks.as_strided
    if fmt in ("YUY2", "YVYU", "UYVY", "I420_10LE", "P010_10LE"):
        rows = as_strided(raw, (H, 2 * W), (stride, 1)).copy()
        if fmt.endswith("10LE"):
            return rows.view("<u2")
        return rows[:, 1::2] if fmt == "UYVY" else rows[:, 0::2]
    return as_strided(raw, (H, W), (stride, 1))


@pytest.mark.parametrize("fmt", ["I420", "YV12", "NV12", "NV21", "Y42B", "Y444", "YUY2", "UYVY",
                                 "YVYU", "I420_10LE", "P010_10LE"])
def test_luma_and_chroma_are_right_in_every_yuv_layout(bikes_frames, fmt):
    """The box's colour comes back when the drawn frame is converted to RGB by videoconvert:
    luma and chroma samples were both written where they belong."""
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! "
        f"video/x-raw,format={fmt} ! tee name=t  t. ! queue ! appsink name=ref  "
        "t. ! queue ! meta_overlay lines-thickness=4 ! tee name=o  o. ! queue ! appsink name=out "
        " o. ! queue ! videoconvert ! video/x-raw,format=RGB ! appsink name=rgb",
        bikes_frames[:2], sinks=("ref", "out", "rgb"),
        writers={"w": lambda buf, i: write_results(buf, RESULTS, W, H)},
    )
    assert run.result.ok, run.error
    assert [len(run.per_sink[k]) for k in ("ref", "out", "rgb")] == [2, 2, 2]
    x, y, w, h = BOX
    shift = {"I420_10LE": 2, "P010_10LE": 8}.get(fmt, 0)
    for ref, out, rgb in zip(run.per_sink["ref"], run.per_sink["out"], run.per_sink["rgb"],
                             strict=True):
        assert Gst.Caps.from_string(out.caps).get_structure(0).get_value("format") == fmt
        before, after = luma(ref, fmt), luma(out, fmt)
        assert (after[y + 20:y + h, x:x + 4] == _yuv(color_for(3))["Y"] << shift).all()
        assert (after[y + 20:y + h - 4, x + 4:x + w - 4] == before[y + 20:y + h - 4,
                                                                     x + 4:x + w - 4]).all()
        assert (after[:, x + w:] == before[:, x + w:]).all()
        assert (after[y + h:] == before[y + h:]).all()
        pixels = rgb.arrays[0].reshape(H, W, 3).astype(int)
        blue, green, red = color_for(3)
        edge = pixels[y + 20:y + h - 4, x + 1:x + 3]
        assert np.abs(edge - [red, green, blue]).max() <= 6


@pytest.mark.slow
def test_gst_tools_load_both_elements_from_the_plugin_folder(tmp_path):
    """The loader files work: gst-inspect documents the properties, gst-launch runs both."""
    torchstream = REPO / ".venv" / "bin" / "torchstream"
    out = tmp_path / "bikes.jsonl"
    script = (
        f'eval "$({torchstream} env)" && gst-inspect-1.0 meta_overlay && '
        f"timeout 60 gst-launch-1.0 -q filesrc location={BIKES} ! decodebin ! meta_overlay ! "
        f"meta_publish file-path={out} ! fakesink sync=false"
    )
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for prop in ("lines-thickness", "font-scale", "font-thickness"):
        assert f"  {prop} " in done.stdout
    assert len(out.read_text().splitlines()) == 250


def test_a_frame_of_any_drawn_format_reads_back_as_bgr(bikes_frames):
    """The service's preview: a frame in the decoder's layout, as the BGR image OpenCV's own
    conversions give (odd sizes, without OpenCV's 4:2:0 path, within a rounding step)."""
    from torchstream.results.overlay import frame_to_bgr

    rgb = bikes_frames[0]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for height, width in ((272, 640), (271, 639)):
        image = np.ascontiguousarray(bgr[:height, :width])
        assert np.array_equal(frame_to_bgr(bytearray(rgb[:height, :width].tobytes()), "RGB",
                                           width, height, [0], [width * 3]), image)
        bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        assert np.array_equal(frame_to_bgr(bytearray(bgra.tobytes()), "BGRA", width, height,
                                           [0], [width * 4]), image)
    height, width = 272, 640
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    reference = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    quarter = width * height // 4
    planes = [0, width * height, width * height + quarter]
    assert np.array_equal(frame_to_bgr(bytearray(i420.tobytes()), "I420", width, height,
                                       planes, [width, width // 2, width // 2]), reference)
    # the same frame padded to a stride of 704 bytes a row, read by the general path
    # (Y42B: 4:2:2, which OpenCV's 4:2:0 conversions do not cover) stays close to it
    y = i420[:height]
    u = i420[height:height + height // 4].reshape(height // 2, width // 2)
    v = i420[height + height // 4:].reshape(height // 2, width // 2)
    u422, v422 = (np.repeat(c, 2, axis=0) for c in (u, v))
    stride = 704
    padded = [np.pad(p, ((0, 0), (0, stride - p.shape[1]))) for p in (y, u422, v422)]
    data = bytearray(b"".join(p.tobytes() for p in padded))
    offsets = [0, stride * height, 2 * stride * height]
    general = frame_to_bgr(data, "Y42B", width, height, offsets, [stride] * 3)
    assert np.abs(general.astype(int) - reference).mean() < 2.0
