"""Semantic segmentation: a torchvision segmentation model through video_inference against
torchvision called directly with the weights' transforms; the class map in the metadata, the
JSON and the overlay; outputs it cannot read give named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import BIKES
from tests.helpers import decode_frames
from tests.models import save_state_dict
from tests.results_helpers import run_results
from torchstream.decode.labels import Labels
from torchstream.decode.segmentation import segment
from torchstream.errors import ConfigError
from torchstream.plan.chain import plan_chain
from torchstream.results.data import (
    FrameMapping,
    FrameResults,
    Segmentation,
    decode_results,
    encode_results,
)
from torchstream.results.overlay import color_for, draw_results
from torchstream.results.publish import frame_record

MODEL = "torchvision.models.segmentation.lraspp_mobilenet_v3_large"
WEIGHTS = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT


def test_the_class_map_is_the_argmax_of_the_out_output():
    scores = np.zeros((1, 3, 2, 4), np.float32)
    scores[0, 1, 0, :2] = 1.0
    scores[0, 2, 1, 3] = 2.0
    aux = np.zeros((1, 3, 2, 4), np.float32)
    seg, index = segment([aux, scores], ["aux", "out"], Labels(("bg", "a", "b"), "labels"),
                         None)
    assert index == 1
    np.testing.assert_array_equal(seg.array(), [[1, 1, 0, 0], [0, 0, 0, 2]])
    assert seg.shares() == {0: 5 / 8, 1: 2 / 8, 2: 1 / 8} and seg.label(2) == "b"


@pytest.mark.parametrize("shapes, names, message", [
    ([(1, 3, 4, 4), (1, 3, 4, 4)], ["a", "b"], "several are shaped"),
    ([(2, 3, 4, 4)], ["x"], "none is shaped"),
    ([(1, 1, 4, 4)], ["out"], r"not one frame's \[1,C,H,W\] with C >= 2"),
])
def test_outputs_that_are_no_class_map_are_refused_by_name(shapes, names, message):
    with pytest.raises(ConfigError, match=message):
        segment([np.zeros(s, np.float32) for s in shapes], names, None, None)


def test_labels_that_miss_classes_are_refused():
    with pytest.raises(ConfigError, match="has 2 labels but the model outputs 3 classes"):
        segment([np.zeros((1, 3, 2, 2), np.float32)], ["out"], Labels(("a", "b"), "labels"),
                None)


def test_the_class_map_travels_in_the_metadata_json_and_overlay():
    classes = np.zeros((10, 20), np.int64)
    classes[:, 10:] = 7
    seg = Segmentation.from_array(classes, (), FrameMapping(sx=0.5, ox=0.5))
    results = FrameResults(segmentation=seg)
    assert decode_results(encode_results(results))[0] == results
    record = json.loads(json.dumps(frame_record(results, 0, 0, 0, 80, 40, class_map=True)))
    assert record["segmentation"]["classes"] == [
        {"label_id": 0, "label": "0", "share": 0.5}, {"label_id": 7, "label": "7", "share": 0.5}]
    assert record["segmentation"]["class_map"] == {"values": [0, 7] * 10, "counts": [10] * 20}
    assert "class_map" not in frame_record(results, 0, 0, 0, 80, 40)["segmentation"]
    image = np.full((40, 80, 3), 100, np.uint8)
    draw_results(image, results)
    # the map covers the frame's right half (the mapping); class 7 its right half, 0 is not drawn
    blended = (100 * 0.55 + np.array(color_for(7), np.float32) * 0.45 + 0.5).astype(np.uint8)
    assert (image[20, 70] == blended).all()
    assert (image[20, 50] == 100).all() and (image[20, 10] == 100).all()


def test_the_bin_plans_the_weights_preprocessing_and_the_segmentation_postproc():
    chain = plan_chain("video_inference", {"model": MODEL})
    steps = {s.factory: s.props for s in chain.preprocess + chain.postprocess}
    assert steps["tensor_resize_crop"]["size"] == "520" and not steps["tensor_resize_crop"]["crop"]
    assert "tensor_postproc_segmentation" in steps
    with pytest.raises(ConfigError, match="semantic segmentation model"):
        plan_chain("object_detect", {"model": MODEL})


@pytest.fixture(scope="module")
def seeded_segmenter(tmp_path_factory):
    """An untrained model whose BatchNorm statistics come from real frames, so its class map
    varies over the picture as a trained one's does."""
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    transform = WEIGHTS.transforms()
    batch = torch.stack([transform(torch.from_numpy(f).permute(2, 0, 1))
                         for f in decode_frames(BIKES, 4)])
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    path = save_state_dict(model, tmp_path_factory.mktemp("seg") / "lraspp.pth")
    return model, path


@pytest.mark.slow
def test_video_inference_class_maps_equal_torchvision(seeded_segmenter):
    model, weights = seeded_segmenter
    frames = decode_frames(BIKES, 3, start=140)
    transform = WEIGHTS.transforms()
    with torch.inference_mode():
        expected = [model(transform(torch.from_numpy(f).permute(2, 0, 1))[None])["out"]
                    .argmax(1)[0].numpy() for f in frames]
    run = run_results(f"appsrc name=src ! video_inference model={MODEL} model-weights={weights} "
                      "! appsink name=sink", frames, timeout=300)
    assert run.result.ok, run.error
    for out, ref in zip(run.per_sink["sink"], expected, strict=True):
        seg = out.results.segmentation
        assert (seg.height, seg.width) == ref.shape == (520, 1223)
        assert seg.mapping.is_identity
        same = float((seg.array() == ref).mean())
        assert same >= 0.999, same
        assert len(np.unique(ref)) >= 2  # a map that varies, or the comparison says little
