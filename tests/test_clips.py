"""Clip models: torchvision.models.video.* through video_inference (tensor_sliding_window)
against torchvision called directly on the same frames with the weights' transform; windows,
strides, labels from the weights, and a stream shorter than a clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import BIKES
from tests.helpers import decode_frames, run_pipeline, tensor_output
from tests.models import save_state_dict
from tests.results_helpers import run_results
from torchstream.errors import ConfigError
from torchstream.plan.chain import launch_text, plan_chain
from torchstream.preprocess.clips import ClipWindow, weights_clip_length

MODEL = "torchvision.models.video.r3d_18"
WEIGHTS = torchvision.models.video.R3D_18_Weights.DEFAULT
LENGTH, STRIDE = 4, 3  # short clips keep the test quick; the model takes any length


def test_a_window_gives_a_clip_on_every_stride_th_frame_from_the_length_th():
    window = ClipWindow(3, 2)
    closed = []
    for i in range(8):
        clip = window.push(np.full((2, 1, 1), i, np.float32))
        if clip is not None:
            assert clip.shape == (2, 3, 1, 1)
            closed.append((i, clip[0, :, 0, 0].tolist()))
    assert closed == [(2, [0, 1, 2]), (4, [2, 3, 4]), (6, [4, 5, 6])]
    window.reset()
    assert window.push(np.zeros((2, 1, 1), np.float32)) is None
    with pytest.raises(ConfigError, match="stride >= 1"):
        ClipWindow(3, 0)


def test_the_bin_plans_the_weights_video_preprocessing_and_a_window():
    assert weights_clip_length(WEIGHTS) == 16
    chain = plan_chain("video_inference", {"model": MODEL})
    steps = {s.factory: s.props for s in chain.preprocess}
    resize = steps["tensor_resize_crop"]
    # VideoClassification: exactly 171x128, no antialiasing, centre 112
    assert (resize["mode"], resize["size"], resize["crop"], resize["antialias"]) == (
        "no-aspect-ratio", "171x128", "112x112", False)
    assert steps["opencv_tensor_normalize"]["mean"] == "<0.43216,0.394666,0.37645>"
    assert steps["tensor_sliding_window"] == {"length": 16, "stride": 0}
    assert chain.preprocess[-1].factory == "tensor_sliding_window"
    # labels from the weights: Kinetics-400's names, read by the label post-processing
    assert [s.factory for s in chain.postprocess] == ["tensor_postproc_label"]
    own = plan_chain("video_inference", {"model": MODEL, "clip-length": 8, "clip-stride": 2})
    assert {s.factory: s.props for s in own.preprocess}["tensor_sliding_window"] == {
        "length": 8, "stride": 2}
    for kind in ("object_detect", "object_classify"):
        with pytest.raises(ConfigError, match="is a clip model"):
            plan_chain(kind, {"model": MODEL})


@pytest.fixture(scope="module")
def seeded_clip_model(tmp_path_factory):
    """An untrained r3d_18 whose BatchNorm statistics come from real clips, so its logits vary
    from clip to clip as a trained one's do; saved under the published file's name, so the bin
    takes the published weights' labels (Kinetics-400)."""
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.momentum = None
            module.reset_running_stats()
    frames = torch.stack([torch.from_numpy(f).permute(2, 0, 1)
                          for f in decode_frames(BIKES, 8, start=40)])
    clips = WEIGHTS.transforms()(frames.view(2, 4, *frames.shape[1:]))
    model.train()
    with torch.no_grad():
        model(clips)
    model.eval()
    name = WEIGHTS.url.rsplit("/", 1)[-1]
    path = save_state_dict(model, tmp_path_factory.mktemp("clip") / name)
    return model, path


def _reference_logits(model, frames: list[np.ndarray], ends: list[int]) -> list[torch.Tensor]:
    video = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])  # T,C,H,W
    with torch.inference_mode():
        return [model(WEIGHTS.transforms()(video[end - LENGTH + 1:end + 1])[None])[0]
                for end in ends]


@pytest.mark.slow
def test_clip_results_equal_torchvision_on_the_frames_that_close_each_window(
        seeded_clip_model):
    model, weights = seeded_clip_model
    frames = decode_frames(BIKES, 11, start=100)
    ends = list(range(LENGTH - 1, len(frames), STRIDE))  # frames 3, 6, 9
    expected = _reference_logits(model, frames, ends)
    run = run_results(f"appsrc name=src ! video_inference model={MODEL} model-weights={weights} "
                      f"clip-length={LENGTH} clip-stride={STRIDE} ! appsink name=sink", frames,
                      timeout=300)
    assert run.result.ok, run.error
    outs = run.per_sink["sink"]
    assert len(outs) == len(frames)  # every frame out, results on the closing ones only
    labelled = [i for i, out in enumerate(outs) if out.results.classifications]
    assert labelled == ends
    categories = WEIGHTS.meta["categories"]
    for end, logits in zip(ends, expected, strict=True):
        [found] = outs[end].results.classifications
        probabilities = logits.softmax(0)
        assert found.label == categories[int(probabilities.argmax())]
        assert abs(found.confidence - float(probabilities.max())) <= 1e-5
    assert len({int(x.argmax()) for x in expected}) >= 2 or \
        float((expected[0] - expected[1]).abs().max()) > 1e-2  # the clips differ


def test_the_planned_chain_gives_torchvision_s_logits(seeded_clip_model):
    """The bin's own preprocessing steps, ending at the model's raw output: logits 1e-4."""
    model, weights = seeded_clip_model
    frames = decode_frames(BIKES, 7, start=200)
    chain = plan_chain("video_inference", {"model": MODEL, "model-weights": str(weights),
                                           "clip-length": LENGTH, "clip-stride": STRIDE})
    text = launch_text(chain.preprocess + chain.process)
    run = run_pipeline(f"appsrc name=src ! {text} ! appsink name=sink", frames, timeout=300,
                       receive=tensor_output)
    assert run.result.ok, run.error
    got = [out.arrays[0].reshape(-1) for out in run.per_sink["sink"]]
    expected = _reference_logits(model, frames, [3, 6])
    assert len(got) == 2
    for logits, ref in zip(got, expected, strict=True):
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, rtol=0)


def test_a_stream_shorter_than_a_clip_is_a_named_error(seeded_clip_model):
    _, weights = seeded_clip_model
    frames = decode_frames(BIKES, 3, start=0)
    run = run_results(f"appsrc name=src ! video_inference model={MODEL} model-weights={weights} "
                      f"clip-length={LENGTH} ! appsink name=sink", frames, timeout=300)
    assert not run.result.ok
    assert "the stream ended after 3 frames, fewer than the clip length 4" in run.error
