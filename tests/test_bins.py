"""The inference bins: the chain they plan, and their results on real frames against
torchvision's models called directly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import BIKES, COCKATOO
from tests.helpers import box_iou, decode_frames, feed_frames, on_samples
from tests.models import frames_to_tensors, save_state_dict, seeded_detector
from tests.results_helpers import run_results
from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end
from torchstream.plan.chain import plan_chain

REPO = Path(__file__).resolve().parents[1]
COCO = LABELS_DIR / "coco_91cl_bkgr.txt"
IMAGENET = LABELS_DIR / "imagenet_2012.txt"
IMAGENET_NAMES = IMAGENET.read_text().splitlines()
MOBILENET = "torchvision.models.mobilenet_v2"


def settings(**values) -> dict:
    return {k.replace("_", "-"): v for k, v in values.items()}


def steps(chain_stage) -> list[tuple[str, dict]]:
    return [(s.factory, s.props) for s in chain_stage]


# --- the plan ---------------------------------------------------------------------------------


def test_a_classifier_gets_its_weights_own_transform(mobilenet_weights):
    chain = plan_chain("video_inference", settings(model=MOBILENET,
                                                   model_weights=str(mobilenet_weights),
                                                   labels_file=str(IMAGENET)))
    factories = [s.factory for s in chain.preprocess]
    assert factories == ["videoconvert", "capsfilter", "tensor_convert", "tensor_resize_crop",
                         "opencv_tensor_normalize"]
    resize = chain.preprocess[3].props
    # the file is IMAGENET1K_V1's: resize 256 (DEFAULT, IMAGENET1K_V2, would be 232)
    assert (resize["size"], resize["crop"], resize["mode"]) == ("256", "224", "aspect-ratio")
    norm = chain.preprocess[4].props
    assert norm == {"range": "<0.0,1.0>", "mean": "<0.485,0.456,0.406>",
                    "std": "<0.229,0.224,0.225>"}
    assert steps(chain.postprocess) == [("tensor_postproc_label", {
        "method": "softmax", "labels": None, "labels-file": str(IMAGENET)})]
    default = plan_chain("video_inference", settings(model=MOBILENET))
    assert default.preprocess[3].props["size"] == "232"
    # no labels given: the label element takes the class names from the tensors record (the
    # weights' categories), or labels by class id when there are none: always labelled
    assert steps(default.postprocess) == [("tensor_postproc_label", {
        "method": "softmax", "labels": None, "labels-file": None})]
    own = plan_chain("video_inference", settings(model=MOBILENET, model_weights="mine.pth"))
    assert own.postprocess == default.postprocess
    # a model file's output may be anything: labelled only once it shows class scores
    assert steps(plan_chain("video_inference", settings(model="mine.ts")).postprocess) == [
        ("tensor_postproc_label", {"method": "softmax", "labels": None, "labels-file": None,
                                   "if-scores": True})]


def test_a_detector_gets_the_full_frame_in_0_1():
    chain = plan_chain("object_detect", settings(
        model="torchvision.models.detection.ssdlite320_mobilenet_v3_large", threshold=-1.0))
    assert [s.factory for s in chain.preprocess] == [
        "videoconvert", "capsfilter", "tensor_convert", "opencv_tensor_normalize"]
    assert chain.preprocess[-1].props == {"range": "<0.0,1.0>"}
    assert steps(chain.postprocess) == [("tensor_postproc_detection", {
        "labels": None, "labels-file": None})]


def test_object_classify_crops_the_regions():
    chain = plan_chain("object_classify", settings(model=MOBILENET, inference_region="roi-list",
                                                   object_class="car,truck"))
    roi = chain.preprocess[3]
    assert roi.factory == "tensor_roi_crop"
    assert roi.props["object-class"] == "car,truck" and roi.props["crop"] == "224"
    assert chain.postprocess[0].factory == "tensor_postproc_label"


@pytest.mark.parametrize("model, message", [
    ("model.tflite", "no inference backend for 'model.tflite'; supported: torchvision.models.*, "
                     "timm.*, .pt, .pth"),
    ("openvino/model.bin", "no inference backend"),
    ("", "property 'model' is not set"),
])
def test_models_without_a_backend_are_refused_by_kind(model, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace(".", r"\.")):
        plan_chain("object_detect", settings(model=model))


def test_intervals_and_regions():
    chain = plan_chain("object_detect", settings(
        model="torchvision.models.detection.ssdlite320_mobilenet_v3_large",
        inference_interval=3, repeat_metadata=True))
    assert (chain.skip_interval, chain.repeat) == (3, True)
    chain = plan_chain("object_classify", settings(model=MOBILENET, inference_region="roi-list",
                                                   reclassify_interval=2))
    assert (chain.skip_interval, chain.repeat) == (2, True)
    with pytest.raises(ConfigError, match="inference-region=roi-list is not supported yet"):
        plan_chain("object_detect", settings(model="torchvision.models.detection."
                                             "ssdlite320_mobilenet_v3_large",
                                             inference_region="roi-list"))
    with pytest.raises(ConfigError, match="'inference-region' must be one of"):
        plan_chain("video_inference", settings(model=MOBILENET, inference_region="all"))


# --- object_detect against torchvision --------------------------------------------------------


def detection_frames() -> list[np.ndarray]:
    return decode_frames(BIKES, 6, start=140)


@pytest.mark.slow
@pytest.mark.parametrize("name, bias", [
    ("ssdlite320_mobilenet_v3_large", 15.0),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", 6.0),
])
def test_object_detect_equals_torchvision(name, bias, tmp_path):
    frames = detection_frames()
    model = seeded_detector(name, decode_frames(BIKES, 8), bias)
    weights = save_state_dict(model, tmp_path / f"{name}.pth")
    with torch.inference_mode():
        expected = model(frames_to_tensors(frames))
    scores = np.concatenate([e["scores"].numpy() for e in expected])
    assert len(scores) > len(frames)
    # a threshold keeping one to eight detections per frame on average, in the widest gap
    # between two scores there, so that float noise cannot move a detection across it
    ranked = np.sort(scores)[::-1]
    k = max(range(len(frames), 8 * len(frames)), key=lambda i: ranked[i - 1] - ranked[i])
    threshold = float(ranked[k - 1] + ranked[k]) / 2
    assert np.abs(scores - threshold).min() > 1e-6
    model_name = f"torchvision.models.detection.{name}"
    run = run_results(
        f"appsrc name=src ! object_detect model={model_name} model-weights={weights} "
        f"threshold={threshold} labels-file={COCO} ! appsink name=sink", frames)
    assert run.result.ok, run.error
    received = run.per_sink["sink"]
    assert len(received) == len(frames)
    h, w = frames[0].shape[:2]
    scale = np.array([w, h, w, h], np.float64)
    names = COCO.read_text().splitlines()
    counts = []
    for out, ref in zip(received, expected, strict=True):
        keep = ref["scores"].numpy() >= threshold
        regions = out.results.regions
        counts.append(len(regions))
        assert [r.label_id for r in regions] == ref["labels"].numpy()[keep].tolist()
        assert [r.label for r in regions] == [names[i] for i in ref["labels"].numpy()[keep]]
        got = np.array([r.confidence for r in regions])
        assert np.abs(got - ref["scores"].numpy()[keep]).max(initial=0) <= 1e-4
        boxes = np.array([[r.x_min, r.y_min, r.x_max, r.y_max] for r in regions]).reshape(-1, 4)
        ref_boxes = np.clip(ref["boxes"].numpy()[keep], 0, scale)
        for got_box, ref_box in zip(boxes * scale, ref_boxes, strict=True):
            assert box_iou(got_box, ref_box) >= 0.99
        # the frame itself comes out: the bin's output is the original video
        assert out.caps.startswith("video/x-raw") and out.arrays[0].size == h * w * 3
    assert sum(counts) > 0 and len(set(counts)) > 1, counts


# --- video_inference against torchvision's reference pipeline ---------------------------------


@pytest.fixture(scope="module")
def mobilenet(mobilenet_weights):
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    return model.eval(), weights.transforms()


@pytest.mark.slow
@pytest.mark.parametrize("video, start", [(BIKES, 0), (COCKATOO, 100)])
def test_video_inference_top1_equals_torchvision_reference(video, start, mobilenet,
                                                           mobilenet_weights):
    model, transform = mobilenet
    frames = decode_frames(video, 110, start=start)
    assert len(frames) == 110
    run = run_results(
        f"appsrc name=src ! video_inference model={MOBILENET} model-weights={mobilenet_weights} "
        f"labels-file={IMAGENET} ! appsink name=sink", frames, timeout=300)
    assert run.result.ok, run.error
    received = run.per_sink["sink"]
    assert len(received) == len(frames)
    agree, worst = 0, 0.0
    for frame, out in zip(frames, received, strict=True):
        with torch.inference_mode():
            batch = transform(torch.from_numpy(frame).permute(2, 0, 1)).unsqueeze(0)
            probs = model(batch).softmax(1)[0]
        top = int(probs.argmax())
        (c,) = out.results.classifications
        agree += c.label_id == top
        assert c.label == IMAGENET_NAMES[c.label_id]
        worst = max(worst, abs(c.confidence - float(probs[c.label_id])))
    assert agree >= 0.99 * len(frames), f"{agree}/{len(frames)}"
    assert worst <= 0.02, worst


# --- inference-interval ----------------------------------------------------------------------


def run_counting(description: str, frames) -> tuple[list, int, object]:
    """Run with the bin named "bin"; -> (appsink buffers' results, buffers the inference
    element received, result)."""
    from torchstream.gst.meta import read_results

    pipeline = Gst.parse_launch(description)
    assert pipeline.set_state(Gst.State.READY) != Gst.StateChangeReturn.FAILURE
    inference = pipeline.get_by_name("bin").get_by_name("inference")
    seen = []
    inference.get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, lambda pad, info: seen.append(info.get_buffer().pts)
        or Gst.PadProbeReturn.OK)
    out = []
    on_samples(pipeline, "sink", lambda buf, caps: out.append((buf.pts, read_results(buf))))
    feed_frames(pipeline.get_by_name("src"), frames)
    result = run_to_end(pipeline, 120)
    return out, len(seen), result


@pytest.mark.parametrize("repeat", [False, True])
def test_inference_interval_runs_the_model_on_one_frame_in_three(repeat, bikes_frames,
                                                                mobilenet_weights):
    out, inferred, result = run_counting(
        f"appsrc name=src ! video_inference name=bin model={MOBILENET} "
        f"model-weights={mobilenet_weights} labels-file={IMAGENET} inference-interval=3 "
        f"repeat-metadata={str(repeat).lower()} ! appsink name=sink", bikes_frames)
    assert result.ok, result.error
    assert inferred == 4  # frames 0, 3, 6, 9 of 10
    pts = [p for p, _ in out]
    assert pts == sorted(pts) and len(pts) == len(bikes_frames)  # every frame, in order
    labelled = [i for i, (_, r) in enumerate(out) if r.classifications]
    if repeat:
        assert labelled == list(range(10))
        for i in range(10):  # the label of the last inferred frame
            assert out[i][1].classifications == out[i - i % 3][1].classifications
    else:
        assert labelled == [0, 3, 6, 9]


def test_a_bad_model_fails_the_bin_with_its_name(bikes_frames):
    run = run_results("appsrc name=src ! object_detect name=det model=model.tflite ! "
                      "appsink name=sink", bikes_frames[:2])
    assert not run.result.ok
    assert "det" in run.error and "no inference backend for 'model.tflite'" in run.error


# --- model-proc --------------------------------------------------------------------------------

SPEC_MODEL_PROC = REPO / "tests" / "data" / "model_proc" / "imagenet_classifier.json"


def test_the_spec_model_proc_plans_the_default_chain(mobilenet_weights):
    base = settings(model=MOBILENET, model_weights=str(mobilenet_weights))
    default = plan_chain("video_inference", {**base, "labels-file": str(IMAGENET)})
    with_proc = plan_chain("video_inference", {**base, "model-proc": str(SPEC_MODEL_PROC)})
    assert with_proc.preprocess == default.preprocess
    (post,) = with_proc.postprocess
    assert post.factory == "tensor_postproc_label" and post.props["method"] == "softmax"
    assert Path(post.props["labels-file"]).read_text() == IMAGENET.read_text()


def test_the_spec_model_proc_gives_the_default_results(bikes_frames, mobilenet_weights):
    runs = []
    for extra in (f"labels-file={IMAGENET}", f"model-proc={SPEC_MODEL_PROC}"):
        run = run_results(f"appsrc name=src ! video_inference model={MOBILENET} "
                          f"model-weights={mobilenet_weights} {extra} ! appsink name=sink",
                          bikes_frames[:4])
        assert run.result.ok, run.error
        runs.append([out.results.classifications for out in run.per_sink["sink"]])
    assert len(runs[0]) == 4 and runs[0] == runs[1]


@pytest.mark.parametrize("proc, message", [
    ({"json_schema_version": "2.2.0", "input_preproc": [{"format": "image", "params": {
        "resize": "aspect-ratio", "crop": "top_left"}}], "output_postproc": []},
     "params.crop='top_left' is not supported yet"),
    ({"json_schema_version": "2.2.0", "input_preproc": [{"format": "image", "params": {
        "resize": "no-aspect-ratio"}}], "output_postproc": []},
     "needs the model's input size"),
])
def test_model_proc_preprocessing_the_chain_cannot_do_is_an_error(proc, message, tmp_path):
    import json

    path = tmp_path / "proc.json"
    path.write_text(json.dumps(proc))
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_chain("video_inference", settings(model="model.ts", model_proc=str(path)))
