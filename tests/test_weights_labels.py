"""Labels from the weights: a torchvision model whose weights are published (DEFAULT, or a file
of a published file's name) labels its results with the weights' category names when no
labels, labels-file or model-proc labels are given; files still override; weights of one's
own carry no names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import COCKATOO, IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import decode_frames
from tests.results_helpers import run_results
from torchstream.decode.labels import weights_labels
from torchstream.environment import LABELS_DIR
from torchstream.model.loading import published_weights

MOBILENET = "torchvision.models.mobilenet_v2"
V1 = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
SSD = "torchvision.models.detection.ssdlite320_mobilenet_v3_large"
SSD_WEIGHTS = torchvision.models.detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1


@pytest.fixture(scope="module")
def cockatoo_frames():
    return decode_frames(COCKATOO, 6, start=200)


def test_the_published_weights_of_a_model_and_a_file(mobilenet_weights, tmp_path):
    assert published_weights(MOBILENET) is torchvision.models.MobileNet_V2_Weights.DEFAULT
    assert published_weights(MOBILENET, str(mobilenet_weights)) is V1
    own = tmp_path / "mobilenet_v2_finetuned.pth"
    assert published_weights(MOBILENET, str(own)) is None
    assert published_weights(MOBILENET, str(mobilenet_weights)).meta["categories"] == \
        V1.meta["categories"]
    labels = weights_labels(str(V1))
    assert labels.names[89] == "sulphur-crested cockatoo" and len(labels) == 1000
    assert weights_labels("No_Such_Weights.V1") is None and weights_labels("") is None


def test_a_bin_labels_a_classifier_from_its_weights(cockatoo_frames, mobilenet_weights):
    """video_inference with no labels: the names of IMAGENET1K_V1; the same ids and
    confidences as with the shipped label file, which overrides them."""
    bare = run_results(f"appsrc name=src ! video_inference model={MOBILENET} "
                       f"model-weights={mobilenet_weights} ! appsink name=sink",
                       cockatoo_frames)
    filed = run_results(f"appsrc name=src ! video_inference model={MOBILENET} "
                        f"model-weights={mobilenet_weights} labels=<{','.join(['x'] * 1000)}>"
                        " ! appsink name=sink", cockatoo_frames)
    assert bare.result.ok, bare.error
    assert filed.result.ok, filed.error
    categories = V1.meta["categories"]
    tops = []
    for a, b in zip(bare.per_sink["sink"], filed.per_sink["sink"], strict=True):
        ca, cb = a.results.classifications[0], b.results.classifications[0]
        assert ca.label == categories[ca.label_id]
        assert (ca.label_id, ca.confidence) == (cb.label_id, cb.confidence)
        assert cb.label == "x"  # the labels given win
        tops.append(ca.label)
    assert tops.count("sulphur-crested cockatoo") >= len(tops) // 2, tops


def test_the_element_form_reads_the_weights_from_the_tensors_record(cockatoo_frames,
                                                                    mobilenet_weights,
                                                                    tmp_path):
    pre = ("appsrc name=src ! videoconvert ! videoscale ! video/x-raw,format=RGBP,width=224,"
           f"height=224 ! tensor_convert ! opencv_tensor_normalize mean={IMAGENET_MEAN} "
           f"std={IMAGENET_STD} ! pytorch_tensor_inference model={MOBILENET}")
    own = tmp_path / "my_mobilenet.pth"
    shutil.copy(mobilenet_weights, own)
    published = run_results(f"{pre} model-weights={mobilenet_weights} ! "
                            "tensor_postproc_label ! appsink name=sink", cockatoo_frames[:2])
    mine = run_results(f"{pre} model-weights={own} ! tensor_postproc_label ! "
                       "appsink name=sink", cockatoo_frames[:2])
    assert published.result.ok and mine.result.ok, (published.error, mine.error)
    for a, b in zip(published.per_sink["sink"], mine.per_sink["sink"], strict=True):
        assert a.record.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
        assert b.record.weights == ""
        ca, cb = a.results.classifications[0], b.results.classifications[0]
        assert ca.label_id == cb.label_id
        assert ca.label == V1.meta["categories"][ca.label_id]
        assert cb.label == str(cb.label_id)  # weights of one's own: the id as text


def test_a_detector_labels_its_regions_from_its_weights(cockatoo_frames, tmp_path):
    """The COCO weights cannot be downloaded here: seeded weights saved under the published
    file's name stand for them (the labels come from the name, the boxes from the model)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None)
    path = tmp_path / Path(SSD_WEIGHTS.url).name
    torch.save(model.state_dict(), path)
    run = run_results(f"appsrc name=src ! object_detect model={SSD} model-weights={path} "
                      "threshold=0 ! appsink name=sink", cockatoo_frames[:2])
    assert run.result.ok, run.error
    categories = SSD_WEIGHTS.meta["categories"]
    regions = [r for out in run.per_sink["sink"] for r in out.results.regions]
    assert regions
    assert all(r.label == categories[r.label_id] for r in regions)
    assert len({r.label_id for r in regions}) > 1  # not one id by chance
    filed = run_results(f"appsrc name=src ! object_detect model={SSD} model-weights={path} "
                        f"threshold=0 labels-file={LABELS_DIR / 'coco_91cl_bkgr.txt'} ! "
                        "appsink name=sink", cockatoo_frames[:1])
    assert filed.result.ok, filed.error
    shipped = (LABELS_DIR / "coco_91cl_bkgr.txt").read_text().splitlines()
    assert all(r.label == shipped[r.label_id] for r in filed.per_sink["sink"][0].results.regions)
    assert np.isfinite([r.confidence for r in regions]).all()
