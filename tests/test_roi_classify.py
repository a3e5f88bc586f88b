"""Classifying regions: tensor_roi_crop -> opencv_tensor_normalize -> pytorch_tensor_inference ->
tensor_postproc_label inside processbin, on a real picture (skimage's coffee cup and cat side by
side) with the real pretrained mobilenet_v2, checked against torchvision called directly on
each crop with the weights' own transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from skimage import data
from torchvision.transforms import functional as F

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.results_helpers import regions_writer, run_results
from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError
from torchstream.gst import Gst
from torchstream.gst.meta import read_roi_batch, read_tensors_record
from torchstream.preprocess.resize import ResizeSpec
from torchstream.preprocess.roi import RoiCropper, crop_box, select_regions
from torchstream.props import parse_class_set
from torchstream.results.data import Region

IMAGENET = LABELS_DIR / "imagenet_2012.txt"
NAMES = IMAGENET.read_text().splitlines()
ESPRESSO = NAMES.index("espresso")
CATS = {NAMES.index(n) for n in ("tabby", "tiger cat", "Persian cat", "Siamese cat",
                                 "Egyptian cat")}
MARGIN = 20


def chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@pytest.fixture(scope="module")
def scene():
    """(frame HxWx3 RGB, {"cup": box, "cat": box}) with pixel boxes (x0, y0, x1, y1)."""
    cat = data.chelsea()  # 300x451
    coffee = F.resize(chw(data.coffee()), [cat.shape[0]], antialias=True)
    coffee = coffee.numpy().transpose(1, 2, 0)  # 300x450
    h = cat.shape[0]
    width = coffee.shape[1] + cat.shape[1] + 3 * MARGIN
    frame = np.empty((h + 2 * MARGIN, width, 3), np.uint8)
    frame[...] = (40, 80, 120)
    frame[MARGIN:MARGIN + h, MARGIN:MARGIN + coffee.shape[1]] = coffee
    x = 2 * MARGIN + coffee.shape[1]
    frame[MARGIN:MARGIN + h, x:x + cat.shape[1]] = cat
    boxes = {"cup": (MARGIN, MARGIN, MARGIN + coffee.shape[1], MARGIN + h),
             "cat": (x, MARGIN, x + cat.shape[1], MARGIN + h)}
    return frame, boxes


def region(frame: np.ndarray, box, label: str, label_id: int, region_id: int) -> Region:
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = box
    return Region(x0 / width, y0 / height, x1 / width, y1 / height, label, label_id, 0.9,
                  region_id)


@pytest.fixture(scope="module")
def regions(scene):
    frame, boxes = scene
    return {"cup": region(frame, boxes["cup"], "cup", 47, 3),
            "cat": region(frame, boxes["cat"], "cat", 17, 7)}


@pytest.fixture(scope="module")
def reference(scene, mobilenet_weights):
    """(label id, probability) per region: mobilenet_v2 on weights.transforms() of its crop."""
    frame, boxes = scene
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    model.eval()
    answers = {}
    for name, (x0, y0, x1, y1) in boxes.items():
        x = weights.transforms()(chw(frame[y0:y1, x0:x1]))
        with torch.inference_mode():
            p = torch.softmax(model(x[None])[0].double(), 0)
        answers[name] = (int(p.argmax()), float(p.max()))
    assert answers["cup"][0] == ESPRESSO and answers["cat"][0] in CATS, answers
    return answers


def classify_bin(weights, classes: str = "cup,cat", batch_size: int = 1) -> str:
    preprocess = (
        "videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        f"tensor_roi_crop size=256 crop=224 object-class={classes} ! "
        f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD}"
    )
    return (
        f'processbin preprocess="{preprocess}" '
        f'process="pytorch_tensor_inference model=torchvision.models.mobilenet_v2 '
        f'model-weights={weights} batch-size={batch_size}" '
        f'postprocess="tensor_postproc_label method=softmax labels-file={IMAGENET}" '
        "aggregate=meta_aggregate"
    )


def object_classify(weights, classes: str = "cup,cat", batch_size: int = 1,
                    extra: str = "") -> str:
    """The same chain, built by the object_classify bin from the model."""
    return (f"object_classify name=bin model=torchvision.models.mobilenet_v2 "
            f"model-weights={weights} labels-file={IMAGENET} object-class={classes} "
            f"batch-size={batch_size} {extra}")


def run_classify(frames, plan, weights, form=classify_bin, **kwargs):
    height, width = frames[0].shape[:2]
    run = run_results(
        f"appsrc name=src ! test_meta_writer name=w ! {form(weights, **kwargs)} ! "
        "appsink name=sink", frames, writers={"w": regions_writer(plan, (width, height))},
        timeout=120, param_names=("detection", "classification"),
    )
    assert run.result.ok, run.error
    return run.per_sink["sink"]


def check_labelled(got: Region, sent: Region, answer) -> None:
    assert (got.region_id, got.label, got.label_id, got.confidence) == (
        sent.region_id, sent.label, sent.label_id, sent.confidence)
    assert (got.x_min, got.y_min, got.x_max, got.y_max) == (
        sent.x_min, sent.y_min, sent.x_max, sent.y_max)
    c = got.classification("classification")
    label_id, p = answer
    assert c is not None and c.label_id == label_id and c.label == NAMES[label_id]
    assert abs(c.confidence - p) <= 1e-4, (c.confidence, p)


@pytest.mark.parametrize("form", [classify_bin, object_classify])
@pytest.mark.parametrize("classes", ["<cup,cat>", "<cup>"])
def test_object_class_in_angle_brackets_selects_the_regions(scene, regions, reference,
                                                           mobilenet_weights, form, classes):
    """``object-class=<cup,cat>`` (the grammar of every list property) selects as
    ``cup,cat`` does, in tensor_roi_crop and in the object_classify bin."""
    frame, _ = scene
    [out] = run_classify([frame], [[regions["cup"], regions["cat"]]], mobilenet_weights, form,
                         classes=classes)
    labelled = {r.label for r in out.results.regions
                if r.classification("classification") is not None}
    assert labelled == set(classes.strip("<>").split(","))


@pytest.mark.parametrize("form", [classify_bin, object_classify])
def test_each_region_gets_its_own_label(scene, regions, reference, mobilenet_weights, form):
    frame, _ = scene
    [out] = run_classify([frame], [[regions["cup"], regions["cat"]]], mobilenet_weights, form)
    results = out.results
    assert results.classifications == []  # nothing at frame level
    assert [r.region_id for r in results.regions] == [3, 7]
    check_labelled(results.region(3), regions["cup"], reference["cup"])
    check_labelled(results.region(7), regions["cat"], reference["cat"])
    assert [m.name for m in results.models] == ["torchvision.models.mobilenet_v2"]
    # the ROI metas C elements read carry the region's classification too
    by_id = {roi.id: roi for roi in out.rois}
    assert by_id[3].params["classification"]["label"] == "espresso"
    assert by_id[7].params["classification"]["label_id"] == reference["cat"][0]
    assert out.arrays[0].tobytes()[:frame.shape[1] * 3] == frame[0].tobytes()  # the frame


def test_object_class_selects_the_regions(scene, regions, reference, mobilenet_weights):
    frame, _ = scene
    [out] = run_classify([frame], [[regions["cup"], regions["cat"]]], mobilenet_weights,
                         classes="cat")
    assert out.results.region(3).classifications == []
    check_labelled(out.results.region(7), regions["cat"], reference["cat"])
    assert out.results.classifications == []


def test_a_frame_without_regions_passes_with_no_results(scene, mobilenet_weights):
    frame, _ = scene
    [out] = run_classify([frame], [[]], mobilenet_weights)
    assert not out.results and out.pts == 0


@pytest.mark.parametrize("batch_size, form", [(1, classify_bin), (2, classify_bin),
                                              (2, object_classify)])
def test_several_frames_keep_order_and_counts(scene, regions, reference, mobilenet_weights,
                                             batch_size, form):
    frame, _ = scene
    cup, cat = regions["cup"], regions["cat"]
    plan = [[cup, cat], [], [cat], [cup, cat], [cup]]
    outputs = run_classify([frame] * len(plan), plan, mobilenet_weights, form,
                           batch_size=batch_size)
    assert [o.pts for o in outputs] == [i * Gst.SECOND // 25 for i in range(len(plan))]
    for out, sent in zip(outputs, plan, strict=True):
        assert [r.region_id for r in out.results.regions] == [r.region_id for r in sent]
        assert out.results.classifications == []
        for r in sent:
            name = "cup" if r is cup else "cat"
            check_labelled(out.results.region(r.region_id), r, reference[name])
    assert not outputs[1].results


def test_roi_crop_output_rows_and_record(scene, regions):
    """tensor_roi_crop alone: [R,3,224,224] rows equal to torchvision's resize + centre crop of
    each region's pixels, R = 0 in caps, the real R and the row ids on each buffer."""
    frame, boxes = scene
    height, width = frame.shape[:2]
    cup, cat = regions["cup"], regions["cat"]
    plan = [[cat, cup], []]
    seen: list = []
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! video/x-raw,format=RGBP ! "
        "tensor_convert ! tensor_roi_crop size=256 crop=224 ! test_meta_writer name=probe ! "
        "appsink name=sink", [frame] * 2,
        writers={"w": regions_writer(plan, (width, height)),
                 "probe": lambda buf, i: seen.append(read_roi_batch(buf))},
    )
    assert run.result.ok, run.error
    first, empty = run.per_sink["sink"]
    caps = Gst.Caps.from_string(first.caps).get_structure(0)
    assert caps.get_value("dimensions") == "224:224:3:0" and caps.get_value("types") == "uint8"
    assert seen == [(7, 3), ()]
    assert first.record.dimensions == "224:224:3:2" and first.record.types == ("uint8",)
    assert empty.record.dimensions == "224:224:3:0" and empty.arrays[0].shape == (0, 3, 224, 224)
    rows = first.arrays[0]
    assert rows.shape == (2, 3, 224, 224)
    for row, name in zip(rows, ("cat", "cup"), strict=True):
        x0, y0, x1, y1 = boxes[name]
        ref = F.center_crop(F.resize(chw(frame[y0:y1, x0:x1]), [256], antialias=True), [224])
        assert np.array_equal(row, ref.numpy())
    # the regions travel on, unchanged
    assert [r.region_id for r in first.results.regions] == [7, 3]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_inference_on_region_batches(scene, regions, reference, mobilenet_weights, batch_size):
    """pytorch_tensor_inference on [R,3,224,224] buffers: [R,1000] out (R = 0 in caps, the real
    R in each buffer's record), a frame with no region gives 0 rows, the rows' region ids and
    the regions travel on."""
    frame, _ = scene
    height, width = frame.shape[:2]
    cup, cat = regions["cup"], regions["cat"]
    plan = [[cat, cup], [], [cup]]
    normalized: list = []
    ids: list = []
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! video/x-raw,format=RGBP ! "
        "tensor_convert ! tensor_roi_crop size=256 crop=224 ! "
        f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
        "test_meta_writer name=normalized ! "
        "pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} batch-size={batch_size} ! "
        "test_meta_writer name=probe ! appsink name=sink", [frame] * 3,
        writers={"w": regions_writer(plan, (width, height)),
                 "normalized": lambda buf, i: normalized.append(read_tensors_record(buf)),
                 "probe": lambda buf, i: ids.append(read_roi_batch(buf))},
        timeout=120,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    caps = Gst.Caps.from_string(outputs[0].caps).get_structure(0)
    assert caps.get_value("dimensions") == "1000:0" and caps.get_value("types") == "float32"
    assert [(r.types, r.dimensions) for r in normalized] == [
        (("float32",), "224:224:3:2"), (("float32",), "224:224:3:0"),
        (("float32",), "224:224:3:1")]
    assert ids == [(7, 3), (), (3,)]
    assert [o.arrays[0].shape for o in outputs] == [(2, 1000), (0, 1000), (1, 1000)]
    assert [o.record.dimensions for o in outputs] == ["1000:2", "1000:0", "1000:1"]
    assert [o.record.input_dimensions for o in outputs] == [
        "224:224:3:2", "224:224:3:0", "224:224:3:1"]
    assert [o.pts for o in outputs] == [i * Gst.SECOND // 25 for i in range(3)]
    for out, sent in zip(outputs, plan, strict=True):
        assert [r.region_id for r in out.results.regions] == [r.region_id for r in sent]
    for row, name in zip([*outputs[0].arrays[0], *outputs[2].arrays[0]], ("cat", "cup", "cup"),
                         strict=True):
        p = np.exp(row.astype(np.float64) - row.max())
        assert int(np.argmax(row)) == reference[name][0]
        assert abs(p.max() / p.sum() - reference[name][1]) <= 1e-4


# -- crop box rounding and configuration (roi.py) ----------------------------------------------


def box_region(x0: float, y0: float, x1: float, y1: float) -> Region:
    return Region(x0, y0, x1, y1, "thing", 0, 1.0, 0)


def test_crop_box_of_an_exact_pixel_box():
    assert crop_box(box_region(20 / 961, 20 / 340, 470 / 961, 320 / 340), 961, 340) == (
        20, 20, 470, 320)


def test_crop_box_rounds_each_edge_to_the_nearest_pixel():
    # 100 px: 0.104 -> 10.4 -> 10, 0.206 -> 20.6 -> 21; halves to even (as the ROI meta
    # mirror of the region): 12.5 -> 12, 37.5 -> 38
    assert crop_box(box_region(0.104, 0.125, 0.206, 0.375), 100, 100) == (10, 12, 21, 38)


def test_crop_box_is_at_least_one_pixel_and_inside_the_frame():
    assert crop_box(box_region(0.5, 0.5, 0.5, 0.5), 10, 10) == (5, 5, 6, 6)
    assert crop_box(box_region(1.0, 1.0, 1.0, 1.0), 10, 10) == (9, 9, 10, 10)
    assert crop_box(box_region(0.0, 0.0, 0.0, 0.0), 10, 10) == (0, 0, 1, 1)
    assert crop_box(box_region(-0.5, 0.2, 1.5, 0.8), 10, 10) == (0, 2, 10, 8)


def test_object_class_parsing_and_selection():
    a, b, c = (Region(0, 0, 1, 1, label, 0, 1.0, i) for i, label in enumerate("abc"))
    for text in (" car , person,", "<car,person>", "[car, person]"):
        assert parse_class_set(text, "object-class") == {"car", "person"}
    assert parse_class_set("", "x") == frozenset() and parse_class_set(None, "x") == frozenset()
    assert select_regions([a, b, c], frozenset()) == [a, b, c]
    assert select_regions([a, b, c], frozenset({"c", "a"})) == [a, c]


@pytest.mark.parametrize("spec", [ResizeSpec(size=(256,)), ResizeSpec(),
                                  ResizeSpec(size=(100, 200))])
def test_an_output_size_that_varies_with_the_crop_is_refused(spec):
    with pytest.raises(ConfigError, match="fixed output size"):
        RoiCropper(spec)


@pytest.mark.parametrize(("spec", "hw"), [
    (ResizeSpec(size=(256,), crop=(224,)), (224, 224)),
    (ResizeSpec(size=(100, 200), mode="no-aspect-ratio"), (100, 200)),
    (ResizeSpec(size=(64,), mode="letterbox"), (64, 64)),
])
def test_fixed_output_sizes(spec, hw):
    cropper = RoiCropper(spec)
    assert cropper.output_hw == hw
    image = torch.arange(3 * 50 * 70, dtype=torch.int64).remainder(256).to(torch.uint8)
    batch = cropper.crop(image.view(3, 50, 70), [box_region(0.1, 0.2, 0.6, 0.9)] * 2)
    assert tuple(batch.shape) == (2, 3, *hw)
    assert tuple(cropper.crop(image.view(3, 50, 70), []).shape) == (0, 3, *hw)


def test_a_size_that_is_not_fixed_is_an_element_error():
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGBP ! tensor_convert ! "
        "tensor_roi_crop name=crop size=256 ! fakesink")
    try:
        assert pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE
        msg = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        assert msg is not None and msg.src.get_name() == "crop"
        assert "fixed output size" in msg.parse_error()[0].message
    finally:
        pipeline.set_state(Gst.State.NULL)


# -- the inference engine's region batch mode, on small real modules ----------------------------


class Counted(torch.nn.Module):
    """A linear layer and a second output, counting its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        flat = x.flatten(1)
        return {"scores": self.linear(flat), "sums": flat.sum(1)}


class PerImage(torch.nn.Module):
    def forward(self, x):
        return [{"boxes": torch.zeros(3, 4)} for _ in range(x.shape[0])]


def engine_for(module: torch.nn.Module):
    from torchstream.caps import TensorInfo, TensorsConfig
    from torchstream.model.batching import BatchRunner
    from torchstream.model.loading import LoadedModel

    loaded = LoadedModel(module.eval(), "test", torch.device("cpu"), "pickle")
    return BatchRunner(loaded, TensorsConfig((TensorInfo("float32", (0, 2, 3)),)))


def test_engine_runs_the_rows_of_several_buffers_once_and_splits_them_back():
    torch.manual_seed(0)
    module = Counted()
    engine = engine_for(module)
    assert engine.region_batch
    spec = engine.probe()
    assert spec.names == ("scores", "sums")
    assert [t.shape for t in spec.config.tensors] == [(0, 4), (0,)]
    module.calls = 0
    inputs = [torch.rand(2, 2, 3), torch.rand(0, 2, 3), torch.rand(3, 2, 3)]
    names, per_buffer = engine.run_rows([[x] for x in inputs], [2, 0, 3])
    assert module.calls == 1 and names == ("scores", "sums")
    for x, (scores, sums) in zip(inputs, per_buffer, strict=True):
        with torch.inference_mode():
            expected = module(x)
        assert torch.allclose(scores, expected["scores"]) and torch.allclose(sums, expected["sums"])
        assert scores.shape == (x.shape[0], 4)
    module.calls = 0
    _, empty = engine.run_rows([[inputs[1]], [inputs[1]]], [0, 0])
    assert module.calls == 0  # no row at all: the model is not called
    assert [[tuple(t.shape) for t in b] for b in empty] == [[(0, 4), (0,)]] * 2


def test_engine_refuses_per_image_results_for_region_batches():
    from torchstream.errors import TorchstreamError

    with pytest.raises(TorchstreamError, match="one row per input row"):
        engine_for(PerImage()).probe()


def shifted(r: Region, dx: float, region_id: int) -> Region:
    return Region(r.x_min + dx, r.y_min, r.x_max + dx, r.y_max, r.label, r.label_id,
                  r.confidence, region_id)


def test_reclassify_interval_carries_labels_to_the_same_objects(scene, regions, reference,
                                                                mobilenet_weights):
    """reclassify-interval=2: the classifier runs on frames 0, 2, 4; on frames 1 and 3 each
    region keeps the label of the region it overlaps on the last classified frame, even with a
    new id and a box moved a little; a region that overlaps nothing classified gets none."""
    frame, _ = scene
    cup, cat = regions["cup"], regions["cat"]
    step = 0.01
    plan = [[shifted(cup, i * step, 10 + i), shifted(cat, -i * step, 20 + i)] for i in range(5)]
    plan[3] = [shifted(cup, 3 * step, 13)]  # the cat left
    far = Region(0.0, 0.0, 0.02, 0.05, "cat", 17, 0.9, 30)  # overlaps no classified region
    plan[1] = plan[1] + [far]
    outputs = run_classify([frame] * 5, plan, mobilenet_weights, object_classify,
                           extra="reclassify-interval=2")
    assert len(outputs) == 5
    for i, out in enumerate(outputs):
        assert [r.region_id for r in out.results.regions] == [r.region_id for r in plan[i]]
        for r in out.results.regions:
            c = r.classification("classification")
            if r.region_id == 30:
                assert c is None
                continue
            name = "cup" if r.label == "cup" else "cat"
            assert c is not None and c.label_id == reference[name][0], (i, r)
