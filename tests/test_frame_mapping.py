"""Boxes found on a cropped or letterboxed tensor land on the object in the original frame.

The mapping maths alone, ``ResizeSpec.mapping`` checked against what ``ResizeSpec.apply`` really
does to a real image (pixel for pixel where nothing is resized, a marked rectangle otherwise),
and whole pipelines: frame -> tensor_resize_crop -> a real (tiny, TorchScript) detector ->
tensor_postproc_detection, whose boxes, in frame pixels, sit on the marked object.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from tests.results_helpers import run_results
from torchstream.errors import TorchstreamError
from torchstream.gst import Gst
from torchstream.gst.meta import read_frame_mapping, write_frame_mapping
from torchstream.preprocess.resize import ResizeSpec, parse_size
from torchstream.results.data import FrameMapping

GREEN = (0, 255, 0)
BLOB = (225, 150, 330, 230)  # x1, y1, x2, y2 (exclusive) in coffee's 600x400 pixels


def coffee() -> np.ndarray:
    return skimage.data.coffee().copy()  # 400x600 RGB


def marked_coffee() -> np.ndarray:
    """coffee with a pure green rectangle: coffee itself holds nothing near pure green (its
    greenness, g - (r + b) / 2, stays below 0.09)."""
    image = coffee()
    x1, y1, x2, y2 = BLOB
    image[y1:y2, x1:x2] = GREEN
    return image


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def spec(props: str) -> ResizeSpec:
    values = dict(p.split("=") for p in props.split())
    return ResizeSpec(size=parse_size(values.get("size", ""), "size"),
                      mode=values.get("mode", "aspect-ratio"),
                      crop=parse_size(values.get("crop", ""), "crop"))


# --- the record itself -----------------------------------------------------------------------


def test_composition_order_and_boxes():
    crop = FrameMapping(sx=0.5, ox=0.25, sy=0.8, oy=0.1)  # a window inside the frame
    letterbox = FrameMapping(sx=1.0, ox=0.0, sy=1.5, oy=-0.25)  # padding above and below
    both = crop.then(letterbox)  # letterboxed after cropping: letterbox maps first
    for x, y in ((0.0, 0.0), (1.0, 1.0), (0.3, 0.7)):
        assert both.map_point(x, y) == pytest.approx(crop.map_point(*letterbox.map_point(x, y)))
    assert both.map_box(0.0, 0.0, 1.0, 1.0) == pytest.approx((0.25, 0.1 - 0.2, 0.75, 0.9 + 0.2))
    assert FrameMapping.identity().then(crop) == crop == crop.then(FrameMapping.identity())
    assert FrameMapping.identity().is_identity and not crop.is_identity
    with pytest.raises(TorchstreamError, match="not valid"):
        FrameMapping(sx=0.0)
    with pytest.raises(TorchstreamError, match="not valid"):
        FrameMapping(ox=math.nan)


def test_record_reads_back_bit_for_bit():
    buf = Gst.Buffer.new_allocate(None, 16, None)
    assert read_frame_mapping(buf) is None
    mapping = FrameMapping(sx=320 / 213, ox=-1 / 3, sy=0.6, oy=float(np.float32(0.1)))
    write_frame_mapping(buf, mapping)
    assert read_frame_mapping(buf) == mapping
    write_frame_mapping(buf, FrameMapping.identity())  # replaces, does not add a second one
    assert read_frame_mapping(buf) == FrameMapping.identity()


# --- ResizeSpec.mapping against ResizeSpec.apply ---------------------------------------------


@pytest.mark.parametrize(("props", "expected"), [
    # 400x600 -> shorter side 320: 320x480, crop 288 from (16, 96)
    ("size=320 crop=288", FrameMapping(sx=0.6, ox=0.2, sy=0.9, oy=0.05)),
    # a stretch to a box moves nothing in normalised coordinates
    ("size=224x224 mode=no-aspect-ratio", FrameMapping()),
    ("size=300x300 mode=aspect-ratio", FrameMapping()),
    # fit 320 wide: 213x320 (torchvision rounds 213.33), 53 rows of padding above
    ("size=320 mode=letterbox", FrameMapping(sx=1.0, ox=0.0, sy=320 / 213, oy=-53 / 213)),
    # crop taller than the picture: 50 rows of padding above; 50 columns cut on the left
    ("crop=500", FrameMapping(sx=500 / 600, ox=50 / 600, sy=500 / 400, oy=-50 / 400)),
])
def test_mapping_values(props, expected):
    got = spec(props).mapping(400, 600)
    for key in ("sx", "ox", "sy", "oy"):
        assert getattr(got, key) == pytest.approx(getattr(expected, key), abs=1e-12), key


@pytest.mark.parametrize("props", [
    "crop=300",
    "crop=303x301",  # odd margins: torchvision's half-to-even rounding of the offsets
    "crop=500",  # taller than the picture: padded above and below
    "crop=700x450",  # larger both ways: padded all round, nothing cut
    "crop=601x403",  # odd padding: one pixel more after than before
    "size=600 mode=letterbox",  # fits without resizing: padding only
    "size=600 mode=letterbox crop=500x550",
])
def test_every_output_pixel_comes_from_the_mapped_input_pixel(props):
    """Without resizing, the mapping must be exact: each output pixel's centre maps onto the
    input pixel it was copied from (or outside the picture, where the output is padding)."""
    image = coffee()
    s = spec(props)
    out = s.apply(chw(image)).numpy()
    _, oh, ow = out.shape
    assert s.output_hw(400, 600) == (oh, ow)
    m = s.mapping(400, 600)
    xs = np.floor((m.ox + m.sx * (np.arange(ow) + 0.5) / ow) * 600).astype(int)
    ys = np.floor((m.oy + m.sy * (np.arange(oh) + 0.5) / oh) * 400).astype(int)
    inside_x, inside_y = (xs >= 0) & (xs < 600), (ys >= 0) & (ys < 400)
    expected = np.zeros_like(out)
    source = image[ys[inside_y]][:, xs[inside_x]].transpose(2, 0, 1)
    expected[:, np.flatnonzero(inside_y)[:, None], np.flatnonzero(inside_x)] = source
    assert np.array_equal(out, expected)
    assert inside_x.any() and inside_y.any()


def green_box(out: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box, normalised to ``out`` ([C,H,W] uint8), of its pixels at least half green."""
    rgb = out.astype(np.float64) / 255
    mask = rgb[1] - (rgb[0] + rgb[2]) / 2 > 0.5
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert rows.size and cols.size, "the marked rectangle is not in the output"
    h, w = mask.shape
    return cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h


@pytest.mark.parametrize("props", [
    "size=320 crop=288",
    "size=320 mode=letterbox",
    "size=700x500 mode=letterbox",  # enlarged, padded left and right
    "size=300 mode=letterbox crop=250",
    "size=160 crop=200",  # crop taller than the resized picture
    "size=200x100 mode=no-aspect-ratio",
])
def test_marked_rectangle_maps_back_onto_itself(props):
    """With resizing, the rectangle found in the output, mapped back, is the one painted on
    the input, within one output pixel (in input pixels: the input's pixels per output
    pixel)."""
    s = spec(props)
    out = s.apply(chw(marked_coffee())).numpy()
    _, oh, ow = out.shape
    m = s.mapping(400, 600)
    x1, y1, x2, y2 = m.map_box(*green_box(out))
    got = np.array([x1 * 600, y1 * 400, x2 * 600, y2 * 400])
    per_pixel = np.array([m.sx * 600 / ow, m.sy * 400 / oh] * 2)  # input px per output px
    assert (np.abs(got - BLOB) <= np.maximum(per_pixel, 1.0)).all(), (got, per_pixel)


# --- whole pipelines with a real detector ----------------------------------------------------


class GreenBlobDetector(torch.nn.Module):
    """Finds the pixels at least half green in a [B,3,H,W] image in [0,1] and returns their
    bounding box as one detection row x1,y1,x2,y2,confidence in input pixels ([B,1,5];
    confidence 0 and an empty box when there is none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x[:, 1] - (x[:, 0] + x[:, 2]) / 2 > 0.5
        h, w = mask.shape[-2], mask.shape[-1]
        cols, rows = mask.any(dim=1), mask.any(dim=2)
        xs = torch.arange(w, dtype=x.dtype)
        ys = torch.arange(h, dtype=x.dtype)
        far = float(w + h)
        x1 = torch.where(cols, xs, far).amin(dim=1)
        x2 = torch.where(cols, xs + 1, -far).amax(dim=1)
        y1 = torch.where(rows, ys, far).amin(dim=1)
        y2 = torch.where(rows, ys + 1, -far).amax(dim=1)
        found = cols.any(dim=1).to(x.dtype)
        box = torch.stack([x1, y1, x2, y2], 1) * found[:, None]
        return torch.cat([box, found[:, None]], 1)[:, None, :]


@pytest.fixture(scope="module")
def blob_detector(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "green_blob.ts"
    torch.jit.save(torch.jit.script(GreenBlobDetector().eval()), str(path))
    return path


def detect_boxes(detector: Path, frame: np.ndarray, resize: str, count: int = 1,
                 inference: str = "") -> tuple[list, list]:
    """Run ``count`` copies of ``frame`` through ``resize`` (tensor_resize_crop elements) and
    the detector: the boxes in the frame's pixels (of the first buffer when ``count`` is 1, of
    each buffer otherwise), and the frame mapping each buffer carried."""
    mappings: list = []
    run = run_results(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        f"{resize} ! opencv_tensor_normalize range=<0,1> ! "
        f"pytorch_tensor_inference model={detector} {inference} ! tensor_postproc_detection ! "
        "test_meta_writer name=spy ! appsink name=sink",
        [frame] * count,
        writers={"spy": lambda buf, _i: mappings.append(read_frame_mapping(buf))},
    )
    assert run.result.ok, run.error
    h, w = frame.shape[:2]
    boxes = [[(r.x_min * w, r.y_min * h, r.x_max * w, r.y_max * h) for r in out.results.regions]
             for out in run.per_sink["sink"]]
    assert len(boxes) == count
    return (boxes[0] if count == 1 else boxes), mappings


def paste(image: np.ndarray, width: int, height: int, x: int, y: int) -> np.ndarray:
    """``image`` at (x, y) of a black ``width`` x ``height`` frame."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[y:y + image.shape[0], x:x + image.shape[1]] = image
    return frame


def assert_near(box, expected, tolerance: float = 2.0) -> None:
    assert np.abs(np.array(box) - np.array(expected, float)).max() <= tolerance, (box, expected)


def test_letterbox_boxes_follow_the_picture_into_a_wider_frame(blob_detector):
    """The same image padded into a wider (and a wider and taller) frame gives the same boxes
    shifted by the padding, within 2 pixels, and they sit on the marked object."""
    image = marked_coffee()
    resize = "tensor_resize_crop mode=letterbox size=320"
    (alone,), mappings = detect_boxes(blob_detector, image, resize)
    assert mappings == [spec("size=320 mode=letterbox").mapping(400, 600)]
    assert_near(alone, BLOB)
    for width, height, dx, dy in ((800, 400, 120, 0), (840, 480, 160, 40)):
        (padded,), _ = detect_boxes(blob_detector, paste(image, width, height, dx, dy), resize)
        shifted = (padded[0] - dx, padded[1] - dy, padded[2] - dx, padded[3] - dy)
        assert_near(shifted, alone)
        assert_near(shifted, BLOB)


def test_centre_crop_boxes_are_in_frame_pixels(blob_detector):
    (box,), mappings = detect_boxes(blob_detector, marked_coffee(),
                                    "tensor_resize_crop size=320 crop=288")
    assert mappings == [FrameMapping(sx=0.6, ox=0.2, sy=0.9, oy=0.05)]
    assert_near(box, BLOB)


def test_chained_resizes_compose_their_mappings(blob_detector):
    """letterbox, then a centre crop of the letterboxed tensor: the record is the composition
    and the box still lands on the object."""
    (box,), mappings = detect_boxes(
        blob_detector, paste(marked_coffee(), 800, 400, 120, 0),
        "tensor_resize_crop mode=letterbox size=400 ! tensor_resize_crop crop=360x300")
    first = spec("size=400 mode=letterbox").mapping(400, 800)
    second = spec("crop=360x300").mapping(400, 400)
    assert mappings == [first.then(second)]
    assert_near(box, (BLOB[0] + 120, BLOB[1], BLOB[2] + 120, BLOB[3]))


def test_squashing_resize_needs_no_record(blob_detector):
    (box,), mappings = detect_boxes(blob_detector, marked_coffee(),
                                    "tensor_resize_crop size=320x320 mode=no-aspect-ratio")
    assert mappings == [None]
    assert_near(box, BLOB)



def test_a_resize_without_a_record_keeps_the_one_before(blob_detector):
    """letterbox, then a stretch of the letterboxed tensor: the stretch moves nothing, so the
    letterbox's record passes through it unchanged."""
    (box,), mappings = detect_boxes(
        blob_detector, marked_coffee(),
        "tensor_resize_crop mode=letterbox size=320 ! "
        "tensor_resize_crop size=256x192 mode=no-aspect-ratio")
    assert mappings == [spec("size=320 mode=letterbox").mapping(400, 600)]
    assert_near(box, BLOB)


def test_each_buffer_of_a_batch_keeps_its_record(blob_detector):
    boxes, mappings = detect_boxes(blob_detector, marked_coffee(),
                                   "tensor_resize_crop size=320 crop=288", count=3,
                                   inference="batch-size=2")
    assert mappings == [FrameMapping(sx=0.6, ox=0.2, sy=0.9, oy=0.05)] * 3
    for (box,) in boxes:
        assert_near(box, BLOB)
