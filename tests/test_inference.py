"""pytorch_tensor_inference against PyTorch itself, on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import run_pipeline
from torchstream.gst import Gst

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
        classifier_pipeline(
            f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}",
            size="width=224,height=224",
        ),
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


def _top1(run, categories):
    logits = run.outputs[0].arrays[0]
    return categories[int(np.argmax(logits))]


@pytest.fixture(scope="module")
def categories():
    return torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


@pytest.mark.parametrize(
    ("image", "accepted"),
    [("chelsea", {"Egyptian cat", "tabby", "tiger cat"}), ("coffee", {"espresso"})],
)
def test_pretrained_classifier_gives_the_real_answer(image, accepted, mobilenet_weights,
                                                     categories):
    import skimage.data

    frame = getattr(skimage.data, image)()
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP ! tensor_convert ! "
        f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
        f"pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} ! appsink name=sink",
        [frame],
    )
    assert run.result.ok, run.error
    assert _top1(run, categories) in accepted


@pytest.mark.slow
def test_torchscript_and_export_files_give_the_same_logits(tmp_path, bikes_frames, mobilenet,
                                                           mobilenet_weights):
    scripted = tmp_path / "mobilenet_v2.ts"
    torch.jit.save(torch.jit.script(mobilenet), scripted)
    exported = tmp_path / "mobilenet_v2.pt2"
    torch.export.save(torch.export.export(mobilenet, (torch.rand(1, 3, 224, 224),)), exported)
    frames = bikes_frames[:3]
    size = "width=224,height=224"
    reference = run_pipeline(classifier_pipeline(
        f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}", size),
        frames, sinks=("sink", "raw"))
    assert reference.result.ok, reference.error
    for path in (scripted, exported):
        run = run_pipeline(classifier_pipeline(f"model={path}", size), frames,
                           sinks=("sink", "raw"))
        assert run.result.ok, run.error
        assert len(run.outputs) == len(frames)
        for got, want in zip(run.outputs, reference.outputs, strict=True):
            assert np.abs(got.arrays[0] - want.arrays[0]).max() <= 1e-4


def test_default_weights_load_from_torch_home_without_network(tmp_path, monkeypatch, bikes_frames,
                                                              mobilenet_weights):
    from torchstream.model.loading import torchvision_default_weights, weights_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = weights_cache_path(torchvision_default_weights("torchvision.models.mobilenet_v2"))
    assert expected.parent == tmp_path / "hub" / "checkpoints"
    # offline and no file: the error names the file to place and where
    run = run_pipeline(classifier_pipeline("model=torchvision.models.mobilenet_v2"),
                       bikes_frames[:1], sinks=("sink", "raw"), timeout=30)
    assert not run.result.ok
    assert expected.name in run.error and str(expected) in run.error
    expected.parent.mkdir(parents=True, exist_ok=True)
    expected.symlink_to(mobilenet_weights)
    run = run_pipeline(classifier_pipeline("model=torchvision.models.mobilenet_v2"),
                       bikes_frames[:1], sinks=("sink", "raw"))
    assert run.result.ok, run.error
    assert run.outputs[0].arrays[0].shape == (1000,)


def test_input_size_is_negotiated_from_the_weights_or_the_caps(bikes_frames, mobilenet_weights):
    model = f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}"
    proposed = run_pipeline(classifier_pipeline(model), bikes_frames[:1], sinks=("sink", "raw"))
    assert proposed.result.ok, proposed.error
    # the file is torchvision's IMAGENET1K_V1 file, whose preprocessing resizes to 256 before
    # its crop (DEFAULT, IMAGENET1K_V2, resizes to 232)
    assert proposed.outputs[0].record.input_dimensions == "256:256:3"
    assert proposed.per_sink["raw"][0].arrays[0].shape == (3, 256, 256)
    explicit = run_pipeline(classifier_pipeline(model, size="width=160,height=120"),
                            bikes_frames[:1], sinks=("sink", "raw"))
    assert explicit.result.ok, explicit.error
    assert explicit.outputs[0].record.input_dimensions == "160:120:3"
    assert explicit.outputs[0].arrays[0].shape == (1000,)


def test_batches_give_the_same_outputs_and_every_frame_comes_out(bikes_frames, mobilenet_weights):
    model = f"model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}"
    size = "width=160,height=160"
    single = run_pipeline(classifier_pipeline(model, size), bikes_frames, sinks=("sink", "raw"))
    batched = run_pipeline(classifier_pipeline(model, size, extra="batch-size=4"), bikes_frames,
                           sinks=("sink", "raw"))
    assert single.result.ok and batched.result.ok, (single.error, batched.error)
    # 10 frames in batches of 4: the last batch of 2 is flushed at EOS
    assert len(batched.outputs) == len(single.outputs) == len(bikes_frames)
    assert [o.pts for o in batched.outputs] == [o.pts for o in single.outputs]
    assert [o.pts for o in batched.outputs] == [r.pts for r in batched.per_sink["raw"]]
    for a, b in zip(batched.outputs, single.outputs, strict=True):
        assert np.abs(a.arrays[0] - b.arrays[0]).max() <= 1e-4


@pytest.mark.parametrize("batch", [1, 3])
def test_input_metadata_survives_inference(bikes_frames, mobilenet_weights, batch):
    from tests.results_helpers import run_results
    from torchstream.gst.meta import write_results
    from torchstream.results.data import FrameResults, Region

    def write(buf, index):
        region = Region(0.1, 0.2, 0.5, 0.6, "marker", index, 0.5, region_id=index + 1)
        write_results(buf, FrameResults(regions=[region]), 640, 272)

    frames = bikes_frames[:5]
    run = run_results(
        "appsrc name=src ! test_meta_writer name=w ! videoconvert ! videoscale ! "
        "video/x-raw,format=RGBP,width=64,height=64 ! tensor_convert ! "
        "opencv_tensor_normalize ! pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} batch-size={batch} ! appsink name=sink",
        frames, writers={"w": write},
    )
    assert run.result.ok, run.error
    received = run.per_sink["sink"]
    assert [r.pts for r in received] == [i * Gst.SECOND // 25 for i in range(len(frames))]
    for index, r in enumerate(received):
        assert [(g.label, g.label_id, g.region_id) for g in r.results.regions] == [
            ("marker", index, index + 1)
        ]
        assert r.record is not None and r.record.model == "torchvision.models.mobilenet_v2"
