"""tensor_postproc_detection: the layout decoders on known arrays, and the element on a real
detector's outputs checked against torchvision called directly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.results_helpers import run_results
from torchstream.decode.detection import (
    DetectionParams,
    decode,
    detect,
    input_size,
    resolve_layout,
)
from torchstream.decode.labels import Labels
from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.gst import Gst
from torchstream.results.data import ModelRecord, Region

REPO = Path(__file__).resolve().parents[1]
COCO = LABELS_DIR / "coco_91cl_bkgr.txt"
COCO_NAMES = COCO.read_text().splitlines()
SIZE = (640, 272)
TV_NAMES = ("boxes", "labels", "scores")
DETECTOR = "torchvision.models.detection.ssdlite320_mobilenet_v3_large"
THRESHOLD = 0.016  # 1 to 6 regions per frame from the seeded detector's bikes frames


def tv_arrays(rows: list[tuple[float, float, float, float, int, float]]):
    boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
    labels = np.array([r[4] for r in rows], np.int64)
    scores = np.array([r[5] for r in rows], np.float32)
    return [boxes, labels, scores]


def boxes_of(detections: list[Region]) -> np.ndarray:
    return np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in detections]).reshape(-1, 4)


# --- the core, on plain arrays ---------------------------------------------------------------


def test_torchvision_dict_is_normalised_thresholded_and_clipped():
    arrays = tv_arrays([
        (64.0, 27.2, 320.0, 136.0, 2, 0.9),
        (10.0, 10.0, 20.0, 20.0, 3, 0.4999),  # below the threshold
        (-32.0, 200.0, 700.0, 300.0, 1, 0.5),  # exactly the threshold: kept; clipped
    ])
    labels = Labels(tuple(COCO_NAMES), "labels-file")
    detections, layout = detect(arrays, TV_NAMES, DetectionParams(labels=labels), SIZE)
    assert layout.tensors() == [0, 1, 2]
    assert [d.label_id for d in detections] == [2, 1]
    assert [d.label for d in detections] == ["bicycle", "person"]
    assert [d.confidence for d in detections] == [pytest.approx(0.9, abs=1e-7), 0.5]
    expected = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 200 / 272, 1.0, 1.0]])
    assert np.abs(boxes_of(detections) - expected).max() <= 1e-7


def test_torchvision_dict_by_names_in_any_order_with_extra_outputs():
    boxes, labels, scores = tv_arrays([(0, 0, 320, 136, 5, 0.7), (320, 136, 640, 272, 7, 0.6)])
    masks = np.zeros((2, 1, 4, 4), np.float32)
    detections, _ = detect([scores, masks, labels, boxes], ("scores", "masks", "labels", "boxes"),
                           DetectionParams(), SIZE)
    assert [(d.label, d.label_id) for d in detections] == [("5", 5), ("7", 7)]
    assert np.array_equal(boxes_of(detections), [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])


def test_no_detection_and_nothing_above_the_threshold_give_no_result():
    empty = tv_arrays([])
    assert [a.shape for a in empty] == [(0, 4), (0,), (0,)]
    assert detect(empty, TV_NAMES, DetectionParams(), SIZE)[0] == []
    low = tv_arrays([(0, 0, 1, 1, 1, 0.2)])
    assert detect(low, TV_NAMES, DetectionParams(threshold=0.3), SIZE)[0] == []
    assert len(detect(low, TV_NAMES, DetectionParams(threshold=0.2), SIZE)[0]) == 1
    # threshold 0 keeps everything, even a zero confidence
    zero = tv_arrays([(0, 0, 1, 1, 1, 0.0)])
    assert len(detect(zero, TV_NAMES, DetectionParams(threshold=0.0), SIZE)[0]) == 1


def test_one_tensor_of_five_columns():
    rows = np.array([[[64, 0, 128, 272, 0.8], [0, 0, 640, 272, 0.3], [640, 272, 320, 136, 0.6]]],
                    np.float32)  # [1,3,5]; the last box has its corners swapped
    detections, layout = detect([rows], ("output",), DetectionParams(), SIZE)
    assert layout.label is None and not layout.normalised
    assert [(d.label, d.label_id) for d in detections] == [("0", 0), ("0", 0)]
    assert np.abs(boxes_of(detections) - [[0.1, 0, 0.2, 1], [0.5, 0.5, 1, 1]]).max() <= 1e-7
    assert [round(d.confidence, 6) for d in detections] == [0.8, 0.6]
    assert detect([rows[:, :0]], (), DetectionParams(), SIZE)[0] == []


def test_ssd_detection_output_with_its_end_marker():
    rows = np.array([[[
        [0, 3, 0.95, 0.1, 0.2, 0.3, 0.4],
        [0, 1, 0.40, 0.0, 0.0, 1.0, 1.0],
        [0, 2, 0.70, -0.1, 0.5, 1.2, 0.6],
        [-1, 0, 0.99, 0.0, 0.0, 0.0, 0.0],  # ends the list: the rest is padding
        [0, 4, 0.99, 0.0, 0.0, 0.5, 0.5],
    ]]], np.float32)  # [1,1,5,7]
    labels = Labels(("bg", "a", "b", "c", "d"), "property 'labels'")
    detections, layout = detect([rows], (), DetectionParams(labels=labels), None)
    assert layout.normalised and layout.image_id is not None
    assert [(d.label, d.label_id) for d in detections] == [("c", 3), ("b", 2)]
    assert np.abs(boxes_of(detections) - [[0.1, 0.2, 0.3, 0.4], [0, 0.5, 1, 0.6]]).max() <= 1e-7
    rows[0, 0, 0, 1] = 2.5
    with pytest.raises(TorchstreamError, match="label ids must be whole numbers, got 2.5"):
        detect([rows], (), DetectionParams(), None)


def test_box_and_label_tensors_without_names():
    boxes = np.array([[64, 27.2, 640, 272, 0.9], [0, 0, 64, 27.2, 0.1]], np.float32)
    labels = np.array([4, 9], np.int32)
    detections, layout = detect([labels, boxes], (), DetectionParams(), SIZE)
    assert layout.box.tensor == 1 and layout.label.tensor == 0
    assert layout.confidence.tensor == 1 and layout.confidence.column == 4
    assert [(d.label_id, round(d.confidence, 6)) for d in detections] == [(4, 0.9)]
    assert np.abs(boxes_of(detections) - [[0.1, 0.1, 1, 1]]).max() <= 1e-7
    # boxes [1,N,4], labels [1,N] and scores [1,N] in another order
    b4 = boxes[None, :, :4]
    scores = np.array([[0.2, 0.6]], np.float32)
    detections, _ = detect([scores, b4, labels[None]], (), DetectionParams(), SIZE)
    assert [(d.label_id, round(d.confidence, 6)) for d in detections] == [(9, 0.6)]
    # labels alone: confidence 1.0
    detections, _ = detect([b4, labels[None]], (), DetectionParams(), SIZE)
    assert [d.confidence for d in detections] == [1.0, 1.0]


def test_overrides_on_one_tensor_are_columns():
    rows = np.array([[7, 0.9, 0, 0, 320, 136], [8, 0.2, 320, 136, 640, 272]], np.float32)
    params = DetectionParams(threshold=0.1, label_index=0, confidence_index=1, box_index=2)
    detections, layout = detect([rows], (), params, SIZE)
    assert (layout.box.column, layout.label.column, layout.confidence.column) == (2, 0, 1)
    assert [(d.label_id, round(d.confidence, 6)) for d in detections] == [(7, 0.9), (8, 0.2)]
    assert np.array_equal(boxes_of(detections), [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])
    with pytest.raises(ConfigError, match=r"box-index=3 needs columns 3..6 but the last axis "
                                          r"has 6"):
        detect([rows], (), DetectionParams(box_index=3), SIZE)


def test_overrides_on_several_outputs_are_output_indices():
    boxes = np.array([[0, 0, 64, 272]], np.float32)
    a = np.array([0.3], np.float32)
    b = np.array([0.8], np.float32)
    ids = np.array([5], np.int64)
    # two float outputs: auto cannot tell which one is the confidence
    with pytest.raises(ConfigError, match="several outputs could be the confidences"):
        detect([boxes, a, b, ids], (), DetectionParams(), SIZE)
    for index, confidence in ((1, 0.3), (2, 0.8)):
        params = DetectionParams(0.0, box_index=0, confidence_index=index, label_index=3)
        detections, _ = detect([boxes, a, b, ids], (), params, SIZE)
        assert [(d.label_id, round(d.confidence, 6)) for d in detections] == [(5, confidence)]
    with pytest.raises(ConfigError, match="label-index=4 but there are 4 outputs"):
        detect([boxes, a, b, ids], (), DetectionParams(label_index=4), SIZE)


@pytest.mark.parametrize(("arrays", "names", "message"), [
    ([np.zeros((10, 3), np.float32)], (), "output 0 [10, 3]): one tensor whose last axis has 3"),
    ([np.zeros((1000,), np.float32)], ("output",), "(output [1000]): one tensor whose last "
                                                   "axis has 1000"),
    ([np.zeros((3, 6), np.float32), np.zeros((3,), np.int64)], ("a", "b"),
     "(a [3, 6], b [3]): no output is shaped [...,N,4] or [...,N,5]"),
    ([np.zeros((3, 4), np.float32), np.zeros((2,), np.int64)], (),
     "no output holds one label or score per box"),
])
def test_undecodable_layouts_name_the_shapes(arrays, names, message):
    with pytest.raises(ConfigError, match="cannot decode the detection outputs") as info:
        detect(arrays, names, DetectionParams(), SIZE)
    assert message in str(info.value)


def test_label_outside_the_labels_and_missing_input_size_are_errors():
    arrays = tv_arrays([(0, 0, 1, 1, 3, 0.9)])
    labels = Labels(("a", "b"), "property 'labels'")
    with pytest.raises(ConfigError, match=r"label id 3 is outside the 2 labels of "
                                          r"property 'labels'"):
        detect(arrays, TV_NAMES, DetectionParams(labels=labels), SIZE)
    # a label beyond the list that the threshold drops is no error
    assert detect(arrays, TV_NAMES, DetectionParams(labels=labels, threshold=0.95), SIZE)[0] == []
    with pytest.raises(TorchstreamError, match="model input size is unknown"):
        detect(arrays, TV_NAMES, DetectionParams(), None)
    with pytest.raises(ConfigError, match="property 'threshold' must be in 0..1, got 1.5"):
        DetectionParams(threshold=1.5)


def test_input_size_from_caps_dimensions():
    assert input_size("640:272:3") == (640, 272)  # [3,272,640]
    assert input_size("3:640:272") == (640, 272)  # [272,640,3] (HWC)
    assert input_size("320:320:3:1,10") == (320, 320)  # first input, with a batch dim
    assert input_size("") is None and input_size("5") is None


def test_layout_is_the_same_for_zero_and_many_rows():
    params = DetectionParams()
    for n in (0, 1, 50):
        layout = resolve_layout([(n, 4), (n,), (n,)], TV_NAMES, [False, True, False], params)
        assert (layout.box.tensor, layout.label.tensor, layout.confidence.tensor) == (0, 1, 2)
    empty = [np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)]
    layout = resolve_layout([a.shape for a in empty], TV_NAMES, [False, True, False], params)
    assert decode(empty, layout, params, SIZE) == []


# --- the element, on a real detector ---------------------------------------------------------


@pytest.fixture(scope="module")
def ssdlite(tmp_path_factory):
    from tests.conftest import BIKES
    from tests.helpers import decode_frames
    from tests.models import save_state_dict, seeded_detector

    model = seeded_detector("ssdlite320_mobilenet_v3_large", decode_frames(BIKES, 8), 15.0)
    path = save_state_dict(model, tmp_path_factory.mktemp("w") / "ssdlite.pth")
    return model, path


def detector_pipeline(weights: Path, postproc: str) -> str:
    return ("appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
            "opencv_tensor_normalize range=<0,1> ! pytorch_tensor_inference "
            f"model={DETECTOR} model-weights={weights} ! {postproc} ! appsink name=sink")


def test_regions_match_torchvision_on_real_frames(bikes_frames, ssdlite):
    from tests.models import frames_to_tensors

    model, weights = ssdlite
    run = run_results(detector_pipeline(
        weights, f"tensor_postproc_detection threshold={THRESHOLD} labels-file={COCO}"),
        bikes_frames)
    assert run.result.ok, run.error
    received = run.per_sink["sink"]
    assert len(received) == len(bikes_frames)
    with torch.inference_mode():
        expected = model(frames_to_tensors(bikes_frames))
    counts = []
    for out, ref in zip(received, expected, strict=True):
        scores = ref["scores"].numpy()
        # no reference score so close to the threshold that float noise could flip it
        assert np.abs(scores - THRESHOLD).min() > 1e-5
        keep = scores >= THRESHOLD
        ref_boxes = ref["boxes"].numpy()[keep] / np.array([640, 272, 640, 272], np.float32)
        ref_labels = ref["labels"].numpy()[keep]
        regions = out.results.regions
        counts.append(len(regions))
        assert len(regions) == int(keep.sum())
        assert [r.region_id for r in regions] == list(range(1, len(regions) + 1))
        assert [r.label_id for r in regions] == ref_labels.tolist()
        assert [r.label for r in regions] == [COCO_NAMES[i] for i in ref_labels]
        got_scores = np.array([r.confidence for r in regions])
        assert np.abs(got_scores - scores[keep]).max(initial=0) <= 1e-4
        got_boxes = np.array([[r.x_min, r.y_min, r.x_max, r.y_max] for r in regions])
        assert np.abs(got_boxes.reshape(-1, 4) - ref_boxes).max(initial=0) <= 1e-5
        assert out.results.models == [ModelRecord(DETECTOR, ("boxes", "labels", "scores"))]
        # the tensors themselves pass unchanged, all N rows of them
        named = dict(zip(out.record.names, out.arrays, strict=True))
        assert named["scores"].shape == scores.shape
    assert min(counts) > 0 and len(set(counts)) > 1, counts


def run_error(pipeline: str, frames) -> str:
    start = time.monotonic()
    run = run_results(pipeline, frames, timeout=60)
    assert not run.result.ok and not run.result.timed_out, "expected an error"
    assert time.monotonic() - start < 30
    assert "tensor_postproc_detection" in run.error
    assert len(run.per_sink["sink"]) == 0  # no buffer slipped through without its regions
    return run.error


def test_a_classifier_output_is_an_error_naming_its_shape(bikes_frames, mobilenet_weights):
    error = run_error(
        "appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=224,"
        "height=224 ! tensor_convert ! opencv_tensor_normalize range=<0,1> ! "
        f"pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} ! tensor_postproc_detection ! appsink name=sink",
        bikes_frames[:2])
    assert "cannot decode the detection outputs (output [1000])" in error


def test_a_label_beyond_the_labels_is_an_error(bikes_frames, ssdlite):
    _, weights = ssdlite
    error = run_error(detector_pipeline(
        weights, "tensor_postproc_detection threshold=0.01 labels=<background,person>"),
        bikes_frames[:2])
    assert "is outside the 2 labels of property 'labels'" in error


def test_properties_and_defaults():
    element = Gst.ElementFactory.make("tensor_postproc_detection", None)
    defaults = {p.name: p.default_value for p in element.list_properties()}
    assert defaults["threshold"] == 0.5
    assert defaults["labels"] is None and defaults["labels-file"] is None
    for name in ("box-index", "label-index", "confidence-index"):
        assert defaults[name] == -1
        assert element.find_property(name).blurb


def test_gst_inspect_documents_the_element_from_the_plugin_loader():
    import os
    import subprocess

    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "-c", f'eval "$({REPO}/.venv/bin/torchstream env)" && '
                       "gst-inspect-1.0 tensor_postproc_detection"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for prop in ("labels", "labels-file", "threshold", "box-index", "label-index",
                 "confidence-index"):
        assert f"  {prop} " in done.stdout
    text = " ".join(done.stdout.split())
    assert "Default: 0.5" in text and "Default: -1" in text


# --- boxes put back on the frame through the preprocessing's frame mapping -------------------


def test_frame_mapping_moves_boxes_clips_and_drops_what_is_only_padding():
    from torchstream.results.data import FrameMapping

    # a 640x272 frame letterboxed into 320x320: picture rows 92..228, none of the columns cut
    letterbox = FrameMapping(sx=1.0, ox=0.0, sy=320 / 136, oy=-92 / 136)
    arrays = tv_arrays([
        (32.0, 92.0, 160.0, 160.0, 1, 0.9),  # on the picture
        (0.0, 40.0, 320.0, 120.0, 2, 0.8),  # reaching over the padding above
        (10.0, 10.0, 50.0, 50.0, 3, 0.7),  # in the padding only: not on the frame, dropped
    ])
    detections, _ = detect(arrays, TV_NAMES, DetectionParams(), (320, 320), letterbox)
    expected = [[0.1, 0.0, 0.5, 68 / 136], [0.0, 0.0, 1.0, 28 / 136]]
    assert [d.label_id for d in detections] == [1, 2]
    assert np.abs(boxes_of(detections) - expected).max() <= 1e-9
    # already-normalised boxes (SSD [...,7]) are mapped too; a centre crop shrinks them
    crop = FrameMapping(sx=0.6, ox=0.2, sy=0.9, oy=0.05)
    rows = np.array([[0, 5, 0.9, 0.0, 0.0, 1.0, 0.5]], np.float32)
    detections, _ = detect([rows], (), DetectionParams(), None, crop)
    assert np.abs(boxes_of(detections) - [[0.2, 0.05, 0.8, 0.5]]).max() <= 1e-7
    assert detect([rows], (), DetectionParams(), None, None)[0] == \
        detect([rows], (), DetectionParams(), None, FrameMapping.identity())[0]


LETTERBOX_THRESHOLD = 0.016


def test_regions_of_a_letterboxed_frame_are_the_frames(bikes_frames, ssdlite):
    """The seeded detector on letterboxed bikes frames: the regions are torchvision's boxes on
    the letterboxed tensor, mapped through the letterbox onto the 640x272 frame."""
    from torchstream.preprocess.resize import ResizeSpec

    model, weights = ssdlite
    frames = bikes_frames[:4]
    run = run_results(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        "tensor_resize_crop size=320 mode=letterbox ! opencv_tensor_normalize range=<0,1> ! "
        f"pytorch_tensor_inference model={DETECTOR} model-weights={weights} ! "
        f"tensor_postproc_detection threshold={LETTERBOX_THRESHOLD} ! appsink name=sink",
        frames)
    assert run.result.ok, run.error
    spec = ResizeSpec(size=(320,), mode="letterbox")
    m = spec.mapping(272, 640)
    inputs = [spec.apply(torch.from_numpy(f).permute(2, 0, 1).contiguous()).float() / 255
              for f in frames]
    with torch.inference_mode():
        expected = model(inputs)
    total = 0
    for out, ref in zip(run.per_sink["sink"], expected, strict=True):
        scores = ref["scores"].numpy()
        assert np.abs(scores - LETTERBOX_THRESHOLD).min() > 1e-5
        keep = scores >= LETTERBOX_THRESHOLD
        boxes = ref["boxes"].numpy()[keep].astype(np.float64) / 320
        mapped = np.clip(boxes * [m.sx, m.sy, m.sx, m.sy] + [m.ox, m.oy, m.ox, m.oy], 0, 1)
        regions = out.results.regions
        got = np.array([[r.x_min, r.y_min, r.x_max, r.y_max] for r in regions]).reshape(-1, 4)
        assert [r.label_id for r in regions] == ref["labels"].numpy()[keep].tolist()
        assert np.abs(got - mapped).max(initial=0) <= 1e-5
        total += len(regions)
    assert total > 0
