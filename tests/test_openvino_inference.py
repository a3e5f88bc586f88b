"""openvino_tensor_inference: OpenVINO IR and ONNX files made here from the real mobilenet_v2
weights give what the PyTorch model gives, element by element and through the bins, which
choose it by the file's suffix."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import run_pipeline
from tests.results_helpers import run_results
from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError
from torchstream.model.engines import ATOL, RTOL
from torchstream.plan.chain import plan_chain

IMAGENET = LABELS_DIR / "imagenet_2012.txt"
MOBILENET = "torchvision.models.mobilenet_v2"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, mobilenet_weights) -> dict[str, Path]:
    """mobilenet_v2 with the real weights as OpenVINO IR (f32, input fixed at 1x3x224x224)
    and as ONNX (input "image", output "logits", batch dim dynamic)."""
    import openvino

    folder = tmp_path_factory.mktemp("openvino")
    module = torchvision.models.mobilenet_v2()
    module.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    module.eval()
    example = torch.rand(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = openvino.convert_model(module, example_input=(example,),
                                           input=[openvino.PartialShape([1, 3, 224, 224])])
        ir = folder / "mobilenet_v2.xml"
        openvino.save_model(converted, str(ir), compress_to_fp16=False)
        onnx = folder / "mobilenet_v2.onnx"
        torch.onnx.export(module, (example,), str(onnx), dynamo=False, input_names=["image"],
                          output_names=["logits"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    return {"xml": ir, "onnx": onnx}


def _tensors(inference: str) -> str:
    """Real frames scaled to 224x224 and normalised, into ``inference``."""
    return ("appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=224,"
            "height=224 ! tensor_convert ! "
            f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
            f"{inference} ! appsink name=sink")


@pytest.mark.parametrize("kind", ["xml", "onnx"])
def test_the_element_gives_the_pytorch_models_outputs(kind, model_files, bikes_frames,
                                                      mobilenet_weights):
    frames = bikes_frames[:6]
    reference = run_pipeline(_tensors(f"pytorch_tensor_inference model={MOBILENET} "
                                      f"model-weights={mobilenet_weights} engine=torch"), frames)
    run = run_pipeline(_tensors(f"openvino_tensor_inference model={model_files[kind]} "
                                "batch-size=2"), frames)
    assert reference.result.ok and run.result.ok, (reference.error, run.error)
    assert len(run.outputs) == len(frames)
    assert any("engine openvino" in i for i in run.result.infos), run.result.infos
    for got, ref in zip(run.outputs, reference.outputs, strict=True):
        assert got.arrays[0].shape == ref.arrays[0].shape == (1000,)
        assert np.allclose(got.arrays[0], ref.arrays[0], rtol=RTOL, atol=ATOL)
        assert got.pts == ref.pts
    names = run.outputs[0].record.names
    assert names == ("logits",) if kind == "onnx" else len(names) == 1


@pytest.mark.parametrize("kind", ["xml", "onnx"])
def test_the_element_proposes_the_models_input_size(kind, model_files, bikes_frames):
    """No size in the caps filter: videoscale scales to the 224x224 the file fixes."""
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP ! tensor_convert"
        f" ! opencv_tensor_normalize range=<0,1> ! openvino_tensor_inference "
        f"model={model_files[kind]} ! appsink name=sink", bikes_frames[:2])
    assert run.result.ok, run.error
    assert run.outputs[0].record.input_dimensions == "224:224:3"


def _model_proc(tmp_path: Path) -> Path:
    """mobilenet_v2's torchvision preprocessing written out, as an IR file has none."""
    path = tmp_path / "mobilenet_v2.json"
    path.write_text(json.dumps({
        "json_schema_version": "2.2.0",
        "input_preproc": [{"format": "image", "params": {
            "color_space": "RGB", "resize": "aspect-ratio", "crop": "central",
            "resize_size": 256, "crop_size": 224, "range": [0.0, 1.0],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}],
        "output_postproc": [{"converter": "label", "method": "softmax",
                             "labels": str(IMAGENET)}]}))
    return path


def test_the_bins_choose_it_by_suffix(model_files, tmp_path):
    proc = _model_proc(tmp_path)
    for kind in ("xml", "onnx"):
        chain = plan_chain("video_inference", {"model": str(model_files[kind]),
                                               "model-proc": str(proc), "threads": 1})
        (step,) = chain.process
        assert step.factory == "openvino_tensor_inference"
        assert step.props == {"model": str(model_files[kind]), "batch-size": 1, "threads": 1}
    for prop, value in (("model-weights", "w.pth"), ("device", "cuda"), ("engine", "torch")):
        with pytest.raises(ConfigError, match=f"'{prop}'"):
            plan_chain("video_inference", {"model": str(model_files["xml"]), prop: value})


@pytest.mark.parametrize("kind", ["xml", "onnx"])
def test_video_inference_with_an_openvino_file_labels_as_the_pytorch_bin(
        kind, model_files, tmp_path, bikes_frames, mobilenet_weights):
    frames = bikes_frames
    proc = _model_proc(tmp_path)
    reference = run_results(f"appsrc name=src ! video_inference model={MOBILENET} "
                            f"model-weights={mobilenet_weights} labels-file={IMAGENET} "
                            "engine=torch ! appsink name=sink", frames)
    run = run_results(f"appsrc name=src ! video_inference model={model_files[kind]} "
                      f"model-proc={proc} ! appsink name=sink", frames)
    assert reference.result.ok and run.result.ok, (reference.error, run.error)
    got = [r.results.classifications[0] for r in run.per_sink["sink"]]
    ref = [r.results.classifications[0] for r in reference.per_sink["sink"]]
    assert len(got) == len(ref) == len(frames)
    for a, b in zip(got, ref, strict=True):
        assert (a.label_id, a.label) == (b.label_id, b.label)
        assert abs(a.confidence - b.confidence) <= 1e-3


@pytest.mark.parametrize("model, message", [
    ("/no/such/model.xml", "model file"),
    ("{pt}", "not an OpenVINO model file"),
    ("{garbage}", "OpenVINO cannot read"),
])
def test_a_bad_model_file_stops_the_pipeline_with_a_clear_error(model, message, tmp_path,
                                                                bikes_frames):
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net>not a model")
    model = model.format(pt=tmp_path / "model.pt", garbage=garbage)
    run = run_pipeline(_tensors(f"openvino_tensor_inference model={model}"), bikes_frames[:2])
    assert not run.result.ok and message in run.error, run.error
