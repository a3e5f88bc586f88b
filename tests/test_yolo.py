"""YOLO detectors through object_detect: a YOLOv8-architecture module written here (backbone,
anchor-free DFL head, seeded weights), a YOLOv5-style objectness head and an end-to-end
[N,6] head, exported as TorchScript and torch.export files, run on real letterboxed frames;
the regions equal this file's own numpy decode + NMS of the same model's raw outputs."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from tests.conftest import BIKES
from tests.helpers import decode_frames
from tests.results_helpers import run_results
from torchstream.decode.detection import DetectionParams, detect
from torchstream.environment import LABELS_DIR, MODEL_PROC_DIR
from torchstream.errors import ConfigError
from torchstream.plan.chain import plan_chain
from torchstream.plan.modelproc import load_model_proc, parse_model_proc

CLASSES = 80
COCO_80 = LABELS_DIR / "coco_80.txt"
FILL = 114  # the letterbox's grey, as YOLO's training code pads
CONFIDENCE, IOU = 0.3, 0.5
FRAMES = 8


# --- the models ------------------------------------------------------------------------------


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.SiLU())


class Backbone(nn.Module):
    """Five stride-2 stages; the features at strides 8, 16 and 32 feed the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv(3, 8, 2), conv(8, 16, 2))
        self.p3, self.p4, self.p5 = conv(16, 24, 2), conv(24, 32, 2), conv(32, 48, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        return [p3, p4, self.p5(p4)]


STRIDES = (8, 16, 32)
CHANNELS = (24, 32, 48)


def anchors(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (x, y) in input pixels and their strides, level after level."""
    points, strides = [], []
    for f, stride in zip(features, STRIDES, strict=True):
        h, w = f.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5)
        strides.append(torch.full((h * w, 1), float(stride)))
    return torch.cat(points) , torch.cat(strides)


class YoloV8(nn.Module):
    """YOLOv8's anchor-free head: per level a box branch (4 x 16 distance bins, DFL) and a
    class branch (sigmoid); output [B, 4+nc, N] cx, cy, w, h (input pixels), class scores."""

    reg_max = 16

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.box = nn.ModuleList(nn.Sequential(conv(c, 32), nn.Conv2d(32, 4 * self.reg_max, 1))
                                 for c in CHANNELS)
        self.cls = nn.ModuleList(nn.Sequential(conv(c, 32), nn.Conv2d(32, CLASSES, 1))
                                 for c in CHANNELS)
        self.register_buffer("bins", torch.arange(self.reg_max, dtype=torch.float32))

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box corners x1, y1, x2, y2 [B, N, 4], class scores [B, N, nc], anchor strides."""
        features = self.backbone(x)
        b = x.shape[0]
        dist = torch.cat([m(f).reshape(b, 4 * self.reg_max, -1)
                          for m, f in zip(self.box, features, strict=True)], 2)
        scores = torch.cat([m(f).reshape(b, CLASSES, -1)
                            for m, f in zip(self.cls, features, strict=True)], 2).sigmoid()
        dist = dist.reshape(b, 4, self.reg_max, -1).softmax(2)
        ltrb = (dist * self.bins[None, None, :, None]).sum(2).transpose(1, 2)  # [B, N, 4]
        points, strides = anchors(features)
        corners = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1) * strides
        return corners, scores.transpose(1, 2), strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corners, scores, _ = self.raw(x)
        xy = (corners[..., :2] + corners[..., 2:]) / 2
        wh = corners[..., 2:] - corners[..., :2]
        return torch.cat([xy, wh, scores], -1).transpose(1, 2)  # [B, 4+nc, N]


class YoloV5(YoloV8):
    """An objectness head: [B, N, 5+nc] cx, cy, w, h, objectness, class scores (the box of the
    anchor-free branch, the objectness from its own 1x1 convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.obj = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corners, scores, _ = self.raw(x)
        features = self.backbone(x)
        obj = torch.cat([m(f).reshape(x.shape[0], 1, -1)
                         for m, f in zip(self.obj, features, strict=True)], 2).sigmoid()
        xy = (corners[..., :2] + corners[..., 2:]) / 2
        wh = corners[..., 2:] - corners[..., :2]
        return torch.cat([xy, wh, obj.transpose(1, 2), scores], -1)


class YoloV10(YoloV8):
    """An end-to-end head: the 300 best boxes as [B, 300, 6] x1, y1, x2, y2, score, class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corners, scores, _ = self.raw(x)
        best, label = scores.max(-1)
        top = best.topk(300, dim=1).indices
        pick = top[..., None]
        return torch.cat([corners.gather(1, pick.expand(-1, -1, 4)),
                          best.gather(1, top)[..., None],
                          label.gather(1, top)[..., None].float()], -1)


CLASS_GAIN, CLASS_BIAS, BOX_GAIN = 0.2, -4.0, 1.0


@functools.cache
def calibration_frames() -> torch.Tensor:
    frames = decode_frames(BIKES, 4, start=0)
    return torch.stack([letterbox(f, 320)[0] for f in frames])


def seeded(cls: type[YoloV8]) -> YoloV8:
    """Seeded weights whose outputs depend on the picture as a trained detector's do: the
    batch norms take their statistics from real frames (else each layer shrinks the signal
    and every box scores alike), the class logits spread around -4, so that a few boxes per
    frame score above 0.3, and the distance bins are peaked (boxes of varied sizes)."""
    torch.manual_seed(0)
    model = cls()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batch
    with torch.no_grad():
        model.train()(calibration_frames())
        for branch in model.cls:
            branch[1].weight.mul_(CLASS_GAIN)
            branch[1].bias.fill_(CLASS_BIAS)
        for branch in model.box:
            branch[1].weight.mul_(BOX_GAIN)
        for conv_1x1 in getattr(model, "obj", ()):
            conv_1x1.bias.fill_(3.0)  # objectness ~0.95: the class score decides
    return model.eval()


def export(model: nn.Module, size: int, path: Path, kind: str) -> Path:
    """TorchScript (traced) or torch.export (batch dim dynamic, 1 to 16) of ``model``."""
    example = torch.rand(2, 3, size, size)
    if kind == "ts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.14: it says so
            torch.jit.save(torch.jit.trace(model, example), str(path))
    else:
        batch = torch.export.Dim("batch", min=1, max=16)
        program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(path))
    return path


# --- the test's own reference ----------------------------------------------------------------


def letterbox(frame: np.ndarray, size: int) -> tuple[torch.Tensor, float, int, int]:
    """The frame fitted in size x size (torchvision's antialiased bilinear resize), centred on
    grey, as float [0, 1]; the scale and the picture's left and top offset."""
    h, w = frame.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
    if (nh, nw) != (h, w):
        image = TF.resize(image, [nh, nw], antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = torch.full((3, size, size), FILL, dtype=torch.uint8)
    canvas[:, top:top + nh, left:left + nw] = image
    return canvas.float() / 255, scale, left, top


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[int]:
    """Per label, highest score first: drop a box whose IoU with a kept one exceeds IOU."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if labels[k] == labels[i]]
        if same:
            k = np.array(same)
            x1 = np.maximum(boxes[k, 0], boxes[i, 0])
            y1 = np.maximum(boxes[k, 1], boxes[i, 1])
            x2 = np.minimum(boxes[k, 2], boxes[i, 2])
            y2 = np.minimum(boxes[k, 3], boxes[i, 3])
            inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
            area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
            if (inter / (area(boxes[k]) + area(boxes[i]) - inter) > IOU).any():
                continue
        kept.append(int(i))
    return kept


def reference(output: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2 input pixels), scores, labels of one image's raw output."""
    if layout == "v10":
        rows = output[output[:, 4] >= CONFIDENCE].astype(np.float64)
        return rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)
    if layout == "v8":
        rows = output.T.astype(np.float64)  # [N, 4+nc]
        class_scores = rows[:, 4:]
    else:
        rows = output.astype(np.float64)
        class_scores = rows[:, 5:] * rows[:, 4:5]
    labels = class_scores.argmax(1)
    scores = class_scores[np.arange(len(rows)), labels]
    keep = scores >= CONFIDENCE
    cx, cy, w, h = rows[keep, :4].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    scores, labels = scores[keep], labels[keep]
    kept = greedy_nms(boxes, scores, labels)
    return boxes[kept], scores[kept], labels[kept]


def expected_regions(model: nn.Module, frames: list[np.ndarray], size: int, layout: str):
    """Per frame: (box in frame pixels, label id, score) of the detections, best first."""
    out = []
    for frame in frames:
        x, scale, left, top = letterbox(frame, size)
        with torch.inference_mode():
            raw = model(x[None])[0].numpy()
        boxes, scores, labels = reference(raw, layout)
        h, w = frame.shape[:2]
        boxes = (boxes - [left, top, left, top]) / scale
        inside = (boxes[:, 2] > 0) & (boxes[:, 0] < w) & (boxes[:, 3] > 0) & (boxes[:, 1] < h)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        out.append([(b, int(c), float(s)) for b, c, s, k in
                    zip(boxes, labels, scores, inside, strict=True) if k])
    return out


# --- the pipeline ----------------------------------------------------------------------------


def model_proc(tmp_path: Path, converter: str, size: int) -> Path:
    path = tmp_path / f"{converter}-{size}.json"
    path.write_text(json.dumps({
        "json_schema_version": "2.2.0",
        "input_preproc": [{"params": {
            "color_format": "RGB", "resize": "aspect-ratio", "resize_size": size,
            "range": [0.0, 1.0], "padding": {"fill_value": [FILL, FILL, FILL]}}}],
        "output_postproc": [{"converter": converter, "labels": str(COCO_80),
                             "classes": CLASSES, "confidence_threshold": CONFIDENCE,
                             "iou_threshold": IOU}],
    }))
    return path


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return decode_frames(BIKES, FRAMES, start=40)


def through_object_detect(model_file: Path, proc: Path, frames, batch: int,
                          engine: str = "torch"):
    run = run_results(f"appsrc name=src ! object_detect model={model_file} model-proc={proc} "
                      f"batch-size={batch} engine={engine} ! appsink name=sink", frames,
                      timeout=300)
    assert run.result.ok, run.error
    out = run.per_sink["sink"]
    assert len(out) == len(frames)
    return [o.results.regions for o in out]


def assert_same(regions_per_frame, expected_per_frame, frames, tolerance_px: float) -> int:
    names = COCO_80.read_text().splitlines()
    count = 0
    for regions, expected, frame in zip(regions_per_frame, expected_per_frame, frames,
                                        strict=True):
        h, w = frame.shape[:2]
        assert len(regions) == len(expected), (len(regions), len(expected))
        for region, (box, label, score) in zip(regions, expected, strict=True):
            got = np.array([region.x_min * w, region.y_min * h, region.x_max * w,
                            region.y_max * h])
            assert np.abs(got - box).max() <= tolerance_px, (got, box)
            assert region.label_id == label and region.label == names[label]
            assert abs(region.confidence - score) <= 1e-5
        count += len(regions)
    return count


@pytest.mark.parametrize(("size", "kind", "batch"), [
    (640, "ts", 1), (640, "pt2", 4), (320, "ts", 4), (320, "pt2", 1),
])
def test_yolo_v8_through_object_detect_equals_the_reference(tmp_path, frames, size, kind,
                                                           batch):
    model = seeded(YoloV8)
    path = export(model, size, tmp_path / f"yolov8.{kind}", kind)
    regions = through_object_detect(path, model_proc(tmp_path, "yolo_v8", size), frames, batch)
    expected = expected_regions(model, frames, size, "v8")
    found = assert_same(regions, expected, frames, 1e-3)
    assert found >= FRAMES  # real detections to compare, not an empty match
    # NMS removed boxes: more candidates than detections on the first frame
    x, *_ = letterbox(frames[0], size)
    with torch.inference_mode():
        raw = model(x[None])[0].numpy()
    assert (raw[4:].max(0) >= CONFIDENCE).sum() > len(expected[0])


@pytest.mark.parametrize(("cls", "converter", "layout"), [
    (YoloV5, "yolo_v5", "v5"), (YoloV10, "yolo_v10", "v10"),
])
@pytest.mark.parametrize("batch", [1, 4])
def test_objectness_and_end_to_end_heads(tmp_path, frames, cls, converter, layout, batch):
    model = seeded(cls)
    path = export(model, 320, tmp_path / f"{converter}.ts", "ts")
    regions = through_object_detect(path, model_proc(tmp_path, converter, 320), frames, batch)
    found = assert_same(regions, expected_regions(model, frames, 320, layout), frames, 1e-3)
    assert found >= FRAMES // 2  # real detections to compare, not an empty match


def test_the_layout_is_told_from_the_shape_without_a_model_proc(tmp_path, frames):
    """No converter named: [84, N] is read as a YOLOv8 head (the debug log says so)."""
    model = seeded(YoloV8)
    path = export(model, 320, tmp_path / "yolov8.ts", "ts")
    proc = tmp_path / "pre.json"
    proc.write_text(json.dumps({"json_schema_version": "2.2.0", "input_preproc": [{"params": {
        "resize": "aspect-ratio", "resize_size": 320, "range": [0.0, 1.0],
        "padding": {"fill_value": [FILL]}}}], "output_postproc": [
            {"converter": "detection", "labels": str(COCO_80),
             "threshold": CONFIDENCE, "iou_threshold": IOU}]}))
    regions = through_object_detect(path, proc, frames[:3], 1)
    assert_same(regions, expected_regions(model, frames[:3], 320, "v8"), frames[:3], 1e-3)


def test_engine_auto_gives_the_same_detections(tmp_path, frames):
    """Whichever engine auto picks passed the equality check: the same regions within the
    engines' tolerance (1e-5 relative of a 320-pixel coordinate)."""
    model = seeded(YoloV8)
    path = export(model, 320, tmp_path / "yolov8.pt2", "pt2")
    regions = through_object_detect(path, model_proc(tmp_path, "yolo_v8", 320), frames, 1,
                                    engine="auto")
    expected = expected_regions(model, frames, 320, "v8")
    h, w = frames[0].shape[:2]
    for got, want in zip(regions, expected, strict=True):
        assert [r.label_id for r in got][:3] == [label for _, label, _ in want][:3]
        for region, (box, _, score) in zip(got[:3], want[:3], strict=True):
            corners = [region.x_min * w, region.y_min * h, region.x_max * w, region.y_max * h]
            assert np.abs(np.array(corners) - box).max() <= 0.05
            assert abs(region.confidence - score) <= 1e-3


# --- decoding without a pipeline -------------------------------------------------------------


def test_decode_and_nms_of_every_layout_match_the_reference():
    model = seeded(YoloV8)
    x = torch.rand(1, 3, 320, 320)
    with torch.inference_mode():
        v8 = model(x)[0].numpy()
    params = DetectionParams(threshold=CONFIDENCE, iou_threshold=IOU, labels=None)
    for array, converter, layout in ((v8, "yolo_v8", "v8"), (v8.T.copy(), "yolo_v8", None)):
        got, found = detect([array[None]], (), DetectionParams(
            threshold=CONFIDENCE, iou_threshold=IOU, converter=converter, classes=CLASSES),
            (320, 320))
        assert found.yolo is not None and found.yolo.classes == CLASSES
        boxes, scores, labels = reference(v8, "v8")
        assert [d.label_id for d in got] == labels.tolist()
        np.testing.assert_allclose([d.confidence for d in got], scores, atol=1e-6)
        np.testing.assert_allclose([[d.x_min, d.y_min, d.x_max, d.y_max] for d in got],
                                   np.clip(boxes / 320, 0, 1), atol=1e-8)
        assert layout is None or found.yolo.channels_first
    # told from the shape: [84, N] is anchor-free, channels first
    _, found = detect([v8], (), params, (320, 320))
    assert found.yolo.kind == "anchor-free" and "channels first" in found.yolo.why


def test_nms_for_any_detector_output():
    """Two overlapping boxes of one label and one of another: nms keeps the best of the pair."""
    rows = np.array([[10, 10, 50, 50, 0.9, 1], [12, 12, 52, 52, 0.8, 1],
                     [12, 12, 52, 52, 0.7, 2]], np.float32)
    params = dict(threshold=0.1, box_index=0, confidence_index=4, label_index=5)
    without, _ = detect([rows], (), DetectionParams(**params), (100, 100))
    assert len(without) == 3
    per_class, _ = detect([rows], (), DetectionParams(nms=True, **params), (100, 100))
    assert [(d.label_id, round(d.confidence, 3)) for d in per_class] == [(1, 0.9), (2, 0.7)]
    agnostic, _ = detect([rows], (), DetectionParams(nms=True, class_agnostic=True, **params),
                         (100, 100))
    assert [d.label_id for d in agnostic] == [1]
    capped, _ = detect([rows], (), DetectionParams(max_detections=2, **params), (100, 100))
    assert [round(d.confidence, 3) for d in capped] == [0.9, 0.8]


# --- model-proc files ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "converter", "size"), [
    ("yolo-v8.json", "yolo_v8", "640"), ("yolo-v5.json", "yolo_v5", "640"),
    ("yolo-v10.json", "yolo_v10", "640"),
])
def test_shipped_yolo_model_procs_plan_their_chain(name, converter, size):
    proc = load_model_proc(MODEL_PROC_DIR / name)
    assert proc.output_postproc[0].converter == "yolo"
    chain = plan_chain("object_detect", {"model": "yolo.torchscript", "model-proc": name})
    steps = {s.name: s for s in chain.preprocess + chain.postprocess}
    assert steps["format"].props["caps"] == "video/x-raw,format=RGBP"
    resize = steps["resize"].props
    assert (resize["mode"], resize["size"], resize["fill"]) == ("letterbox", size,
                                                                 "<114.0,114.0,114.0>")
    post = steps["postproc"].props
    assert post["converter"] == converter and post["classes"] == CLASSES
    assert post["threshold"] == 0.25 and post["iou-threshold"] == 0.45
    assert post["max-detections"] == 300


@pytest.mark.parametrize(("entry", "message"), [
    ({"converter": "yolo_v8", "confidence_threshold": -0.1},
     "output_postproc[0].confidence_threshold: -0.1 is not in 0..1"),
    ({"converter": "yolo_v8", "iou_threshold": 1.5},
     "output_postproc[0].iou_threshold: 1.5 is not in 0..1"),
    ({"converter": "yolo_v5", "anchors": [10, 13]},
     "raw YOLO grid outputs (anchors, masks, cells) are not supported"),
    ({"converter": "yolo_v8", "classes": 3, "labels": ["a", "b"]},
     "output_postproc[0].classes: 3 classes, but labels names 2"),
    ({"converter": "yolo_v8", "classes": 3, "labels": "coco_80.txt"},
     "3 classes, but the labels file coco_80.txt names 80"),
    ({"converter": "yolo_v3"}, "converter 'yolo_v3' is not supported yet"),
])
def test_broken_yolo_model_procs_name_the_problem(entry, message):
    text = json.dumps({"json_schema_version": "2.2.0", "output_postproc": [entry]})
    with pytest.raises(ConfigError) as info:
        parse_model_proc(text)
    assert message in str(info.value)


def test_color_format_is_dl_streamers_spelling_of_color_space():
    def parse(params):
        text = json.dumps({"json_schema_version": "2.2.0", "input_preproc": [{"params": params}]})
        return parse_model_proc(text).input_preproc[0]

    assert parse({"color_format": "BGR"}).color_space == "BGR"
    with pytest.raises(ConfigError, match="contradicts color_space"):
        parse({"color_format": "BGR", "color_space": "RGB"})


# --- DL Streamer's padding: a border and a fill value in the letterbox ------------------------


def test_letterbox_padding_border_and_fill():
    from torchstream.elements._base import settings_class
    from torchstream.elements.tensor_resize_crop import TensorResizeCrop, resize_spec
    from torchstream.preprocess.resize import ResizeSpec

    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 272, 640), np.uint8))
    spec = ResizeSpec(size=(320,), mode="letterbox", border=(10, 20), fill=(114, 0, 7))
    settings = settings_class(TensorResizeCrop)(size="320", mode="letterbox", padding="20x10",
                                                fill="<114,0,7>")
    assert resize_spec(settings) == spec
    out = spec.apply(frame)
    assert out.shape == (3, 320, 320)
    # fitted inside the box less the border: 280 wide (x 0.4375), 119 rows high
    assert spec.resized_hw(272, 640) == (119, 280)
    top, left = (320 - 119) // 2, (320 - 280) // 2
    assert torch.equal(out[:, top:top + 119, left:left + 280],
                       TF.resize(frame, [119, 280], antialias=True))
    assert (out[0, :top] == 114).all() and (out[1, :, :left] == 0).all()
    assert (out[2, top + 119:] == 7).all() and (out[2, :, left + 280:] == 7).all()
    mapping = spec.mapping(272, 640)  # the picture's edges in the output land on the frame's
    assert abs(mapping.ox + mapping.sx * left / 320) < 1e-12
    assert abs(mapping.ox + mapping.sx * (left + 280) / 320 - 1) < 1e-12
    assert abs(mapping.oy + mapping.sy * top / 320) < 1e-12
    assert abs(mapping.oy + mapping.sy * (top + 119) / 320 - 1) < 1e-12
    with pytest.raises(ConfigError, match="apply to mode=letterbox"):
        ResizeSpec(size=(320,), border=(2, 2))
    with pytest.raises(ConfigError, match="leaves no room"):
        ResizeSpec(size=(320,), mode="letterbox", border=(160, 0))
    with pytest.raises(ConfigError, match="0..255"):
        ResizeSpec(size=(320,), mode="letterbox", fill=(300,))
