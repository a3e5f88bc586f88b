"""Model-proc files: parsing into dataclasses, and one clear error per kind of bad file."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError
from torchstream.plan.modelproc import (
    MODEL_PROC_SCHEMA,
    InputPreproc,
    ModelProc,
    OutputPostproc,
    Padding,
    load_model_proc,
    parse_model_proc,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "model_proc"
BROKEN = DATA / "broken"
IMAGENET_LABELS = LABELS_DIR / "imagenet_2012.txt"
COCO_LABELS = LABELS_DIR / "coco_91cl_bkgr.txt"


def doc(**top) -> str:
    """A model-proc text with a valid version and the given top-level keys."""
    return json.dumps({"json_schema_version": "2.2.0", **top})


def params(**values) -> str:
    return doc(input_preproc=[{"format": "image", "params": values}])


def output(**entry) -> str:
    return doc(output_postproc=[entry])


def error_of(text: str, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_model_proc(text, base_dir=base_dir)
    return info.value.message


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(MODEL_PROC_SCHEMA)


def test_spec_example_parses():
    proc = load_model_proc(DATA / "imagenet_classifier.json")
    assert proc == ModelProc(
        path=str(DATA / "imagenet_classifier.json"),
        version="2.2.0",
        input_preproc=(InputPreproc(
            format="image", color_space="RGB", resize="aspect-ratio", crop="central",
            range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        ),),
        output_postproc=(OutputPostproc(
            converter="label", method="softmax", labels_file=str(IMAGENET_LABELS),
            converter_name="label",
        ),),
    )


def test_ssd_detection_file_parses():
    proc = load_model_proc(DATA / "ssd_detection.json")
    (pre,) = proc.input_preproc
    assert pre == InputPreproc(color_space="RGB", range=(0.0, 1.0))
    (post,) = proc.output_postproc
    assert post == OutputPostproc(converter="detection", labels_file=str(COCO_LABELS),
                                  threshold=0.3, converter_name="detection")


def test_relative_labels_file_resolves_against_the_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the file's folder
    proc = load_model_proc(DATA / "relative_labels" / "pets.json")
    (post,) = proc.output_postproc
    assert post.labels_file == str(DATA / "relative_labels" / "pets.txt")
    assert (post.converter, post.method, post.attribute_name) == ("label", "max", "pet")


def test_labels_in_the_files_folder_win_over_the_shipped_ones(tmp_path):
    (tmp_path / "imagenet_2012.txt").write_text("a\nb\n")
    (tmp_path / "m.json").write_text(output(converter="label", labels="imagenet_2012.txt"))
    assert load_model_proc(tmp_path / "m.json").output_postproc[0].labels_file == str(
        tmp_path / "imagenet_2012.txt")


def test_parse_resolves_labels_against_base_dir(tmp_path):
    (tmp_path / "l.txt").write_text("x\n")
    proc = parse_model_proc(output(converter="label", labels="l.txt"), base_dir=tmp_path)
    assert proc.path is None
    assert proc.output_postproc[0].labels_file == str(tmp_path / "l.txt")


def test_absolute_labels_path(tmp_path):
    labels = tmp_path / "abs.txt"
    labels.write_text("x\ny\n")
    proc = parse_model_proc(output(converter="detection_output", labels=str(labels)))
    assert proc.output_postproc[0].labels_file == str(labels)


def test_inline_labels_and_all_label_keys():
    proc = parse_model_proc(output(
        converter="label", labels=["cat", "dog"], method="compound", compound_threshold=0.4,
        attribute_name="pet", layer_name="prob", confidence_threshold=0.25,
    ))
    assert proc.output_postproc[0] == OutputPostproc(
        converter="label", labels=("cat", "dog"), method="compound", compound_threshold=0.4,
        attribute_name="pet", layer_name="prob", threshold=0.25, converter_name="label",
    )


@pytest.mark.parametrize("name, family", [
    ("label", "label"), ("tensor_to_label", "label"), ("detection", "detection"),
    ("detection_output", "detection"), ("boxes_labels", "detection"), ("boxes", "detection"),
    ("tensor_to_bbox_ssd", "detection"), ("raw_data_copy", "raw_data_copy"),
])
def test_converters_are_normalised_to_their_family(name, family):
    post = parse_model_proc(output(converter=name)).output_postproc[0]
    assert (post.converter, post.converter_name) == (family, name)


def test_layer_names_and_raw_data_copy():
    post = parse_model_proc(output(converter="raw_data_copy", layer_names=["a", "b"],
                                   attribute_name="raw")).output_postproc[0]
    assert post.layer_names == ("a", "b") and post.attribute_name == "raw"


def test_empty_and_missing_arrays():
    assert parse_model_proc(doc(input_preproc=[], output_postproc=[])) == ModelProc(
        None, "2.2.0", (), ())
    assert parse_model_proc(doc()) == ModelProc(None, "2.2.0", (), ())


@pytest.mark.parametrize("version", ["1.0.0", "1.2.3", "2.0.0", "2.1.0", "2.2.0"])
def test_versions_accepted(version):
    assert parse_model_proc(json.dumps({"json_schema_version": version})).version == version


def test_padding_forms():
    pad = parse_model_proc(params(padding={"stride": 4})).input_preproc[0].padding
    assert pad == Padding(4, 4, None)
    pad = parse_model_proc(params(
        padding={"stride_x": 8, "stride_y": 2, "fill_value": [114, 114, 114]},
    )).input_preproc[0].padding
    assert pad == Padding(8, 2, (114.0, 114.0, 114.0))


def test_torchstream_extensions_and_the_modes_they_imply():
    pre = parse_model_proc(params(resize_size=[232], crop_size=224,
                                  interpolation="bilinear")).input_preproc[0]
    assert (pre.resize_size, pre.crop_size, pre.interpolation) == ((232,), (224,), "bilinear")
    assert (pre.resize, pre.crop) == ("aspect-ratio", "central")
    pre = parse_model_proc(params(resize_size=[300, 400], crop_size=[200, 300],
                                  crop="top_left")).input_preproc[0]
    assert (pre.resize, pre.crop) == ("no-aspect-ratio", "top_left")
    assert (pre.resize_size, pre.crop_size) == ((300, 400), (200, 300))


def test_grayscale_and_layer_and_precision():
    proc = parse_model_proc(doc(input_preproc=[{
        "format": "image", "layer_name": "input", "precision": "FP32",
        "params": {"color_space": "GRAYSCALE", "mean": [0.5], "std": [0.25], "range": [0, 255]},
    }]))
    pre = proc.input_preproc[0]
    assert (pre.layer_name, pre.precision, pre.color_space) == ("input", "FP32", "GRAYSCALE")
    assert (pre.mean, pre.std, pre.range) == ((0.5,), (0.25,), (0.0, 255.0))


def test_dataclasses_are_frozen_and_hashable():
    proc = load_model_proc(DATA / "imagenet_classifier.json")
    hash(proc)
    with pytest.raises(AttributeError):
        proc.version = "1.0.0"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Broken files: each one error naming the file, the location and the problem.

BROKEN_FILES = [
    ("bad_json.json", ["invalid JSON at line 3 column 22"]),
    ("unknown_converter.json", ["output_postproc[0].converter", "unknown converter 'foo'",
                                "supported: label, detection"]),
    ("unsupported_yolo.json", ["output_postproc[0].anchors",
                               "raw YOLO grid outputs (anchors, masks, cells) are not supported",
                               "allowed: attribute_name, box_index, class_agnostic"]),
    ("mean_string.json", ["input_preproc[0].params.mean: 'a' is not of type 'array'"]),
    ("mean_item_string.json", ["input_preproc[0].params.mean[1]: 'a' is not of type 'number'"]),
    ("range_of_three.json", ["input_preproc[0].params.range", "has 3 items; expected exactly 2"]),
    ("range_reversed.json", ["input_preproc[0].params.range", "min < max"]),
    ("version_3.json", ["json_schema_version: '3.0.0' is not supported (1.0.0 to 2.2.0)"]),
    ("version_missing.json", ["json_schema_version: missing", "1.0.0 to 2.2.0"]),
    ("unknown_params_key.json", ["input_preproc[0].params.gamma: unknown key",
                                 "allowed: color_format, color_space"]),
    ("reverse_input_channels.json", ["input_preproc[0].params.reverse_input_channels",
                                     "color_space"]),
    ("labels_file_missing.json", ["output_postproc[0].labels",
                                  "labels file 'no_such_labels.txt' not found"]),
    ("threshold_2.json", ["output_postproc[0].threshold: 2.0 is not in 0..1"]),
    ("method_foo.json", ["output_postproc[0].method: 'foo' is not one of 'max', 'softmax'"]),
    ("top_level_array.json", ["the top level is an array", "JSON object"]),
    ("color_space_lower.json", ["input_preproc[0].params.color_space: 'rgb' is not one of",
                                "'RGB', 'BGR', 'GRAYSCALE'", "case-sensitive"]),
    ("std_zero.json", ["input_preproc[0].params.std[1]: 0.0 must be greater than 0"]),
    ("converter_missing.json", ["output_postproc[0].converter: missing"]),
    ("method_on_detection.json", ["output_postproc[0].method: unknown key for converter "
                                  "'detection_output'"]),
]


@pytest.mark.parametrize("name, expected", BROKEN_FILES, ids=[n for n, _ in BROKEN_FILES])
def test_broken_file(name, expected):
    path = BROKEN / name
    with pytest.raises(ConfigError) as info:
        load_model_proc(path)
    message = info.value.message
    assert message.startswith(f"model-proc {path}: "), message
    for part in expected:
        assert part in message, message


def test_every_broken_file_is_tested():
    assert sorted(p.name for p in BROKEN.glob("*.json")) == sorted(n for n, _ in BROKEN_FILES)


@pytest.mark.parametrize("text, expected", [
    ('{"json_schema_version": "2.2.0", "output_postproc": [], "output_postproc": []}',
     ["the key 'output_postproc' appears twice"]),
    ('{"json_schema_version": "2.2.0", "input_preproc": [{"params": {"mean": [NaN]}}]}',
     ["NaN is not a JSON number"]),
    ('{"json_schema_version": "2.2.0", "input_preproc": [{"params": {"std": [1e999]}}]}',
     ["invalid JSON: the number 1e999 is too large"]),
    ("", ["invalid JSON at line 1 column 1"]),
    (output(converter="label", labels="bad\u0000name.txt"), ["labels file 'bad"]),
    (output(converter="label", labels="~nosuchuser_xyz/l.txt"), ["not found"]),
    ('"2.2.0"', ["the top level is a string"]),
    ('{"json_schema_version": 2.2}', ["json_schema_version: 2.2 is not of type 'string'"]),
    ('{"json_schema_version": "2.2"}', ["json_schema_version: '2.2' is not supported"]),
    ('{"json_schema_version": "2.3.0"}', ["'2.3.0' is not supported (1.0.0 to 2.2.0)"]),
    ('{"json_schema_version": "0.9.0"}', ["'0.9.0' is not supported"]),
    (doc(model="x"), ["model-proc: model: unknown key", "allowed: input_preproc"]),
    (doc(input_preproc={}), ["input_preproc: {} is not of type 'array'"]),
    (doc(output_postproc=[5]), ["output_postproc[0]: 5 is not of type 'object'"]),
    (doc(input_preproc=[{"format": "image_info", "params": {"scale": 1.0}}]),
     ["input_preproc[0].format: format 'image_info' is not supported yet"]),
    (doc(input_preproc=[{"format": "video"}]), ["input_preproc[0].format: 'video' is not one"]),
    (doc(input_preproc=[{"precision": "FP64"}]), ["input_preproc[0].precision: 'FP64'"]),
    (params(resize="fit"), ["params.resize: 'fit' is not one of 'no', 'no-aspect-ratio'"]),
    (params(crop="center"), ["params.crop: 'center' is not one of 'central'"]),
    (params(range=["0", 1]), ["params.range[0]: '0' is not of type 'number'"]),
    (params(range=[0, True]), ["params.range[1]: true is not of type 'number'"]),
    (params(mean=[0.1, 0.2]), ["params.mean: has 2 values; expected 1 or 3"]),
    (params(mean=[1, 2, 3, 4]), ["params.mean: [1, 2, 3, 4] has 4 items; expected 1 to 3"]),
    (params(std=[]), ["params.std: [] has 0 items; expected 1 to 3"]),
    (params(color_space="GRAYSCALE", std=[0.2, 0.2, 0.2]),
     ["params.std: has 3 values; expected 1 (GRAYSCALE has one channel)"]),
    (params(padding={"stride": 2, "stride_x": 2}), ["params.padding: give 'stride' or"]),
    (params(padding={"stride": -1}), ["params.padding.stride: -1 is below the minimum 0"]),
    (params(padding={"stride": 1.5}), ["params.padding.stride: 1.5 is not of type 'integer'"]),
    (params(padding={"fill": [0]}), ["params.padding.fill: unknown key", "fill_value"]),
    (params(padding={"fill_value": [0, 0]}), ["params.padding.fill_value: has 2 values"]),
    (params(resize_size=0), ["params.resize_size: 0 is below the minimum 1"]),
    (params(resize_size=[1, 2, 3]), ["params.resize_size: [1, 2, 3] has 3 items"]),
    (params(resize_size="224"), ["params.resize_size: '224' is not of type 'integer' or"]),
    (params(resize="no", resize_size=224), ["params.resize_size: is given but resize is 'no'"]),
    (params(resize="no-aspect-ratio", resize_size=224), ["give [height, width]"]),
    (params(resize_size=200, crop_size=224), ["params.crop_size: [224] is larger"]),
    (params(resize_size=[200, 300], crop_size=[100, 400]), ["params.crop_size: [100, 400]"]),
    (params(interpolation="lanczos"), ["params.interpolation: 'lanczos' is not one of"]),
    (output(converter="text", text_scale=100), ["converter 'text' is not supported yet"]),
    (output(converter="tensor_to_bbox_yolo_v3"), ["'tensor_to_bbox_yolo_v3' is not supported"]),
    (output(converter="keypoints_hrnet"), ["'keypoints_hrnet' is not supported yet"]),
    (output(converter=3), ["output_postproc[0].converter: 3 is not one of 'label'"]),
    (output(converter="label", labels=""), ["output_postproc[0].labels: is an empty string"]),
    (output(converter="label", labels=[]), ["output_postproc[0].labels: [] has 0 items"]),
    (output(converter="label", labels=["a", 1]), ["labels[1]: 1 is not of type 'string'"]),
    (output(converter="label", labels={"a": 1}), ["is not of type 'array' or 'string'"]),
    (output(converter="label", threshold=-0.1), ["threshold: -0.1 is not in 0..1"]),
    (output(converter="label", threshold="0.5"), ["threshold: '0.5' is not of type 'number'"]),
    (output(converter="label", threshold=0.1, confidence_threshold=0.2),
     ["output_postproc[0]: give 'threshold' or 'confidence_threshold'"]),
    (output(converter="label", layer_name="a", layer_names=["b"]),
     ["give 'layer_name' or 'layer_names'"]),
    (output(converter="label", compound_threshold=0.3),
     ["compound_threshold: is only used with \"method\": \"compound\""]),
    (output(converter="label", layer_name=""), ["output_postproc[0].layer_name: is an empty"]),
    (output(converter="raw_data_copy", labels=["a"]),
     ["output_postproc[0].labels: unknown key for converter 'raw_data_copy'"]),
    (output(converter="detection", classes=80), ["classes: unknown key for converter "
                                                  "'detection'"]),
    (output(converter="label", iou_threshold=0.5), ["iou_threshold: unknown key"]),
    (output(converter="label", labels_file="x.txt"), ["labels_file: unknown key",
                                                      "as a string in \"labels\""]),
])
def test_bad_text(text, expected):
    message = error_of(text)
    assert message.startswith("model-proc: "), message
    for part in expected:
        assert part in message, message


def test_several_problems_are_counted():
    message = error_of(doc(input_preproc=[{"params": {"mean": "a", "std": "b"}}],
                           output_postproc=[{"converter": "label", "method": "x"}]))
    assert "params.mean: 'a' is not of type 'array'" in message
    assert "(and problems at 2 more locations)" in message


def test_unusable_labels_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    message = error_of(output(converter="label", labels="empty.txt"), base_dir=tmp_path)
    assert "output_postproc[0].labels:" in message and "empty" in message


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "none.json", "none.json: no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "latin1.json").write_bytes(b'{"a": "\xe9"}') and d / "latin1.json",
     "not UTF-8 text"),
])
def test_load_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_model_proc(path)
    assert info.value.message.startswith(f"model-proc {path}"), info.value.message
    assert expected in info.value.message


def test_path_with_nul():
    with pytest.raises(ConfigError, match="no such file|cannot be read"):
        load_model_proc("a\0b.json")


def test_empty_path():
    with pytest.raises(ConfigError, match="path is empty"):
        load_model_proc("")


def test_source_names_the_origin():
    with pytest.raises(ConfigError, match=r"^property 'model-proc': json_schema_version"):
        parse_model_proc("{}", source="property 'model-proc'")


_JUNK = [None, True, 0, -1, 2.5, 1e308, "", "x", "RGB", [], [1], [1, 2, 3, 4], ["a"], {},
         {"stride": 1}, [[1]], {"converter": "label"}]


def _mutations(value, path=()):
    """Every (path) of a JSON value, to put junk there."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _mutations(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _mutations(item, (*path, index))


def test_no_other_exception_escapes():
    """Junk anywhere in a valid file is either accepted or a ConfigError, never a crash."""
    base = json.loads((DATA / "imagenet_classifier.json").read_text())
    base["input_preproc"][0]["params"]["padding"] = {"stride": 1, "fill_value": [0, 0, 0]}
    base["input_preproc"][0]["params"]["resize_size"] = [256]
    base["input_preproc"][0]["params"]["crop_size"] = [224]
    rng = random.Random(7)
    paths = [p for p in _mutations(base) if p]
    for path in paths:
        for junk in rng.sample(_JUNK, 6):
            document = copy.deepcopy(base)
            target = document
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = junk
            try:
                result = parse_model_proc(json.dumps(document), base_dir=DATA)
            except ConfigError as exc:
                assert exc.message.startswith("model-proc: ")
            else:
                assert isinstance(result, ModelProc)


def test_importing_the_module_does_not_import_jsonschema():
    """Element registration imports every module; jsonschema is loaded on first parse only."""
    code = ("import sys, torchstream.plan.modelproc; "
            "assert 'jsonschema' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_detection_layout_indices_are_read_and_checked():
    text = json.dumps({"json_schema_version": "2.2.0", "output_postproc": [
        {"converter": "detection", "box_index": 0, "label_index": 5, "confidence_index": 4}]})
    (post,) = parse_model_proc(text).output_postproc
    assert (post.box_index, post.label_index, post.confidence_index) == (0, 5, 4)
    bad = text.replace('"label_index": 5', '"label_index": -2')
    with pytest.raises(ConfigError, match=r"output_postproc\[0\]\.label_index"):
        parse_model_proc(bad)
    on_label = json.dumps({"json_schema_version": "2.2.0", "output_postproc": [
        {"converter": "label", "box_index": 0}]})
    with pytest.raises(ConfigError, match="box_index"):
        parse_model_proc(on_label)
