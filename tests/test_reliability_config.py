"""Configuration errors, element by element and bin by bin: every bad property value or file is
an ERROR on the bus that names the element, the property (or file) and the problem; the
pipeline stops within seconds and no frame reaches the sink without its results.

(pytorch_tensor_inference's model-loading failures on the bare element are in
test_inference_errors.py; here they go through the bins, and the other elements get theirs.)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_STD
from tests.reliability_helpers import (
    Raises,
    TextOutput,
    TinyClassifier,
    TinyDetector,
    expect_error,
    save_scripted,
    small_frames,
)
from torchstream.gst import GLib, Gst

REPO = Path(__file__).resolve().parents[1]
BROKEN_PROCS = REPO / "tests" / "data" / "model_proc" / "broken"
FRAMES = small_frames(2)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every kind of wrong file a user can name, made once."""
    d = tmp_path_factory.mktemp("files")
    image = d / "picture.png"
    cv2.imwrite(str(image), np.full((8, 8, 3), 127, np.uint8))
    as_model = d / "picture.pt"
    as_model.write_bytes(image.read_bytes())
    json_file = d / "labels.json"
    json_file.write_text('{"labels": ["a", "b"]}\n')
    empty = d / "empty.txt"
    empty.write_text("")
    short = d / "short.txt"
    short.write_text("zero\none\n")  # the tiny models have 10 classes / label ids up to 5
    binary = d / "binary.txt"
    binary.write_bytes(bytes(range(256)))
    directory = d / "folder.pt"
    directory.mkdir()
    weights18 = d / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights18)
    not_json = d / "proc.json"
    not_json.write_bytes(image.read_bytes())
    return {
        "image": image, "image_as_model": as_model, "json": json_file, "empty": empty,
        "short": short, "binary": binary, "directory": directory,
        "resnet18_weights": weights18, "not_json": not_json,
        "size_proc": _size_proc(d / "size_proc.json"),
        "classifier": save_scripted(TinyClassifier(10), d / "classifier.ts"),
        "detector": save_scripted(TinyDetector(3), d / "detector.ts"),
        "detector_pickle": _saved(TinyDetector(3), d / "detector.pt"),
        "raises": save_scripted(Raises(), d / "raises.ts"),
        "text_output": _saved(TextOutput(), d / "text_output.pt"),
        "out_dir": d,
    }


def _saved(module: torch.nn.Module, path: Path) -> Path:
    torch.save(module, path)  # a whole pickled module
    return path


def _size_proc(path: Path) -> Path:
    """A model-proc that gives a model file's input size (object_classify's roi-list needs it)."""
    path.write_text(json.dumps({"json_schema_version": "2.2.0", "input_preproc": [{
        "format": "image", "params": {"color_space": "RGB", "resize": "aspect-ratio",
                                      "crop": "central", "resize_size": 32, "crop_size": 32,
                                      "range": [0.0, 1.0]}}], "output_postproc": []}))
    return path


def _fill(text: str, files: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


# --- the element chains -----------------------------------------------------------------------

CLASSIFY = (
    "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert name=conv ! "
    "opencv_tensor_normalize name=norm {norm} ! pytorch_tensor_inference name=infer "
    "model={{classifier}} {infer} ! tensor_postproc_label name=post {post} ! appsink name=sink"
)
DETECT = (
    "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
    "opencv_tensor_normalize range=<0,1> ! pytorch_tensor_inference name=infer "
    "model={{detector}} ! tensor_postproc_detection name=post {post} ! appsink name=sink"
)
RESIZE = ("appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
          "tensor_resize_crop name=rc {props} ! appsink name=sink")
ROI = ("appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
       "tensor_roi_crop name=roi {props} ! appsink name=sink")


def classify(norm: str = "range=<0,1>", infer: str = "", post: str = "") -> str:
    return CLASSIFY.format(norm=norm, infer=infer, post=post)


ELEMENT_CASES = {
    # opencv_tensor_normalize
    "normalize-range-reversed": (classify(norm="range=<1,0>"), "norm", "range"),
    "normalize-range-words": (classify(norm="range=<low,high>"), "norm", "range"),
    "normalize-range-three": (classify(norm="range=<0,1,2>"), "norm", "range"),
    "normalize-mean-two-channels": (classify(norm="mean=<0.5,0.5>"), "norm", "mean"),
    "normalize-mean-words": (classify(norm="mean=<a,b,c>"), "norm", "mean"),
    "normalize-std-zero": (classify(norm="std=<0,1,1>"), "norm", "std"),
    "normalize-std-nan": (classify(norm=f"std=<nan,{IMAGENET_STD[1:]}"), "norm", "std"),
    # pytorch_tensor_inference (beyond test_inference_errors.py)
    "inference-model-unset": (CLASSIFY.replace("model={{classifier}}", "").format(
        norm="", infer="", post=""), "infer", "model"),
    "inference-image-as-model": (classify(infer="").replace("{classifier}",
                                                            "{image_as_model}"),
                                 "infer", "picture.pt"),
    "inference-directory-as-model": (classify().replace("{classifier}", "{directory}"),
                                     "infer", "directory"),
    "inference-graph-mode-removed": (classify(infer="graph-mode=trace"), "infer",
                                     "'graph-mode' was removed; use engine=torchscript"),
    "inference-engine-unknown": (classify(infer="engine=tensorrt"), "infer", "engine"),
    "inference-json-as-model": (classify().replace("{classifier}", "{json}"), "infer",
                                "labels.json"),
    "inference-weights-missing": (classify().replace(
        "model={classifier}", "model=torchvision.models.resnet18 model-weights=/no/such.pth"),
        "infer", "model-weights", "/no/such.pth"),
    "inference-image-as-weights": (classify().replace(
        "model={classifier}", "model=torchvision.models.resnet18 model-weights={image}"),
        "infer", "picture.png"),
    "inference-weights-for-a-model-file": (classify(infer="model-weights={resnet18_weights}"),
                                           "infer", "model-weights"),
    "inference-forward-raises": (classify().replace("{classifier}", "{raises}"), "infer",
                                 "deliberate failure"),
    "inference-device-cuda-index": (classify(infer="device=cuda:7"), "infer", "cuda"),
    # tensor_postproc_label
    "label-method-unknown": (classify(post="method=bogus"), "post", "method", "bogus"),
    "label-threshold-above-one": (classify(post="threshold=1.5"), "post", "threshold"),
    "label-threshold-negative": (classify(post="threshold=-0.1"), "post", "threshold"),
    "label-compound-threshold": (classify(post="method=compound compound-threshold=7"), "post",
                                 "compound-threshold"),
    "label-labels-file-missing": (classify(post="labels-file=/no/such.txt"), "post",
                                  "labels-file", "/no/such.txt"),
    "label-labels-file-empty": (classify(post="labels-file={empty}"), "post", "labels-file",
                                "empty.txt"),
    "label-labels-file-json": (classify(post="labels-file={json}"), "post", "labels-file",
                               "json"),
    "label-labels-file-image": (classify(post="labels-file={image}"), "post", "labels-file",
                                "picture.png"),
    "label-labels-file-binary": (classify(post="labels-file={binary}"), "post", "labels-file",
                                 "binary"),
    "label-labels-file-directory": (classify(post="labels-file={out_dir}"), "post",
                                    "labels-file", "directory"),
    "label-labels-file-short": (classify(post="labels-file={short}"), "post", "short.txt",
                                "10"),
    "label-labels-short": (classify(post="labels=<a,b,c>"), "post", "labels", "10"),
    "label-labels-empty-item": (classify(post="labels=<a,,c>"), "post", "labels", "empty"),
    "label-both-labels-and-file": (classify(post="labels=<a> labels-file={short}"), "post",
                                   "labels"),
    "label-layer-name-unknown": (classify(post="layer-name=nope"), "post", "nope"),
    # tensor_postproc_detection
    "detection-threshold-above-one": (DETECT.format(post="threshold=2"), "post", "threshold"),
    "detection-labels-file-missing": (DETECT.format(post="labels-file=/no/such.txt"), "post",
                                      "labels-file", "/no/such.txt"),
    "detection-labels-file-empty": (DETECT.format(post="labels-file={empty}"), "post",
                                    "labels-file"),
    "detection-labels-file-json": (DETECT.format(post="labels-file={json}"), "post",
                                   "labels-file"),
    "detection-labels-file-short": (DETECT.format(post="labels-file={short}"), "post",
                                    "short.txt"),
    "detection-box-index-out-of-range": (DETECT.format(post="box-index=9"), "post",
                                         "box-index"),
    "detection-label-index-out-of-range": (DETECT.format(post="label-index=9"), "post",
                                           "label-index"),
    # tensor_resize_crop
    "resize-size-words": (RESIZE.format(props="size=big"), "rc", "size"),
    "resize-size-zero": (RESIZE.format(props="size=0"), "rc", "size"),
    "resize-mode-unknown": (RESIZE.format(props="size=32 mode=bogus"), "rc", "mode"),
    "resize-interpolation-unknown": (RESIZE.format(props="size=32 interpolation=bogus"), "rc",
                                     "interpolation"),
    "resize-crop-words": (RESIZE.format(props="size=32 crop=x"), "rc", "crop"),
    # tensor_roi_crop
    "roi-size-words": (ROI.format(props="size=big"), "roi", "size"),
    "roi-mode-unknown": (ROI.format(props="size=32 mode=bogus"), "roi", "mode"),
    "roi-interpolation-unknown": (ROI.format(props="size=32 interpolation=x"), "roi",
                                  "interpolation"),
    # tensors of the wrong kind for the element
    "label-fed-an-image-tensor": ("appsrc name=src ! video/x-raw,format=RGB ! tensor_convert ! "
                                  "tensor_postproc_label name=post ! appsink name=sink", "post",
                                  "class scores", "[48, 64, 3]"),
    "detection-fed-an-image-tensor": ("appsrc name=src ! video/x-raw,format=RGB ! "
                                      "tensor_convert ! tensor_postproc_detection name=post ! "
                                      "appsink name=sink", "post",
                                      "cannot decode the detection outputs"),
    # meta_publish
    "publish-folder-missing": ("appsrc name=src ! meta_publish name=pub "
                               "file-path=/no/such/dir/out.jsonl ! appsink name=sink", "pub",
                               "file-path", "/no/such/dir/out.jsonl"),
    "publish-path-is-directory": ("appsrc name=src ! meta_publish name=pub file-path={out_dir}"
                                  " ! appsink name=sink", "pub", "file-path"),
}


@pytest.mark.parametrize("case", sorted(ELEMENT_CASES))
def test_element_configuration_error(case: str, files) -> None:
    description, element, *fragments = ELEMENT_CASES[case]
    expect_error(_fill(description, files), FRAMES, element, *fragments)


# --- the bins ----------------------------------------------------------------------------------

BINS = ("video_inference", "object_detect", "object_classify")


def bin_pipeline(kind: str, props: str) -> str:
    return f"appsrc name=src ! {kind} name=bin {props} ! appsink name=sink"


BIN_CASES = {
    "model-unset": ("", "model"),
    "model-unknown-torchvision-name": ("model=torchvision.models.resnet5000", "resnet5000"),
    "model-unknown-torchvision-module": ("model=torchvision.models.nosuch.net", "nosuch"),
    "model-unsupported-backend": ("model=/tmp/model.onnx", "model", ".onnx"),
    "model-file-missing": ("model=/no/such/model.pt", "/no/such/model.pt"),
    "model-image-as-model": ("model={image_as_model}", "picture.pt"),
    "model-directory": ("model={directory}", "directory"),
    "weights-missing": ("model=torchvision.models.resnet18 model-weights=/no/w.pth",
                        "/no/w.pth"),
    "weights-other-architecture": ("model=torchvision.models.mobilenet_v2 "
                                   "model-weights={resnet18_weights}", "mobilenet_v2"),
    "weights-image": ("model=torchvision.models.resnet18 model-weights={image}",
                      "picture.png"),
    "device-unknown": ("model={classifier} device=tpu", "device", "tpu"),
    "device-cuda-index": ("model={classifier} device=cuda:9", "cuda"),
    "model-returns-unsupported-type": ("model={text_output}", "'text' is a str"),
    "threshold-above-one": ("model={classifier} threshold=1.5", "threshold"),
    "threshold-below-minus-one": ("model={classifier} threshold=-3", "threshold"),
    "inference-region-unknown": ("model={classifier} inference-region=half", "inference-region",
                                 "half"),
    "labels-file-missing": ("model={classifier} labels-file=/no/l.txt", "labels-file",
                            "/no/l.txt"),
    "labels-file-empty": ("model={classifier} labels-file={empty}", "labels-file"),
    "labels-file-json": ("model={classifier} labels-file={json}", "labels-file"),
    "labels-empty-item": ("model={classifier} labels=<a,,b>", "labels"),
    "model-proc-missing": ("model={classifier} model-proc=/no/p.json", "model-proc",
                           "/no/p.json"),
    "model-proc-not-json": ("model={classifier} model-proc={not_json}", "model-proc"),
    "model-proc-directory": ("model={classifier} model-proc={out_dir}", "model-proc"),
}


@pytest.mark.parametrize("kind", BINS)
@pytest.mark.parametrize("case", sorted(BIN_CASES))
def test_bin_configuration_error(kind: str, case: str, files) -> None:
    props, *fragments = BIN_CASES[case]
    if kind == "object_classify" and "model={" in props and "model-proc" not in props:
        props += " model-proc={size_proc}"  # roi-list needs the input size of a model file
    expect_error(bin_pipeline(kind, _fill(props, files)), FRAMES, "bin", *fragments)


@pytest.mark.parametrize("kind", BINS)
@pytest.mark.parametrize("proc", sorted(p.name for p in BROKEN_PROCS.glob("*.json")))
def test_bin_broken_model_proc(kind: str, proc: str, files) -> None:
    """Every broken model-proc file of the parser's tests, through every bin: the message names
    the file (the bad key is checked in test_modelproc.py)."""
    props = f"model={files['classifier']} model-proc={BROKEN_PROCS / proc}"
    expect_error(bin_pipeline(kind, props), FRAMES, "bin", proc)


@pytest.mark.parametrize("kind", BINS)
def test_bin_short_labels_file(kind: str, files) -> None:
    """Fewer labels than the model has classes: found when the outputs are known."""
    model = files["detector"] if kind == "object_detect" else files["classifier"]
    props = f"model={model} labels-file={files['short']}"
    if kind == "object_classify":
        props += " inference-region=full-frame"
    expect_error(bin_pipeline(kind, props), FRAMES, "bin", "short.txt")


@pytest.mark.parametrize("kind", BINS)
def test_bin_forward_raises(kind: str, files) -> None:
    props = f"model={files['raises']}"
    if kind == "object_classify":
        props += " inference-region=full-frame"
    expect_error(bin_pipeline(kind, props), FRAMES, "bin", "deliberate failure")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("kind", BINS)
def test_bin_cuda_without_a_gpu(kind: str, files) -> None:
    props = f"model={files['classifier']} model-proc={files['size_proc']} device=CUDA"
    expect_error(bin_pipeline(kind, props), FRAMES, "bin", "cuda")


# --- processbin --------------------------------------------------------------------------------

PROCESSBIN_CASES = {
    "no-process": ("processbin name=pb preprocess=identity", "process"),
    "process-cannot-take-video": (
        "processbin name=pb preprocess=videoconvert "
        "process=\"pytorch_tensor_inference model={classifier}\"", "pb"),

    "aggregate-not-an-aggregator": (
        "processbin name=pb preprocess=\"videoconvert ! video/x-raw,format=RGBP ! "
        "tensor_convert\" process=\"pytorch_tensor_inference model={classifier}\" "
        "aggregate=identity", "aggregate"),
}


@pytest.mark.parametrize("case", sorted(PROCESSBIN_CASES))
def test_processbin_configuration_error(case: str, files) -> None:
    bin_text, *fragments = PROCESSBIN_CASES[case]
    expect_error(f"appsrc name=src ! {_fill(bin_text, files)} ! appsink name=sink", FRAMES,
                 "pb", *fragments)


# --- values of the wrong kind and out of the declared range ------------------------------------

WRONG_KIND = [
    ("pytorch_tensor_inference", "batch-size", "four"),
    ("tensor_postproc_label", "threshold", "high"),
    ("tensor_postproc_detection", "box-index", "first"),
    ("tensor_resize_crop", "antialias", "maybe"),
    ("meta_aggregate", "attach-tensor-data", "perhaps"),
    ("processbin", "process-queue-size", "big"),
    ("frame_skip", "interval", "often"),
    ("object_detect", "batch-size", "1.5"),
    ("video_inference", "repeat-metadata", "sometimes"),
    ("object_classify", "reclassify-interval", "-"),
    ("meta_overlay", "font-scale", "large"),
    ("meta_overlay", "lines-thickness", "thick"),
]


@pytest.mark.parametrize("factory, prop, value", WRONG_KIND)
def test_value_of_the_wrong_kind_is_refused_when_the_pipeline_is_parsed(factory, prop, value):
    """GStreamer's parser itself refuses a value it cannot convert, naming the property."""
    with pytest.raises(GLib.Error) as info:
        Gst.parse_launch(f"fakesrc ! {factory} {prop}={value} ! fakesink")
    assert prop in str(info.value) and value in str(info.value)


NUMBER_OUT_OF_RANGE = {  # range in the blurb, checked at start: an ERROR naming the property
    "inference-batch-size-0": (classify(infer="batch-size=0"), "infer", "batch-size", "1..1024"),
    "inference-batch-size-huge": (classify(infer="batch-size=5000"), "infer", "batch-size"),
    "frame-skip-interval-0": ("appsrc name=src ! frame_skip name=skip interval=0 ! "
                              "appsink name=sink", "skip", "interval"),
    "overlay-lines-thickness": ("appsrc name=src ! meta_overlay name=ov lines-thickness=5000 ! "
                                "appsink name=sink", "ov", "lines-thickness"),
    "overlay-font-thickness": ("appsrc name=src ! meta_overlay name=ov font-thickness=1001 ! "
                               "appsink name=sink", "ov", "font-thickness"),
    **{f"{kind}-{prop}-{value}": (bin_pipeline(kind, f"model={{classifier}} {prop}={value}"),
                                  "bin", prop)
       for kind in BINS for prop, value in (("batch-size", 0), ("batch-size", 2000),
                                            ("inference-interval", 0))},
    "object_classify-reclassify-interval-0": (
        bin_pipeline("object_classify", "model={classifier} reclassify-interval=0"), "bin",
        "reclassify-interval"),
    "processbin-queue-size": ("appsrc name=src ! processbin name=pb process=identity "
                              "process-queue-size=-2 ! appsink name=sink", "pb",
                              "property 'process-queue-size' must be in -1..2147483647, got -2"),
    "bin-queue-size": (bin_pipeline("video_inference", "model={classifier} "
                                    "preprocess-queue-size=-5"), "bin", "preprocess-queue-size"),
    "bin-threshold": (bin_pipeline("object_detect", "model={classifier} threshold=2"), "bin",
                      "property 'threshold' must be in -1 or 0..1, got 2"),
    "overlay-font-scale-negative": ("appsrc name=src ! meta_overlay name=ov font-scale=-1 ! "
                                    "appsink name=sink", "ov", "font-scale", "0..100"),
    "detection-box-index": ("appsrc name=src ! tensor_postproc_detection name=det "
                            "box-index=-2 ! appsink name=sink", "det", "box-index"),
}


@pytest.mark.parametrize("case", sorted(NUMBER_OUT_OF_RANGE))
def test_number_out_of_range_is_an_element_error(case: str, files) -> None:
    """Every numeric property is declared to GObject with its type's whole range (GObject
    would only warn about a value out of a declared one and keep the old value) and checked
    when the element starts."""
    description, element, *fragments = NUMBER_OUT_OF_RANGE[case]
    expect_error(_fill(description, files), FRAMES, element, *fragments)


def test_ranges_are_in_the_blurbs() -> None:
    """GObject sees the full range (so a bad value reaches the element's check): gst-inspect
    users read the real one in the blurb."""
    blurb = Gst.ElementFactory.make("object_detect").find_property("batch-size").blurb
    assert blurb.endswith("[1..1024]")


LINK_REFUSED = [
    "videoconvert ! video/x-raw,format=I420 ! tensor_convert name=bad",
    "video/x-raw,format=RGB ! tensor_convert ! meta_overlay name=bad",
    "video/x-raw,format=RGB ! opencv_tensor_normalize name=bad",
    "video/x-raw,format=RGB ! pytorch_tensor_inference name=bad",
    "video/x-raw,format=RGB ! tensor_roi_crop name=bad",
]


@pytest.mark.parametrize("chain", LINK_REFUSED)
def test_caps_an_element_cannot_take_are_refused_when_linking(chain: str) -> None:
    """Video into a tensor element, tensors into a video element: the parser refuses the link
    and names the element."""
    with pytest.raises(GLib.Error) as info:
        Gst.parse_launch(f"appsrc ! {chain} ! fakesink")
    assert "could not link" in str(info.value) and "bad" in str(info.value)


def test_torchstream_launch_exits_non_zero_with_the_message(files) -> None:
    """The process itself: `torchstream launch` prints the error naming the element and the
    property and exits non-zero, quickly (most of the time is importing torch)."""
    description = ("videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=64,height=48 ! "
                   f"video_inference name=det model={files['classifier']} batch-size=0 ! "
                   "fakesink")
    start = time.monotonic()
    done = subprocess.run([str(REPO / ".venv" / "bin" / "torchstream"), "launch", description],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "det" in done.stderr and "property 'batch-size' must be in 1..1024" in done.stderr, \
        done.stderr[-2000:]
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("kind", BINS)
def test_bin_refuses_a_pickled_module_on_request(kind: str, files, monkeypatch) -> None:
    """A whole pickled module is code: TORCHSTREAM_REFUSE_PICKLE=1 refuses it in the bins too."""
    monkeypatch.setenv("TORCHSTREAM_REFUSE_PICKLE", "1")
    props = f"model={files['text_output']} model-proc={files['size_proc']}"
    expect_error(bin_pipeline(kind, props), FRAMES, "bin", "TORCHSTREAM_REFUSE_PICKLE")
