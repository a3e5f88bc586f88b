"""Models of one's own, saved the way training code saves them: fine-tuned torchvision heads,
the usual checkpoint layouts, timm architectures by name, class names from the checkpoint or a
labels.txt, and a labelled result (names or ids) where there used to be none. Each against
torchvision or timm called directly on the same real frames.

The fine-tuned classifier is the real ImageNet mobilenet_v2 with a 5-class head made of five
of its ImageNet rows: trained features, decisive outputs, a head torchvision's factory does
not build by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import BIKES, COCKATOO
from tests.helpers import decode_frames
from tests.models import seeded_detector
from tests.results_helpers import run_results
from torchstream.errors import ConfigError
from torchstream.model.checkpoints import fit_keys, read_checkpoint
from torchstream.model.loading import load_model, model_file_input_size
from torchstream.plan.chain import launch_text, plan_chain

MOBILENET = "torchvision.models.mobilenet_v2"
TRANSFORM = torchvision.models.MobileNet_V2_Weights.DEFAULT.transforms()  # own files: DEFAULT's
ROWS = (89, 817, 671, 444, 919)  # cockatoo, sports car, mountain bike, tandem, street sign
NAMES = ("cockatoo", "sports car", "mountain bike", "tandem", "street sign")


@pytest.fixture(scope="module")
def finetuned(mobilenet_weights):
    """(state dict with a 5-class head, the same model built by torchvision)."""
    state = torch.load(mobilenet_weights, weights_only=True)
    for key in ("classifier.1.weight", "classifier.1.bias"):
        state[key] = state[key][list(ROWS)].clone()
    model = torchvision.models.mobilenet_v2(num_classes=5)
    model.load_state_dict(state)
    return state, model.eval()


@pytest.fixture(scope="module")
def frames():
    return decode_frames(BIKES, 4, start=60) + decode_frames(BIKES, 2, start=200)


def reference(model, frames, transform=TRANSFORM) -> list[torch.Tensor]:
    """Probabilities torchvision's reference pipeline gives, frame by frame."""
    with torch.inference_mode():
        return [model(transform(torch.from_numpy(f).permute(2, 0, 1))[None]).softmax(1)[0]
                for f in frames]


def check_labelled(run, expected: list[torch.Tensor], names: tuple[str, ...] | None,
                   tolerance: float = 1e-4) -> None:
    """Every frame labelled: top-1 equal to ``expected``, probability within ``tolerance``,
    the label the class name (or the class id as text without names)."""
    assert run.result.ok, run.error
    outs = run.per_sink["sink"]
    assert len(outs) == len(expected)
    for out, probabilities in zip(outs, expected, strict=True):
        [found] = out.results.classifications
        top = int(probabilities.argmax())
        assert found.label_id == top
        assert found.label == (names[top] if names else str(top))
        assert abs(found.confidence - float(probabilities[top])) <= tolerance


LAYOUTS = {
    "bare": lambda state, names: state,
    "state_dict": lambda state, names: {"state_dict": state, "epoch": 7},
    "model": lambda state, names: {"model": state, "optimizer": {"lr": 0.1}, "classes": names},
    "model_state_dict": lambda state, names: {"model_state_dict": state,
                                              "idx_to_class": dict(enumerate(names))},
    "lightning": lambda state, names: {"state_dict": {"model." + k: v for k, v in state.items()}
                                       | {"loss.weight": torch.ones(5)},
                                       "epoch": 3, "global_step": 120,
                                       "pytorch-lightning_version": "2.4.0"},
    "dataparallel": lambda state, names: {"module." + k: v for k, v in state.items()},
    # torchvision's reference train.py: its argparse args and, in many loops, a numpy best
    "reference_script": lambda state, names: {"model": state, "epoch": 89,
                                              "args": argparse.Namespace(lr=0.1, epochs=90),
                                              "best_acc1": np.float64(71.9)},
}
WITH_NAMES = {"model", "model_state_dict", "safetensors"}


def save_layout(layout: str, state: dict, path_dir: Path) -> Path:
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = path_dir / "finetuned.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path,
                  metadata={"classes": json.dumps(NAMES)})
        return path
    path = path_dir / ("finetuned.ckpt" if layout == "lightning" else f"finetuned_{layout}.pth")
    torch.save(LAYOUTS[layout](state, list(NAMES)), path)
    return path


@pytest.mark.parametrize("layout", [*LAYOUTS, "safetensors"])
def test_each_checkpoint_layout_of_a_finetuned_classifier_runs_in_the_bin(
        layout, finetuned, frames, tmp_path):
    state, model = finetuned
    path = save_layout(layout, state, tmp_path)
    loaded = load_model(MOBILENET, str(path))
    assert "5 classes from the weights" in loaded.notes
    run = run_results(f"appsrc name=src ! video_inference model={MOBILENET} model-weights={path}"
                      " engine=torch ! appsink name=sink", frames, timeout=120)
    check_labelled(run, reference(model, frames), NAMES if layout in WITH_NAMES else None)


def test_a_finetuned_classifier_with_default_properties_and_a_labels_file(
        finetuned, frames, tmp_path):
    """The first row of the table as a user types it: default engine, with and without a
    labels-file of five names."""
    state, model = finetuned
    path = tmp_path / "r5.pth"
    torch.save(state, path)
    expected = reference(model, frames)
    labels = tmp_path / "five.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    bare = run_results(f"appsrc name=src ! video_inference model={MOBILENET} model-weights={path}"
                       " ! appsink name=sink", frames, timeout=120)
    check_labelled(bare, expected, None)
    named = run_results(f"appsrc name=src ! video_inference model={MOBILENET} "
                        f"model-weights={path} labels-file={labels} ! appsink name=sink",
                        frames, timeout=120)
    check_labelled(named, expected, NAMES)
    assert len({o.results.classifications[0].label for o in named.per_sink["sink"]}) >= 2


def test_own_weights_of_1000_classes_are_labelled_by_id(mobilenet_weights, frames, tmp_path):
    """A file that is not a published one: its classes need not be ImageNet's, so no names,
    but every frame still gets its class id as label."""
    own = tmp_path / "mobilenet_v2_retrained.pth"
    own.write_bytes(mobilenet_weights.read_bytes())
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(own, weights_only=True))
    run = run_results(f"appsrc name=src ! video_inference model={MOBILENET} model-weights={own}"
                      " ! appsink name=sink", frames, timeout=120)
    check_labelled(run, reference(model.eval(), frames), None)


def torchscript_classifier(model, path: Path) -> Path:
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 224, 224)), str(path))
    return path


def full_frame_reference(model, frames) -> list[torch.Tensor]:
    """A model file's default preprocessing: the whole frame as RGB [0, 1]."""
    with torch.inference_mode():
        return [model(torch.from_numpy(f).permute(2, 0, 1).float()[None] / 255).softmax(1)[0]
                for f in frames]


def test_a_torchscript_classifier_is_labelled_by_id_or_by_a_labels_txt_beside_it(
        finetuned, frames, tmp_path):
    _, model = finetuned
    expected = full_frame_reference(model, frames[:2])
    path = torchscript_classifier(model, tmp_path / "r5.ts")
    run = run_results(f"appsrc name=src ! video_inference model={path} ! appsink name=sink",
                      frames[:2], timeout=120)
    check_labelled(run, expected, None)
    (tmp_path / "labels.txt").write_text("\n".join(NAMES) + "\n")
    run = run_results(f"appsrc name=src ! video_inference model={path} ! appsink name=sink",
                      frames[:2], timeout=120)
    check_labelled(run, expected, NAMES)


def test_a_labels_txt_that_misses_classes_is_refused(finetuned, tmp_path):
    state, _ = finetuned
    path = tmp_path / "r5.pth"
    torch.save(state, path)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ConfigError, match="names 3 classes but .* outputs 5"):
        load_model(MOBILENET, str(path))


class Boxes(torch.nn.Module):
    """A model file whose output is no class scores (a [1, 10, 6] table)."""

    def forward(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 20)[:, :60].reshape(1, 10, 6)


@pytest.mark.slow
def test_a_model_file_whose_output_is_not_class_scores_says_so_once(frames, tmp_path):
    path = tmp_path / "boxes.ts"
    torch.jit.save(torch.jit.script(Boxes()), str(path))
    run = run_results(f"appsrc name=src ! video_inference model={path} ! appsink name=sink",
                      frames[:3], timeout=120)
    assert run.result.ok, run.error
    assert all(not o.results.classifications and o.record is None
               for o in run.per_sink["sink"])  # the bin's output is the frame, unlabelled
    env = dict(os.environ, GST_DEBUG="torchstream-postproc-label:2")
    launched = subprocess.run(
        [sys.executable, "-m", "torchstream.command.cli", "launch",
         f"videotestsrc num-buffers=5 ! video/x-raw,width=320,height=240 ! video_inference "
         f"model={path} "
         "! fakesink"], env=env, capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr[-2000:]
    said = [line for line in launched.stderr.splitlines() if "is not one set of class scores"
            in line]
    assert len(said) == 1, launched.stderr[-2000:]
    assert "[10, 6]" in said[0] and "raw tensors stay on the buffer" in said[0]


def test_the_element_form_takes_the_class_names_from_the_checkpoint(finetuned, frames,
                                                                   tmp_path):
    state, model = finetuned
    path = tmp_path / "finetuned.pth"
    torch.save({"model": state, "class_to_idx": {n: i for i, n in enumerate(NAMES)}}, path)
    run = run_results("appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert"
                      " ! tensor_resize_crop size=232 crop=224 ! opencv_tensor_normalize "
                      "mean=<0.485,0.456,0.406> std=<0.229,0.224,0.225> ! "
                      f"pytorch_tensor_inference model={MOBILENET} model-weights={path} ! "
                      "tensor_postproc_label method=softmax ! appsink name=sink", frames[:3],
                      timeout=120)
    check_labelled(run, reference(model, frames[:3]), NAMES)


def test_a_finetuned_clip_model_labels_its_clips_by_id(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(num_classes=3).eval()
    path = tmp_path / "r3d_3cls.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    weights = torchvision.models.video.R3D_18_Weights.DEFAULT
    clip = decode_frames(BIKES, 4, start=100)
    run = run_results(f"appsrc name=src ! video_inference model=torchvision.models.video.r3d_18 "
                      f"model-weights={path} clip-length=4 engine=torch ! appsink name=sink",
                      clip, timeout=180)
    assert run.result.ok, run.error
    video = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in clip])
    with torch.inference_mode():
        probabilities = model(weights.transforms()(video)[None]).softmax(1)[0]
    outs = run.per_sink["sink"]
    assert [bool(o.results.classifications) for o in outs] == [False, False, False, True]
    [found] = outs[-1].results.classifications
    assert found.label == str(int(probabilities.argmax())) == str(found.label_id)
    assert abs(found.confidence - float(probabilities.max())) <= 1e-4


def test_a_finetuned_detector_with_its_own_classes(tmp_path):
    """fasterrcnn_mobilenet_v3_large_320_fpn trained on 3 classes (background + 2), its
    names saved in the checkpoint: the regions equal torchvision's own, named."""
    calibration = decode_frames(BIKES, 2, start=30)
    model = seeded_detector("fasterrcnn_mobilenet_v3_large_320_fpn", calibration, -2.0,
                            num_classes=3)
    names = ["__background__", "vehicle", "rider"]
    path = tmp_path / "detector.pth"
    torch.save({"model": model.state_dict(), "classes": names}, path)
    frames = decode_frames(BIKES, 2, start=120)
    run = run_results("appsrc name=src ! object_detect model=torchvision.models.detection."
                      f"fasterrcnn_mobilenet_v3_large_320_fpn model-weights={path} threshold=0.05"
                      " engine=torch ! appsink name=sink", frames, timeout=180)
    assert run.result.ok, run.error
    found_any = 0
    for frame, out in zip(frames, run.per_sink["sink"], strict=True):
        with torch.inference_mode():
            [want] = model([torch.from_numpy(frame).permute(2, 0, 1).float() / 255])
        keep = want["scores"] >= 0.05
        got = out.results.regions
        assert len(got) == int(keep.sum())
        for region, label_id, score in zip(got, want["labels"][keep], want["scores"][keep],
                                           strict=True):
            assert region.label_id == int(label_id) and region.label == names[int(label_id)]
            assert abs(region.confidence - float(score)) <= 1e-4
        found_any += len(got)
    assert found_any > 0


def test_a_finetuned_segmentation_model_with_4_classes(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4, aux_loss=True).eval()
    path = tmp_path / "deeplab4.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("torchvision.models.segmentation.deeplabv3_mobilenet_v3_large", str(path))
    assert "4 classes from the weights" in loaded.notes
    frames = decode_frames(BIKES, 1, start=80)
    run = run_results("appsrc name=src ! video_inference model=torchvision.models.segmentation."
                      f"deeplabv3_mobilenet_v3_large model-weights={path} engine=torch ! "
                      "appsink name=sink", frames, timeout=180)
    assert run.result.ok, run.error
    weights = torchvision.models.segmentation.DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT
    with torch.inference_mode():
        x = weights.transforms()(torch.from_numpy(frames[0]).permute(2, 0, 1))[None]
        want = model(x)["out"][0].argmax(0).numpy()
    segmentation = run.per_sink["sink"][0].results.segmentation
    assert segmentation is not None
    got = segmentation.array()
    assert got.shape == want.shape
    assert (got == want).mean() >= 0.999
    assert set(np.unique(got)) <= {0, 1, 2, 3}


def test_keypoint_and_auxiliary_heads_are_read_from_the_weights(tmp_path):
    detection = torchvision.models.detection
    cases = {
        "detection.keypointrcnn_resnet50_fpn": (detection.keypointrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_keypoints=5), "5 keypoints"),
        "inception_v3": (torchvision.models.inception_v3(
            weights=None, num_classes=7, aux_logits=True, init_weights=False), "7 classes"),
        "segmentation.lraspp_mobilenet_v3_large": (
            torchvision.models.segmentation.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=2), "2 classes"),
    }
    for name, (model, note) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(model.state_dict(), path)
        loaded = load_model(f"torchvision.models.{name}", str(path))
        assert any(n.startswith(note) for n in loaded.notes), loaded.notes
        mine, theirs = loaded.module.state_dict(), model.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


# -- checkpoint reading --------------------------------------------------------------------


@pytest.mark.parametrize("names", [
    ["a", "b", "c"], {0: "a", 1: "b", 2: "c"}, {"0": "a", "1": "b", "2": "c"},
    {"a": 0, "b": 1, "c": 2},
])
def test_class_names_in_every_form_training_code_saves_them(names, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "classes": names}, path)
    assert read_checkpoint(str(path)).class_names == ("a", "b", "c")


def test_prefixes_are_stripped_only_where_they_make_the_keys_fit():
    expected = {"conv.weight", "fc.weight"}
    state = {"model.module.conv.weight": 1, "model.module.fc.weight": 2, "model.loss.w": 3}
    assert fit_keys(state, expected) == ({"conv.weight": 1, "fc.weight": 2}, "model.module.")
    assert fit_keys({"conv.weight": 1, "fc.weight": 2}, expected)[1] == ""


def test_a_dict_without_a_state_dict_is_refused_with_its_keys(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2], "epoch": 3}, path)
    with pytest.raises(ConfigError, match=r"keys: weights, epoch\); expected a state dict, or "
                                          r"one under 'state_dict', 'model_state_dict', 'model'"):
        load_model(MOBILENET, str(path))


def test_weights_of_another_architecture_name_the_mismatch(finetuned, tmp_path):
    state, _ = finetuned
    path = tmp_path / "mobilenet.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="do not fit torchvision.models.resnet18"):
        load_model("torchvision.models.resnet18", str(path))


def _ultralytics_checkpoint(tmp_path: Path) -> Path:
    """A file laid out as the ultralytics package saves yolov8n.pt: a dict whose 'model' is a
    pickled ultralytics.nn.tasks.DetectionModel (made here from a module of that name, since
    ultralytics itself is no dependency)."""
    package = tmp_path / "pkg" / "ultralytics" / "nn"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(
        "import torch\nclass DetectionModel(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 1)\n")
    path = tmp_path / "yolov8n.pt"
    subprocess.run([sys.executable, "-c",
                    "import sys, torch; sys.path.insert(0, sys.argv[1]);"
                    "from ultralytics.nn.tasks import DetectionModel;"
                    "torch.save({'model': DetectionModel(), 'train_args': {}}, sys.argv[2])",
                    str(tmp_path / "pkg"), str(path)], check=True)
    return path


def test_an_ultralytics_checkpoint_is_refused_with_how_to_export_it(tmp_path):
    path = _ultralytics_checkpoint(tmp_path)
    for model, weights in ((str(path), None), (MOBILENET, str(path))):
        with pytest.raises(ConfigError, match="Ultralytics checkpoint.*format=torchscript.*"
                                              "model-proc=yolo-v8.json"):
            load_model(model, weights)


# -- a model file's input size ----------------------------------------------------------------


class Tiny(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_a_model_proc_without_a_size_takes_it_from_the_model_file(tmp_path):
    """DL Streamer's own model-procs resize without giving a size: the .pt2's or ONNX file's
    fixed input shape gives it."""
    program = torch.export.export(Tiny(), (torch.rand(1, 3, 96, 160),))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(program, str(pt2))
    onnx = tmp_path / "tiny.onnx"
    torch.onnx.export(Tiny(), (torch.rand(1, 3, 64, 128),), str(onnx), dynamo=False)
    proc = tmp_path / "proc.json"
    proc.write_text(json.dumps({"json_schema_version": "2.2.0", "input_preproc": [
        {"format": "image", "params": {"resize": "no-aspect-ratio"}}], "output_postproc": []}))
    assert model_file_input_size(str(pt2)) == (96, 160)
    assert model_file_input_size(str(onnx)) == (64, 128)
    for path, size in ((pt2, "160x96"), (onnx, "128x64")):
        chain = plan_chain("video_inference", {"model": str(path), "model-proc": str(proc)})
        assert f"tensor_resize_crop size={size}" in launch_text(chain.preprocess)


# -- timm ------------------------------------------------------------------------------------

TIMM_ARCHITECTURES = ("resnet50", "efficientnet_b0", "vit_small_patch16_224", "convnext_tiny")


def seeded_timm(architecture: str, calibration: list[np.ndarray]):
    """A timm model with seeded weights whose BatchNorm statistics come from real frames and
    whose head spreads the logits as a trained one does, so its top-1 means something."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    batch = torch.stack([tensor_transform(transform, f) for f in calibration])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None
                module.reset_running_stats()
        model.train()
        model(batch)
        model.eval()
        features = model.forward_head(model.forward_features(batch), pre_logits=True)
        head = model.get_classifier()
        mean, std = features.mean(0), features.std(0) + 1e-6
        weight = torch.randn(head.out_features, features.shape[1]) / std \
            / features.shape[1] ** 0.5 * 2
        head.weight.copy_(weight)
        head.bias.copy_(-(weight * mean).sum(1))
    return model, transform


def tensor_transform(transform, frame: np.ndarray) -> torch.Tensor:
    """timm's own evaluation transform on a frame as a uint8 tensor, as torchvision's reference
    transforms take one: its resize and crop, then [0, 1], then its normalisation."""
    resize, crop, _, normalize = transform.transforms
    image = crop(resize(torch.from_numpy(frame).permute(2, 0, 1)))
    return normalize(image.float() / 255)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", TIMM_ARCHITECTURES)
def test_timm_models_by_name_equal_timm_itself(architecture, tmp_path):
    calibration = decode_frames(BIKES, 3, start=10) + decode_frames(COCKATOO, 3, start=100)
    model, transform = seeded_timm(architecture, calibration)
    path = tmp_path / f"{architecture}.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    from torchstream.decode.labels import read_labels_file
    from torchstream.environment import LABELS_DIR

    imagenet = read_labels_file(LABELS_DIR / "imagenet_2012.txt")
    for video, start in ((BIKES, 150), (COCKATOO, 200)):
        frames = decode_frames(video, 3, start=start)
        run = run_results(f"appsrc name=src ! video_inference model=timm.{architecture} "
                          f"model-weights={path} ! appsink name=sink", frames, timeout=300)
        with torch.inference_mode():
            expected = [model(tensor_transform(transform, f)[None]).softmax(1)[0]
                        for f in frames]
        check_labelled(run, expected, imagenet)


def test_timm_errors_say_what_to_do():
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match="pass model-weights=<file>"):
        load_model("timm.resnet50")
    with pytest.raises(ConfigError, match="no architecture 'resnet5O'.*did you mean"):
        load_model("timm.resnet5O", "/nonexistent.pth")
