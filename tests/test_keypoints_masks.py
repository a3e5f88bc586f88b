"""Keypoints and instance masks: a keypoint detector's points and a mask detector's masks
through object_detect against torchvision called directly; point names and skeleton settings;
both in the metadata, the JSON and the overlay."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.conftest import BIKES
from tests.harness import Harness
from tests.helpers import box_iou, decode_frames
from tests.models import frames_to_tensors, save_state_dict, seeded_detector
from tests.results_helpers import run_results
from torchstream.caps import TensorInfo, TensorsConfig, format_dimensions
from torchstream.decode.detection import DetectionParams, detect
from torchstream.decode.keypoints import (
    COCO_POINTS,
    COCO_SKELETON,
    parse_point_connections,
    parse_point_names,
    point_set,
)
from torchstream.environment import LABELS_DIR, MODEL_PROC_DIR
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.gst import Gst
from torchstream.gst.buffers import buffer_from_tensors
from torchstream.gst.meta import attach_tensors_record
from torchstream.results.data import (
    FrameResults,
    Keypoints,
    Mask,
    Region,
    TensorsRecord,
    decode_results,
    encode_results,
)
from torchstream.results.overlay import draw_results, region_color
from torchstream.results.publish import frame_record

COCO = LABELS_DIR / "coco_91cl_bkgr.txt"
KEYPOINT_MODEL = "torchvision.models.detection.keypointrcnn_resnet50_fpn"
MASK_MODEL = "torchvision.models.detection.maskrcnn_resnet50_fpn"
SIZE = (640, 272)
TV_NAMES = ("boxes", "labels", "scores", "keypoints", "keypoints_scores")


def keypoint_arrays(count: int = 2, points: int = 17):
    rng = np.random.default_rng(3)
    boxes = np.array([[64, 27, 320, 136], [300, 100, 400, 250]], np.float32)[:count]
    xy = rng.uniform([0, 0], SIZE, size=(count, points, 2)).astype(np.float32)
    keypoints = np.concatenate([xy, np.ones((count, points, 1), np.float32)], axis=2)
    return [boxes, np.array([1, 1][:count], np.int64), np.array([0.9, 0.7][:count], np.float32),
            keypoints, rng.normal(size=(count, points)).astype(np.float32)]


# --- the core ---------------------------------------------------------------------------------


def test_points_are_normalised_scored_and_named_as_coco_by_default():
    arrays = keypoint_arrays()
    detections, layout = detect(arrays, TV_NAMES, DetectionParams(threshold=0.8), SIZE)
    assert layout.keypoints == 3 and layout.keypoint_scores == 4
    assert len(detections) == 1  # the 0.7 detection is below the threshold
    k = detections[0].keypoints
    assert k.names == COCO_POINTS and len(k.connections) == len(COCO_SKELETON) == 19
    got = np.array(k.points)
    np.testing.assert_allclose(got[:, :2] * SIZE, arrays[3][0, :, :2], rtol=1e-6)
    np.testing.assert_array_equal(got[:, 2], arrays[4][0].astype(np.float64))
    left = COCO_POINTS.index("left_ankle"), COCO_POINTS.index("left_knee")
    assert left in k.connections


def test_a_poses_tensor_gives_one_region_per_person_around_its_sure_points():
    poses = np.zeros((1, 2, 17, 3), np.float32)  # y, x, score in [0, 1] of the input
    poses[0, 0, :, 0] = np.linspace(0.2, 0.8, 17)
    poses[0, 0, :, 1] = np.linspace(0.1, 0.5, 17)
    poses[0, 0, :, 2] = 0.6
    poses[0, 0, 0] = (0.0, 0.95, 0.1)  # an unsure point: outside the box
    poses[0, 1, :, 2] = 0.1  # an unsure person: dropped
    detections, layout = detect([poses[0]], ("output",), DetectionParams(threshold=0.3), SIZE)
    assert layout.poses and len(detections) == 1
    person = detections[0]
    assert person.label_id == 0 and person.confidence == pytest.approx(
        (16 * 0.6 + 0.1) / 17, abs=1e-6)
    assert (person.x_min, person.y_min, person.x_max, person.y_max) == pytest.approx(
        (float(poses[0, 0, 1, 1]), float(poses[0, 0, 1, 0]), 0.5, 0.8), abs=1e-6)
    got = np.array(person.keypoints.points)
    np.testing.assert_allclose(got[:, 0], poses[0, 0, :, 1], atol=1e-7)  # x from column 1
    np.testing.assert_allclose(got[:, 1], poses[0, 0, :, 0], atol=1e-7)
    assert person.keypoints.names == COCO_POINTS


def test_points_follow_the_frame_mapping_of_a_letterbox():
    from torchstream.results.data import FrameMapping

    arrays = keypoint_arrays(1)
    mapping = FrameMapping(sx=2.0, ox=-0.5, sy=1.0, oy=0.0)
    (det,), _ = detect(arrays, TV_NAMES, DetectionParams(), SIZE, mapping)
    x, y, _ = det.keypoints.points[0]
    assert x == pytest.approx(-0.5 + 2.0 * arrays[3][0, 0, 0] / SIZE[0])
    assert y == pytest.approx(arrays[3][0, 0, 1] / SIZE[1])


def test_named_points_and_connections_of_another_model():
    arrays = keypoint_arrays(1, points=3)
    params = DetectionParams(point_names=parse_point_names("<head,hand,foot>"),
                             point_connections=parse_point_connections("head,hand,hand,foot"))
    (det,), _ = detect(arrays, TV_NAMES, params, SIZE)
    assert det.keypoints.names == ("head", "hand", "foot")
    assert det.keypoints.connections == ((0, 1), (1, 2))
    unnamed = detect(arrays, TV_NAMES, DetectionParams(), SIZE)[0][0].keypoints
    assert unnamed.names == ("0", "1", "2") and unnamed.connections == ()
    assert point_set(3, ("a", "b", "c"), parse_point_connections("<a-c>")).connections == \
        ((0, 2),)


@pytest.mark.parametrize("names, connections, message", [
    ("<a,b>", "<a,c>", r"names c, which 'point-names' \(a, b\) does not hold"),
    ("<a,b,a>", "", "names a more than once"),
    ("<a,b>", "<a,b,b>", "holds 3 names"),
])
def test_connections_naming_missing_points_are_refused(names, connections, message):
    with pytest.raises(ConfigError, match=message):
        DetectionParams(point_names=parse_point_names(names),
                        point_connections=parse_point_connections(connections))


def test_default_names_with_a_missing_connection_and_a_wrong_count_are_refused():
    arrays = keypoint_arrays(1, points=3)
    with pytest.raises(ConfigError, match="names nose"):
        detect(arrays, TV_NAMES, DetectionParams(
            point_connections=parse_point_connections("<nose-0>")), SIZE)
    with pytest.raises(TorchstreamError, match="has 2 names but the model gives 3 points"):
        detect(arrays, TV_NAMES, DetectionParams(point_names=("a", "b")), SIZE)


def test_keypoints_travel_in_the_metadata_json_and_overlay():
    k = Keypoints(((0.2, 0.3, 0.9), (0.6, 0.7, -1.5), (0.25, 0.9, 0.1)), ("a", "b", "c"),
                  ((0, 1),))
    region = Region(0.1, 0.2, 0.7, 0.95, "person", 1, 0.9, 1, object_id=4, keypoints=k)
    back, _ = decode_results(encode_results(FrameResults(regions=[region])))
    assert back.regions == [region]
    plain = Region(0.1, 0.2, 0.7, 0.95, "person", 1, 0.9, 2)
    assert decode_results(encode_results(FrameResults(regions=[plain])))[0].regions == [plain]
    record = frame_record(FrameResults(regions=[region]), 0, 0, 0, 200, 100)
    points = json.loads(json.dumps(record))["regions"][0]["keypoints"]
    assert points["connections"] == [["a", "b"]]
    assert points["points"][1] == {"name": "b", "x": 0.6, "y": 0.7, "score": -1.5,
                                   "pixels": {"x": 120.0, "y": 70.0}}
    image = np.zeros((100, 200, 3), np.uint8)
    draw_results(image, FrameResults(regions=[region]))
    color = np.array(region_color(region), np.uint8)
    # the line from a (40, 30) to b (120, 70), and the dot on c (50, 90); nothing far off it
    for x, y in ((80, 50), (60, 40), (100, 60), (50, 90)):
        assert (image[y, x] == color).all(), (x, y)
    assert not image[80, 150].any() and not image[40, 100].any()


def test_full_frame_masks_are_cut_to_their_boxes():
    boxes, labels, scores = keypoint_arrays()[:3]
    masks = np.zeros((2, 1, SIZE[1], SIZE[0]), np.float32)
    masks[0, 0, 40:100, 70:200] = 0.9  # inside box 0 (64, 27, 320, 136)
    masks[0, 0, 0:10, 0:10] = 0.9  # outside its box: cut off
    masks[1, 0, 150:160, 310:320] = 0.5  # not above the threshold
    detections, layout = detect([boxes, labels, scores, masks],
                                ("boxes", "labels", "scores", "masks"), DetectionParams(), SIZE)
    assert layout.masks == 3 and [d.label_id for d in detections] == [1, 1]
    first, second = (d.mask for d in detections)
    # the box grown by 1/28 of its size + 2 px a side, outwards: 64 - 11.1 .. 320 + 11.1 wide
    x0, y0, x1, y1 = 52, 21, 332, 142
    assert (first.width, first.height) == (x1 - x0, y1 - y0)
    assert first.window == pytest.approx((x0 / 640, y0 / 272, x1 / 640, y1 / 272))
    np.testing.assert_array_equal(first.array(), masks[0, 0, y0:y1, x0:x1] > 0.5)
    assert first.area == pytest.approx(60 * 130 / ((x1 - x0) * (y1 - y0)))
    assert second.area == 0.0


def test_masks_of_another_shape_are_refused_by_name():
    boxes, labels, scores = keypoint_arrays()[:3]
    with pytest.raises(ConfigError, match=r"the masks output 3 is not shaped \[N,1,H,W\]"):
        detect([boxes, labels, scores, np.zeros((3, 1, 8, 8), np.float32)],
               ("boxes", "labels", "scores", "masks"), DetectionParams(), SIZE)


def test_a_mask_travels_in_the_metadata_json_and_overlay():
    cells = np.zeros((20, 40), bool)
    cells[5:15, 10:30] = True
    region = Region(0.25, 0.4, 0.75, 0.8, "cup", 47, 0.8, 1, mask=Mask.from_array(cells))
    back, _ = decode_results(encode_results(FrameResults(regions=[region])))
    assert back.regions == [region]
    record = json.loads(json.dumps(frame_record(FrameResults(regions=[region]), 0, 0, 0, 160,
                                                160)))
    mask = record["regions"][0]["mask"]
    assert (mask["width"], mask["height"]) == (40, 20) and sum(mask["counts"]) == 800
    image = np.full((160, 160, 3), 100, np.uint8)
    draw_results(image, FrameResults(regions=[region]), lines_thickness=1)
    color = np.array(region_color(region), np.float32)
    blended = (100 * (1 - 0.45) + color * 0.45 + 0.5).astype(np.uint8)
    # the box is pixels 40..119 x 64..127; the mask covers its middle: 60..99 x 80..111
    assert (image[96, 80] == blended).all()
    assert (image[70, 50] == 100).all()  # in the box, off the mask
    assert (image[100, 40] == np.array(region_color(region))).all()  # the outline


# --- through the bin, against torchvision -------------------------------------------------------


def reference_and_threshold(model, frames):
    """torchvision's outputs on ``frames``, and a threshold in the widest gap among the 10 best
    scores per frame (float noise cannot move a detection across it)."""
    with torch.inference_mode():
        expected = model(frames_to_tensors(frames))
    ranked = np.sort(np.concatenate([e["scores"].numpy() for e in expected]))[::-1]
    k = max(range(len(frames), min(len(ranked), 10 * len(frames))),
            key=lambda i: ranked[i - 1] - ranked[i])
    return expected, float(ranked[k - 1] + ranked[k]) / 2


@pytest.fixture(scope="module")
def keypoint_model(tmp_path_factory):
    model = seeded_detector("keypointrcnn_resnet50_fpn", decode_frames(BIKES, 2), 1.5)
    weights = save_state_dict(model, tmp_path_factory.mktemp("kp") / "keypointrcnn.pth")
    return model, weights


@pytest.mark.slow
def test_object_detect_keypoints_equal_torchvision(keypoint_model):
    model, weights = keypoint_model
    frames = decode_frames(BIKES, 1, start=140)  # ~5 s of CPU a frame for each side
    expected, threshold = reference_and_threshold(model, frames)
    run = run_results(
        f"appsrc name=src ! object_detect model={KEYPOINT_MODEL} model-weights={weights} "
        f"threshold={threshold} labels-file={COCO} engine=torch ! appsink name=sink", frames,
        timeout=300)
    assert run.result.ok, run.error
    h, w = frames[0].shape[:2]
    scale = np.array([w, h, w, h], np.float64)
    compared = 0
    for out, ref in zip(run.per_sink["sink"], expected, strict=True):
        keep = ref["scores"].numpy() >= threshold
        regions = out.results.regions
        assert [r.label for r in regions] == ["person"] * int(keep.sum())
        for region, box, points, point_scores in zip(
                regions, ref["boxes"].numpy()[keep], ref["keypoints"].numpy()[keep],
                ref["keypoints_scores"].numpy()[keep], strict=True):
            got_box = np.array([region.x_min, region.y_min, region.x_max, region.y_max])
            assert box_iou(got_box * scale, np.clip(box, 0, scale)) >= 0.99
            kp = region.keypoints
            assert kp.names == COCO_POINTS and len(kp.connections) == 19
            pixels = np.array(kp.pixels(w, h))
            assert np.abs(pixels - points[:, :2]).max() <= 0.5
            assert np.abs(np.array(kp.points)[:, 2] - point_scores).max() <= 1e-3
            compared += 1
    assert compared >= len(frames)


def test_point_names_of_another_count_fail_the_stream_with_both_counts(movenet):
    """object_detect passes point-names on: MoveNet's 17 points against 3 names stop the
    stream, naming both counts."""
    run = run_results(f"appsrc name=src ! object_detect model={movenet} "
                      f"model-proc={MODEL_PROC_DIR / 'movenet.json'} point-names=<a,b,c> ! "
                      "appsink name=sink", decode_frames(BIKES, 1, start=119), timeout=300)
    assert not run.result.ok
    assert "'point-names' has 3 names but the model gives 17 points" in run.error


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def mask_model(tmp_path_factory):
    model = seeded_detector("maskrcnn_resnet50_fpn", decode_frames(BIKES, 2), 6.0)
    return model, save_state_dict(model, tmp_path_factory.mktemp("mask") / "maskrcnn.pth")


@pytest.mark.slow
def test_object_detect_masks_equal_torchvision(mask_model):
    model, weights = mask_model
    frames = decode_frames(BIKES, 1, start=140)  # ~5 s of CPU a frame for each side
    expected, threshold = reference_and_threshold(model, frames)
    run = run_results(
        f"appsrc name=src ! object_detect model={MASK_MODEL} model-weights={weights} "
        f"threshold={threshold} labels-file={COCO} engine=torch ! appsink name=sink", frames,
        timeout=300)
    assert run.result.ok, run.error
    h, w = frames[0].shape[:2]
    compared = 0
    for out, ref in zip(run.per_sink["sink"], expected, strict=True):
        keep = ref["scores"].numpy() >= threshold
        regions = out.results.regions
        assert [r.label_id for r in regions] == ref["labels"].numpy()[keep].tolist()
        for region, ref_mask in zip(regions, ref["masks"].numpy()[keep], strict=True):
            x, y, bw, bh = region.mask_pixels(w, h)
            assert (region.mask.width, region.mask.height) == (bw, bh)
            assert x <= region.pixels(w, h)[0] and x + bw >= sum(region.pixels(w, h)[::2])
            pasted = np.zeros((h, w), bool)
            pasted[y:y + bh, x:x + bw] = region.mask.array()
            assert mask_iou(pasted, ref_mask[0] > 0.5) >= 0.99
            compared += 1
    assert compared >= len(frames)


def test_a_mask_model_with_too_few_labels_fails_naming_the_label_id():
    """tensor_postproc_detection, where object_detect's labels go, on a mask detector's
    outputs (torchvision's names and layout): a label id past the labels given stops the
    stream, naming the id."""
    masks = np.zeros((2, 1, 48, 64), np.float32)
    masks[:, :, 10:30, 10:40] = 1.0
    arrays = [np.array([[10, 10, 40, 30], [5, 5, 20, 20]], np.float32),
              np.array([1, 3], np.int64), np.array([0.9, 0.8], np.float32), masks]
    names = ("boxes", "labels", "scores", "masks")
    infos = tuple(TensorInfo(str(a.dtype), (0, *a.shape[1:])) for a in arrays)
    harness = Harness("tensor_postproc_detection", labels="<person,bicycle>", threshold=0.0)
    assert harness.start(TensorsConfig(infos).to_caps_string()), harness.error()
    buf = buffer_from_tensors(arrays)
    attach_tensors_record(buf, TensorsRecord(
        MASK_MODEL, names, tuple(i.dtype for i in infos),
        format_dimensions([a.shape for a in arrays]), ("float32",),
        format_dimensions([(3, 48, 64)])))
    assert harness.push(buf) == Gst.FlowReturn.ERROR
    error = harness.error()
    assert re.search(r"label id 3 is outside the 2 labels of property 'labels'", error), error
    harness.stop()


def test_object_detect_gives_movenet_s_keypoints_on_a_real_cyclist(movenet):
    """The pretrained MoveNet Lightning through object_detect and its model-proc (letterbox
    192, RGB 0..255) against the model called on the same letterbox made with torchvision:
    points within 0.5 px of the frame, scores 1e-4."""
    from torchvision.transforms import functional as F

    frames = decode_frames(BIKES, 3, start=119)
    run = run_results(f"appsrc name=src ! object_detect model={movenet} "
                      f"model-proc={MODEL_PROC_DIR / 'movenet.json'} ! appsink name=sink",
                      frames, timeout=300)
    assert run.result.ok, run.error
    model = torch.jit.load(str(movenet)).eval()
    h, w = frames[0].shape[:2]
    scale = 192 / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    top, left = (192 - nh) // 2, (192 - nw) // 2
    for out, frame in zip(run.per_sink["sink"], frames, strict=True):
        image = F.resize(torch.from_numpy(frame).permute(2, 0, 1), [nh, nw], antialias=True)
        box = torch.zeros(3, 192, 192, dtype=torch.uint8)
        box[:, top:top + nh, left:left + nw] = image
        with torch.no_grad():
            ref = model(box[None].float())[0, 0].numpy().astype(np.float64)  # y, x, score
        # the nw x nh picture inside the box is the whole frame
        ref_px = np.stack([(ref[:, 1] * 192 - left) * w / nw, (ref[:, 0] * 192 - top) * h / nh], 1)
        [person] = out.results.regions
        assert person.label == "person" and person.confidence >= 0.4
        kp = person.keypoints
        assert np.abs(np.array(kp.pixels(w, h)) - ref_px).max() <= 0.5
        assert np.abs(np.array(kp.points)[:, 2] - ref[:, 2]).max() <= 1e-4
        # on the cyclist (he stands at x 350..480 of the 640 px frame)
        nose = ref_px[COCO_POINTS.index("nose")]
        assert 350 <= nose[0] <= 480 and nose[1] < 80
