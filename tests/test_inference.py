"""pytorch_tensor_inference against PyTorch itself, on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import run_pipeline

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def normalize_chw(tensor_u8: np.ndarray) -> torch.Tensor:
    x = tensor_u8.astype(np.float64) / 255.0
    x = (x - MEAN[:, None, None]) / STD[:, None, None]
    return torch.from_numpy(x.astype(np.float32))


def classifier_pipeline(model_args: str, size: str = "", extra: str = "") -> str:
    caps = f"video/x-raw,format=RGBP{',' + size if size else ''}"
    return (
        f"appsrc name=src ! videoconvert ! videoscale ! {caps} ! tensor_convert ! "
        f"tee name=t ! queue ! appsink name=raw  t. ! queue ! "
        f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
        f"pytorch_tensor_inference {model_args} {extra} ! appsink name=sink"
    )


@pytest.fixture(scope="module")
def mobilenet(mobilenet_weights):
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    return model.eval()


def test_classifier_matches_pytorch_on_real_frames(bikes_frames, mobilenet, mobilenet_weights):
    run = run_pipeline(
        classifier_pipeline(f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}",
                            size="width=224,height=224"),
        bikes_frames, sinks=("sink", "raw"),
    )
    assert run.result.ok, run.error
    raw, out = run.per_sink["raw"], run.outputs
    assert len(out) == len(raw) == len(bikes_frames)
    assert [o.pts for o in out] == [r.pts for r in raw]
    batch = torch.stack([normalize_chw(r.arrays[0]) for r in raw])
    with torch.inference_mode():
        expected = mobilenet(batch).numpy()
    got = np.stack([o.arrays[0] for o in out])
    assert got.shape == (len(bikes_frames), 1000)
    assert np.abs(got - expected).max() <= 1e-4
    assert out[0].record.model == "torchvision.models.mobilenet_v2"
    assert out[0].record.input_dimensions == "224:224:3"
    assert out[0].record.names == ("output",)


@pytest.fixture(scope="module")
def ssdlite(tmp_path_factory):
    from tests.conftest import BIKES
    from tests.helpers import decode_frames
    from tests.models import save_state_dict, seeded_detector

    model = seeded_detector("ssdlite320_mobilenet_v3_large", decode_frames(BIKES, 8), 15.0)
    path = save_state_dict(model, tmp_path_factory.mktemp("w") / "ssdlite.pth")
    return model, path


def test_detector_matches_pytorch_with_varying_counts(bikes_frames, ssdlite):
    from tests.models import frames_to_tensors

    model, weights = ssdlite
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        "opencv_tensor_normalize range=<0,1> ! pytorch_tensor_inference "
        f"model=torchvision.models.detection.ssdlite320_mobilenet_v3_large model-weights={weights} "
        "! appsink name=sink",
        bikes_frames,
    )
    assert run.result.ok, run.error
    assert len(run.outputs) == len(bikes_frames)
    first = run.outputs[0]
    assert sorted(first.record.names) == ["boxes", "labels", "scores"]
    assert 'dimensions=(string)"4:0\\,0\\,0"' in first.caps  # N varies: written 0
    with torch.inference_mode():
        expected = model(frames_to_tensors(bikes_frames))
    counts = []
    for out, ref in zip(run.outputs, expected, strict=True):
        named = dict(zip(out.record.names, out.arrays, strict=True))
        boxes, labels, scores = named["boxes"], named["labels"], named["scores"]
        n = len(ref["scores"])
        counts.append(n)
        assert boxes.shape == (n, 4) and labels.shape == (n,) and scores.shape == (n,)
        assert np.abs(boxes - ref["boxes"].numpy()).max(initial=0) <= 1e-4
        assert np.array_equal(labels, ref["labels"].numpy())
        assert np.abs(scores - ref["scores"].numpy()).max(initial=0) <= 1e-4
    assert len(set(counts)) > 1, f"detection counts do not vary: {counts}"
