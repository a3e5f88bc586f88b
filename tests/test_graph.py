"""graph-mode: the forward pass as a TorchScript graph gives the eager module's outputs, bit for
bit (trace, script) or within float rounding (freeze); a graph that would differ is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import run_pipeline
from torchstream.caps import TensorInfo, TensorsConfig
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.graph import parse_graph_mode, resolve_graph_mode
from torchstream.inference import InferenceEngine
from torchstream.model import LoadedModel, load_model

IMAGE = TensorsConfig((TensorInfo("float32", (3, 224, 224)),))


def _frame_tensor(frame: np.ndarray, size: int = 224) -> torch.Tensor:
    """A real frame as a [3,size,size] float tensor (content matters, not the exact scaling)."""
    x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).float() / 255
    return torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear")[0]


class _BakesRowCount(torch.nn.Module):
    """Its trace bakes ``len(x)`` in as a constant: right only for the traced row count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4] * len(x)


def test_modes_resolve_by_model_kind():
    assert resolve_graph_mode("auto", "torchvision", takes_image_list=False) == "trace"
    assert resolve_graph_mode("auto", "torchvision", takes_image_list=True) == "script"
    assert resolve_graph_mode("auto", "pickle", takes_image_list=False) == "eager"
    assert resolve_graph_mode("auto", "export", takes_image_list=False) == "eager"
    assert resolve_graph_mode("script", "torchscript", takes_image_list=False) == "eager"
    assert resolve_graph_mode("script", "pickle", takes_image_list=False) == "script"
    assert parse_graph_mode(" TRACE ") == "trace"
    with pytest.raises(ConfigError, match="'graph-mode'"):
        parse_graph_mode("jit")


def test_auto_traces_a_torchvision_classifier_with_the_same_outputs(bikes_frames,
                                                                    mobilenet_weights):
    model = load_model("torchvision.models.mobilenet_v2", str(mobilenet_weights))
    engine = InferenceEngine(model, IMAGE)
    engine.probe()
    assert engine.graph_mode == "trace" and engine.graph_note == ""
    assert isinstance(engine.module, torch.jit.ScriptModule)
    inputs = [[_frame_tensor(f)] for f in bikes_frames[:3]]
    _, rows = engine.run(inputs)
    with torch.inference_mode():
        expected = model.module(torch.stack([i[0] for i in inputs]))
    assert torch.equal(torch.stack([r[0] for r in rows]), expected)
    eager = InferenceEngine(model, IMAGE, "eager")
    eager.probe()
    assert eager.module is model.module


def test_freeze_is_close_and_a_scripted_classifier_is_exact(bikes_frames):
    torch.manual_seed(0)
    module = torchvision.models.mobilenet_v3_small().eval()
    model = LoadedModel(module, "mobilenet_v3_small", torch.device("cpu"), "torchvision")
    x = [[_frame_tensor(bikes_frames[0])]]
    with torch.inference_mode():
        expected = module(x[0][0][None])
    for mode, tolerance in (("freeze", 1e-3), ("script", 0.0)):
        engine = InferenceEngine(model, IMAGE, mode)
        engine.probe()
        assert engine.graph_mode == mode
        _, rows = engine.run(x)
        assert (rows[0][0] - expected[0]).abs().max() <= tolerance * expected.abs().max()


def test_a_graph_that_differs_from_the_module_is_refused_or_skipped():
    rows = TensorsConfig((TensorInfo("float32", (0, 3, 8, 8)),))  # a region batch: R varies
    module = _BakesRowCount()
    explicit = InferenceEngine(LoadedModel(module, "bakes", torch.device("cpu"), "pickle"),
                               rows, "trace")
    with pytest.raises(TorchstreamError, match="other outputs than the module"):
        explicit.probe()
    auto = InferenceEngine(LoadedModel(module, "bakes", torch.device("cpu"), "torchvision"),
                           rows)
    auto.probe()
    assert auto.graph_mode == "eager" and auto.module is module
    assert "running the module eagerly" in auto.graph_note
    x = torch.rand(5, 3, 8, 8)
    _, out = auto.run_rows([[x]], [5])
    assert torch.equal(out[0][0], module(x))


def _classify(extra: str, weights) -> str:
    return ("appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=224,"
            "height=224 ! tensor_convert ! "
            f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
            f"pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
            f"model-weights={weights} {extra} ! appsink name=sink")


def test_pipeline_outputs_are_the_same_in_every_exact_mode(bikes_frames, mobilenet_weights):
    frames = bikes_frames[:4]
    runs = {mode: run_pipeline(_classify(f"graph-mode={mode}", mobilenet_weights), frames)
            for mode in ("eager", "auto", "script")}
    for mode, run in runs.items():
        assert run.result.ok, (mode, run.error)
        assert len(run.outputs) == len(frames)
    for mode in ("auto", "script"):
        for a, b in zip(runs[mode].outputs, runs["eager"].outputs, strict=True):
            assert np.array_equal(a.arrays[0], b.arrays[0]), mode


def test_scripted_detector_equals_the_eager_one(bikes_frames):
    from tests.models import frames_to_tensors

    torch.manual_seed(0)
    module = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, score_thresh=0.0).eval()
    model = LoadedModel(module, "ssdlite", torch.device("cpu"), "torchvision",
                        takes_image_list=True)
    config = TensorsConfig((TensorInfo("float32", (3, 272, 640)),))
    engine = InferenceEngine(model, config)  # auto: a torchvision detector is scripted
    engine.probe()
    assert engine.graph_mode == "script"
    images = frames_to_tensors(bikes_frames[:2])
    names, rows = engine.run([[t] for t in images])
    with torch.inference_mode():
        expected = module(images)
    for got, ref in zip(rows, expected, strict=True):
        named = dict(zip(names, got, strict=True))
        assert len(ref["scores"]) > 0
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(named[key], ref[key]), key


def test_a_graph_is_made_once_per_model_file_and_input(tmp_path, mobilenet_weights):
    """TorchScript keeps every traced class for the life of the process: a pipeline rebuilt
    with the same model reuses the graph instead of growing the process by another one."""
    engines = []
    for _ in range(2):
        engine = InferenceEngine(load_model("torchvision.models.mobilenet_v2",
                                            str(mobilenet_weights)), IMAGE)
        engine.probe()
        engines.append(engine)
    assert engines[0].module is engines[1].module
    copy = tmp_path / "mobilenet_v2-b0353104.pth"  # other weights file: its own graph
    copy.write_bytes(mobilenet_weights.read_bytes())
    other = InferenceEngine(load_model("torchvision.models.mobilenet_v2", str(copy)), IMAGE)
    other.probe()
    smaller = InferenceEngine(load_model("torchvision.models.mobilenet_v2",
                                         str(mobilenet_weights)),
                              TensorsConfig((TensorInfo("float32", (3, 160, 160)),)))
    smaller.probe()
    assert len({id(e.module) for e in (engines[0], other, smaller)}) == 3


def test_a_segmentation_model_with_a_dict_output_is_traced_exactly(bikes_frames):
    torch.manual_seed(0)
    module = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None).eval()
    config = TensorsConfig((TensorInfo("float32", (3, 136, 320)),))
    engine = InferenceEngine(LoadedModel(module, "lraspp", torch.device("cpu"), "torchvision"),
                             config)
    engine.probe()
    assert engine.graph_mode == "trace" and engine.graph_note == ""
    x = torch.nn.functional.interpolate(
        torch.from_numpy(bikes_frames[0].transpose(2, 0, 1).copy()).float()[None] / 255,
        size=(136, 320))[0]
    names, rows = engine.run([[x]])
    with torch.inference_mode():
        expected = module(x[None])
    assert names == ("out",) and torch.equal(rows[0][0], expected["out"][0])
