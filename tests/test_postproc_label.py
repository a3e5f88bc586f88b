"""tensor_postproc_label on a real pretrained classifier's outputs, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import steady_growth_mb
from tests.results_helpers import run_results
from torchstream.decode.classify import LabelParams, classify
from torchstream.environment import LABELS_DIR
from torchstream.gst import Gst
from torchstream.results.data import Classification, ModelRecord

REPO = Path(__file__).resolve().parents[1]
IMAGENET = LABELS_DIR / "imagenet_2012.txt"
COCO = LABELS_DIR / "coco_91cl_bkgr.txt"
NAMES = IMAGENET.read_text().splitlines()
MODEL = "torchvision.models.mobilenet_v2"
CATEGORIES = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


def preprocess(size: str = "width=224,height=224") -> str:
    caps = "video/x-raw,format=RGBP" + (f",{size}" if size else "")
    return (f"appsrc name=src ! videoconvert ! videoscale ! {caps} ! tensor_convert ! "
            f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD}")


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.fixture(scope="module")
def labelled(bikes_frames, mobilenet_weights):
    """One run, four label elements in a row, each writing its own attribute."""
    run = run_results(
        f"{preprocess()} ! pytorch_tensor_inference model={MODEL} "
        f"model-weights={mobilenet_weights} ! tee name=t ! queue ! "
        "tensor_postproc_label name=max ! "
        f"tensor_postproc_label method=softmax labels-file={IMAGENET} attribute-name=softmax ! "
        f"tensor_postproc_label method=compound compound-threshold=0.9999 "
        f"labels-file={IMAGENET} attribute-name=compound ! "
        f"tensor_postproc_label method=softmax threshold=0.5 labels-file={IMAGENET} "
        "attribute-name=sure ! appsink name=sink  t. ! queue ! appsink name=raw",
        bikes_frames, sinks=("sink", "raw"),
    )
    assert run.result.ok, run.error
    assert len(run.per_sink["sink"]) == len(run.per_sink["raw"]) == len(bikes_frames)
    return run


def test_tensors_pass_through_untouched(labelled):
    for out, raw in zip(labelled.per_sink["sink"], labelled.per_sink["raw"], strict=True):
        assert out.pts == raw.pts
        assert out.arrays[0].dtype == np.float32 and out.arrays[0].shape == (1000,)
        assert out.arrays[0].tobytes() == raw.arrays[0].tobytes()
        assert out.caps == raw.caps
        assert out.record == raw.record
        # the other tee branch shares the tensors but not the metadata added after it
        assert not raw.results


def test_max_is_the_argmax_with_the_raw_value(labelled):
    for out in labelled.per_sink["sink"]:
        logits = out.arrays[0]
        c = out.results.classification("classification")
        assert c.label_id == int(np.argmax(logits))
        assert c.confidence == float(logits.max())  # the float32 value, exactly
        # no labels given: the names of the published weights the tensors record names
        assert c.label == CATEGORIES[c.label_id]
    assert out.results.models == [ModelRecord(MODEL, ("output",))]


def test_softmax_probability_matches_numpy_and_torch(labelled):
    for out in labelled.per_sink["sink"]:
        logits = out.arrays[0]
        c = out.results.classification("softmax")
        p = np_softmax(logits)
        assert c.label_id == int(np.argmax(p)) and c.label == NAMES[c.label_id]
        assert abs(c.confidence - p.max()) <= 1e-12
        assert abs(c.confidence - float(torch.softmax(torch.from_numpy(logits), 0).max())) <= 1e-6
        # the element's order: attributes appended as the elements ran
        assert [x.attribute for x in out.results.classifications][:2] == [
            "classification", "softmax"]


def test_compound_joins_every_class_above_the_sigmoid_threshold(labelled):
    selected_counts = []
    for out in labelled.per_sink["sink"]:
        s = np_sigmoid(out.arrays[0])
        chosen = np.flatnonzero(s >= 0.9999)
        selected_counts.append(len(chosen))
        c = out.results.classification("compound")
        if len(chosen) == 0:
            assert c is None
            continue
        best = int(chosen[np.argmax(s[chosen])])
        assert c.label == " ".join(NAMES[i] for i in chosen)
        assert c.label_id == best and abs(c.confidence - s[best]) <= 1e-12
    # real logits of a street: frames with no class that sure, with one, and with several
    assert 0 in selected_counts and 1 in selected_counts and max(selected_counts) > 1, (
        selected_counts)


def test_threshold_drops_unsure_results(labelled):
    kept = 0
    for out in labelled.per_sink["sink"]:
        p = np_softmax(out.arrays[0]).max()
        c = out.results.classification("sure")
        if p >= 0.5:
            kept += 1
            assert c is not None and c.confidence == out.results.classification(
                "softmax").confidence
        else:
            assert c is None
    assert 0 < kept < len(labelled.per_sink["sink"]), "pick frames with sure and unsure answers"


@pytest.mark.parametrize(
    ("image", "accepted"),
    [("chelsea", {"Egyptian cat", "tabby", "tiger cat"}), ("coffee", {"espresso"})],
)
def test_pretrained_classifier_gives_the_real_label(image, accepted, mobilenet_weights):
    import skimage.data

    frame = getattr(skimage.data, image)()
    run = run_results(
        f"{preprocess(size='')} ! pytorch_tensor_inference model={MODEL} "
        f"model-weights={mobilenet_weights} ! "
        f"tensor_postproc_label method=softmax labels-file={IMAGENET} ! appsink name=sink",
        [frame],
    )
    assert run.result.ok, run.error
    out = run.per_sink["sink"][0]
    c = out.results.classification("classification")
    assert c.label in accepted
    assert abs(c.confidence - np_softmax(out.arrays[0]).max()) <= 1e-12
    if image == "coffee":
        assert c.confidence > 0.9


class LogitsAndTop5(torch.nn.Module):
    """A model with two outputs: the logits, and the indices of its five best classes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(x)
        return {"logits": logits, "top5": logits.topk(5, dim=1).indices}


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory, mobilenet_weights):
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    path = tmp_path_factory.mktemp("m") / "top5.ts"
    torch.jit.save(torch.jit.script(LogitsAndTop5(model.eval())), path)
    return path


def test_index_method_and_layer_name_on_a_two_output_model(bikes_frames, two_outputs):
    frames = bikes_frames[:4]
    run = run_results(
        f"{preprocess()} ! pytorch_tensor_inference model={two_outputs} ! "
        f"tensor_postproc_label method=index layer-name=top5 labels-file={IMAGENET} "
        "attribute-name=top1 ! "
        f"tensor_postproc_label method=softmax layer-name=logits labels-file={IMAGENET} ! "
        "appsink name=sink",
        frames,
    )
    assert run.result.ok, run.error
    assert len(run.per_sink["sink"]) == len(frames)
    for out in run.per_sink["sink"]:
        assert out.record.names == ("logits", "top5")
        logits, top5 = out.arrays
        assert top5.dtype == np.int64 and top5.shape == (5,)
        top1 = out.results.classification("top1")
        assert top1 == Classification("top1", NAMES[int(top5[0])], int(top5[0]), 1.0)
        soft = out.results.classification("classification")
        assert soft.label_id == int(np.argmax(logits)) == top1.label_id
        assert abs(soft.confidence - np_softmax(logits).max()) <= 1e-12
        assert out.results.models == [ModelRecord(str(two_outputs), ("top5",)),
                                      ModelRecord(str(two_outputs), ("logits",))]


def run_error(element: str, bikes_frames, model_args: str) -> str:
    run = run_results(
        f"{preprocess()} ! pytorch_tensor_inference {model_args} ! {element} ! "
        "appsink name=sink",
        bikes_frames[:2], timeout=60,
    )
    assert not run.result.ok and not run.result.timed_out, "expected an error"
    assert "postproc" in run.error  # posted by the label element
    assert len(run.per_sink["sink"]) == 0  # no buffer slipped through without its label
    return run.error


def test_labels_file_shorter_than_the_classes_is_a_clear_error(bikes_frames, mobilenet_weights):
    error = run_error(f"tensor_postproc_label labels-file={COCO}", bikes_frames,
                      f"model={MODEL} model-weights={mobilenet_weights}")
    assert f"labels-file '{COCO}' has 91 lines but the model outputs 1000 classes" in error


@pytest.mark.parametrize(("props", "message"), [
    ("method=maximum", "property 'method' is 'maximum'; expected one of max, softmax, "
                       "compound, index"),
    ("threshold=1.5", "property 'threshold' must be in 0..1, got 1.5"),
    ("compound-threshold=-0.1", "property 'compound-threshold' must be in 0..1"),
    ("labels=<a,b>", "property 'labels' has 2 labels but the model outputs 1000 classes"),
    (f"labels=<a,b> labels-file={IMAGENET}", "set 'labels' or 'labels-file', not both"),
    ("labels-file=/nonexistent/labels.txt", "labels-file '/nonexistent/labels.txt': no such"),
    ("layer-name=scores", "layer-name 'scores' is not an output of torchvision.models."
                          "mobilenet_v2; its outputs are: output"),
])
def test_bad_settings_are_clear_errors(props, message, bikes_frames, mobilenet_weights):
    error = run_error(f"tensor_postproc_label {props}", bikes_frames,
                      f"model={MODEL} model-weights={mobilenet_weights}")
    assert message in error


def test_several_outputs_without_layer_name_is_an_error(bikes_frames, two_outputs):
    error = run_error("tensor_postproc_label", bikes_frames, f"model={two_outputs}")
    assert "the model has 2 outputs; set layer-name" in error and "logits, top5" in error


def test_index_outside_the_labels_is_an_error(bikes_frames, two_outputs):
    error = run_error("tensor_postproc_label method=index layer-name=top5 labels=<a,b,c>",
                      bikes_frames, f"model={two_outputs}")
    assert "is outside the 3 labels of property 'labels'" in error


def test_gst_inspect_documents_the_element_from_the_plugin_loader():
    import os
    import subprocess

    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "-c", f'eval "$({REPO}/.venv/bin/torchstream env)" && '
                       "gst-inspect-1.0 tensor_postproc_label"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for prop in ("method", "labels", "labels-file", "attribute-name", "layer-name", "threshold",
                 "compound-threshold"):
        assert f"  {prop} " in done.stdout
    assert 'Default: "max"' in done.stdout and 'Default: "classification"' in done.stdout


def test_properties_and_defaults():
    element = Gst.ElementFactory.make("tensor_postproc_label", None)
    defaults = {p.name: p.default_value for p in element.list_properties()}
    assert defaults["method"] == "max"
    assert defaults["attribute-name"] == "classification"
    assert defaults["threshold"] == 0.0 and defaults["compound-threshold"] == 0.5
    assert defaults["labels"] is None and defaults["labels-file"] is None
    assert defaults["layer-name"] is None
    for name in ("method", "labels", "labels-file", "threshold", "compound-threshold"):
        assert element.find_property(name).blurb


def test_classify_core_on_plain_arrays():
    logits = np.array([[0.5, 3.0, -1.0, 3.0]], np.float32)  # leading 1 accepted, tie -> first
    assert classify(logits, LabelParams()) == Classification("classification", "1", 1, 3.0)
    soft = classify(logits, LabelParams(method="softmax"))
    assert abs(soft.confidence - np_softmax(logits[0])[1]) <= 1e-15
    both = classify(logits, LabelParams(method="compound", compound_threshold=0.6))
    assert both.label == "0 1 3" and both.label_id == 1
    assert abs(both.confidence - np_sigmoid(np.float32(3.0))) <= 1e-15
    assert classify(logits, LabelParams(method="compound", compound_threshold=0.99)) is None
    assert classify(np.array([7.0]), LabelParams(method="index")).label_id == 7
    assert classify(np.zeros((0,), np.float32), LabelParams()) is None
    with pytest.raises(Exception, match="one set of class scores per buffer"):
        classify(np.zeros((2, 4), np.float32), LabelParams())
    with pytest.raises(Exception, match="expects class indices"):
        classify(np.array([2.5]), LabelParams(method="index"))


def test_no_memory_growth_over_thousands_of_buffers():
    """Buffers made writable after a tee, metadata written through the C API: nothing kept."""
    from torchstream.gst.pipeline import run_to_end

    def run(n: int) -> None:
        pipeline = Gst.parse_launch(
            f"videotestsrc num-buffers={n} pattern=snow ! "
            "video/x-raw,format=RGBx,width=1,height=1 ! tensor_convert ! tee name=t ! queue ! "
            "tensor_postproc_label method=softmax labels=<r,g,b,x> ! fakesink sync=false "
            "t. ! queue ! fakesink sync=false")
        result = run_to_end(pipeline, 120)
        assert result.ok, result.error

    run(500)
    grown = steady_growth_mb(lambda: run(5000))
    assert grown < 0.25, grown  # less than 50 bytes per buffer


# --- the element alone (a harness) -----------------------------------------------------------


@pytest.mark.parametrize("shape, labelled", [((1, 5), True), ((5,), True), ((1, 10, 6), False),
                                             ((1, 1), False)])
def test_if_scores_labels_class_scores_and_passes_anything_else(shape, labelled):
    """if-scores (what the bins set for a model file): one set of class scores is labelled as
    without it; any other output passes untouched and unlabelled."""
    from tests.harness import Harness
    from torchstream.caps import TensorInfo, TensorsConfig
    from torchstream.meta import read_results

    harness = Harness("tensor_postproc_label", method="softmax", if_scores=True)
    caps = TensorsConfig((TensorInfo("float32", shape),)).to_caps_string()
    assert harness.start(caps), harness.error()
    scores = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 7
    assert harness.push(scores) == Gst.FlowReturn.OK, harness.error()
    out = harness.pull()
    (array,) = harness.arrays(out)
    np.testing.assert_array_equal(array.reshape(shape), scores)  # the tensors untouched
    found = read_results(out).classifications
    if labelled:
        [c] = found
        assert c.label_id == int(scores.argmax()) and c.label == str(c.label_id)
        assert abs(c.confidence - np_softmax(scores.reshape(-1)).max()) < 1e-6
    else:
        assert found == []
    harness.stop()
