"""Bad configuration and bad input: an ERROR on the bus naming the problem, a quick clean stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import run_pipeline
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end

STOP_WITHIN_S = 10


def classify(model_args: str, frames) -> object:
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=64,height=64"
        f" ! tensor_convert ! opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} "
        f"std={IMAGENET_STD} ! pytorch_tensor_inference name=infer {model_args} ! "
        "appsink name=sink",
        frames, timeout=30,
    )
    assert not run.result.ok, "the pipeline should have failed"
    assert not run.result.timed_out
    assert run.result.seconds < STOP_WITHIN_S
    assert "infer" in run.error  # the element is named
    return run


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_missing_model_file(bikes_frames):
    run = classify("model=/nonexistent/model.pt", bikes_frames[:1])
    assert "/nonexistent/model.pt" in run.error and "does not exist" in run.error


def test_unknown_torchvision_name(bikes_frames):
    run = classify("model=torchvision.models.resnet5000", bikes_frames[:1])
    assert "no model 'resnet5000'" in run.error


def test_weights_of_another_architecture(bikes_frames, resnet18_weights):
    run = classify(f"model=torchvision.models.mobilenet_v2 model-weights={resnet18_weights}",
                   bikes_frames[:1])
    assert "do not fit torchvision.models.mobilenet_v2" in run.error
    assert "missing keys" in run.error and "features." in run.error


def test_state_dict_file_passed_as_model(bikes_frames, resnet18_weights):
    run = classify(f"model={resnet18_weights}", bikes_frames[:1])
    assert "holds only a state dict" in run.error and "model-weights" in run.error


def test_corrupt_model_file(bikes_frames, tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    run = classify(f"model={path}", bikes_frames[:1])
    assert "is not a model torchstream can read" in run.error


def test_truncated_torchscript_file(bikes_frames, tmp_path):
    good = tmp_path / "good.ts"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 2, 1)), good)
    bad = tmp_path / "truncated.ts"
    bad.write_bytes(good.read_bytes()[:300])
    run = classify(f"model={bad}", bikes_frames[:1])
    assert "is not a model torchstream can read" in run.error


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(bikes_frames, mobilenet_weights):
    run = classify(f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights} "
                   "device=CUDA", bikes_frames[:1])
    assert "CUDA is not available" in run.error


def test_bogus_device(bikes_frames, mobilenet_weights):
    run = classify(f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights} "
                   "device=bogus", bikes_frames[:1])
    assert "device 'bogus' is not one of cpu, cuda, cuda:N" in run.error


def test_pickled_module_is_refused_on_request(bikes_frames, tmp_path, monkeypatch):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)), path)
    monkeypatch.setenv("TORCHSTREAM_REFUSE_PICKLE", "1")
    run = classify(f"model={path}", bikes_frames[:1])
    assert "TORCHSTREAM_REFUSE_PICKLE" in run.error


def test_uint8_tensors_into_a_float_model(bikes_frames, mobilenet_weights):
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=64,height=64"
        " ! tensor_convert ! pytorch_tensor_inference name=infer "
        f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights} ! "
        "appsink name=sink",
        bikes_frames[:1], timeout=30,
    )
    assert not run.result.ok and run.result.seconds < STOP_WITHIN_S
    assert "fails on the negotiated input (uint8[3, 64, 64])" in run.error


class Strings(torch.nn.Module):
    def forward(self, x):
        return {"a": "not a tensor"}


def test_model_returning_an_unsupported_type(bikes_frames, tmp_path):
    path = tmp_path / "strings.pt"
    torch.save(Strings(), path)
    run = classify(f"model={path}", bikes_frames[:1])
    assert "'a' is a str, not a tensor" in run.error


def test_model_whose_forward_raises(bikes_frames, tmp_path):
    path = tmp_path / "raises.ts"
    torch.jit.save(torch.jit.script(_Raises()), path)
    run = classify(f"model={path}", bikes_frames[:1])
    assert "fails on the negotiated input" in run.error and "deliberate failure" in run.error


class _Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("deliberate failure")


def test_tensor_caps_without_dimensions_are_refused(mobilenet_weights):
    pipeline = Gst.parse_launch(
        'appsrc name=src caps="other/tensors,num_tensors=(uint)1,types=(string)float32" '
        "format=time ! pytorch_tensor_inference name=infer "
        f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights} ! fakesink"
    )
    src = pipeline.get_by_name("src")
    src.emit("push-buffer", Gst.Buffer.new_wrapped(bytes(3 * 8 * 8 * 4)))
    src.emit("end-of-stream")
    result = run_to_end(pipeline, timeout=30)
    assert not result.ok and not result.timed_out
    assert "lack the required field 'dimensions'" in result.error
