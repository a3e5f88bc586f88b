"""Model-proc files: DL Streamer-style JSON that says how to pre- and post-process a model.

A model-proc file lets a user describe a model's preprocessing (resize, crop, colour space,
value range, mean/std, padding) and how its outputs become results (labels, boxes, raw tensors)
without writing a pipeline by hand; the inference bins turn it into elements. The format
follows DL Streamer's so that existing files keep working, with three torchstream extensions
(``resize_size``, ``crop_size``, ``interpolation``) that torchvision's reference preprocessing
needs. The full description of the format is in ``docs/model-proc.md``.

Validation happens here, once, before any element is built: the file is checked against
:data:`MODEL_PROC_SCHEMA` (a JSON Schema, so the rules are data that can be shown or exported)
plus a few checks a schema cannot say (``range`` min < max, labels files that exist, sizes that
fit together). Every problem is a :class:`~torchstream.errors.ConfigError` whose message starts
with the file and names the JSON location of the bad key, e.g.
``model-proc /m/x.json: output_postproc[0].method: 'foo' is not one of 'max', ...``.
No ``json`` or ``jsonschema`` exception escapes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchstream.decode.classify import LABEL_METHODS
from torchstream.decode.labels import read_labels_file
from torchstream.decode.yolo import CONVERTERS as YOLO_CONVERTERS
from torchstream.environment import LABELS_DIR, MODEL_PROC_DIR, shipped_or_given
from torchstream.errors import ConfigError
from torchstream.preprocess.resize import INTERPOLATIONS

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "InputPreproc", "ModelProc", "OutputPostproc", "Padding",
    "MODEL_PROC_SCHEMA", "SCHEMA_VERSIONS", "SUPPORTED_CONVERTERS", "UNSUPPORTED_CONVERTERS",
    "load_model_proc", "parse_model_proc",
]

#: Oldest and newest ``json_schema_version`` accepted (DL Streamer's versions; one format here).
SCHEMA_VERSIONS = ("1.0.0", "2.2.0")

#: Converter names accepted, by the family torchstream runs them with.
CONVERTER_FAMILIES: dict[str, tuple[str, ...]] = {
    "label": ("label", "tensor_to_label"),
    "detection": ("detection", "detection_output", "boxes_labels", "boxes", "tensor_to_bbox_ssd"),
    "yolo": tuple(name for name in YOLO_CONVERTERS if name != "yolo"),  # decode.yolo's
    "raw_data_copy": ("raw_data_copy",),
}
SUPPORTED_CONVERTERS: tuple[str, ...] = tuple(n for f in CONVERTER_FAMILIES.values() for n in f)
_LEGACY_CONVERTERS = ("tensor_to_label", "tensor_to_bbox_ssd")  # DL Streamer 1.x names
_PRIMARY_CONVERTERS = tuple(n for n in SUPPORTED_CONVERTERS if n not in _LEGACY_CONVERTERS)

#: DL Streamer converters that exist but that torchstream cannot run yet (any other ``yolo*``
#: and ``tensor_to_bbox_yolo*`` name counts too: the raw-grid YOLO v2-v4 and YOLOX heads): a
#: clearer error than "unknown converter".
UNSUPPORTED_CONVERTERS: tuple[str, ...] = (
    "text", "tensor_to_text", "keypoints_hrnet", "keypoints_openpose", "keypoints_3d",
    "heatmap_boxes", "semantic_mask", "instance_segmentation", "mask_rcnn", "centerface",
    "audio_labels", "clip_token_based_label", "docTR_text", "paddle_ocr", "custom",
)
_YOLO = re.compile(r"(tensor_to_bbox_)?yolo.*", re.IGNORECASE)

INPUT_FORMATS = ("image",)
UNSUPPORTED_INPUT_FORMATS = ("image_info", "sequence_index")

# a model-proc colour space -> the raw video format the bins convert frames to for it
COLOR_FORMATS = {"RGB": "RGBP", "BGR": "BGRP", "GRAYSCALE": "GRAY8"}
COLOR_SPACES = tuple(COLOR_FORMATS)
RESIZE_MODES = ("no", "no-aspect-ratio", "aspect-ratio")
CROP_MODES = ("central", "top_left", "top_right", "bottom_left", "bottom_right")
PRECISIONS = ("FP32", "FP16", "U8")

# Keys that real DL Streamer files use but torchstream refuses, with what to write instead.
_KEY_HINTS = {
    "reverse_input_channels": "torchstream does not guess a default channel order; "
                              "write \"color_space\": \"RGB\" or \"BGR\" instead",
    "scale": "'image_info' inputs are not supported",
    "labels_file": "write the path as a string in \"labels\"",
}
_RAW_GRID_HINT = ("raw YOLO grid outputs (anchors, masks, cells) are not supported: export "
                  "the model with its detection head decoded ([B,N,5+nc] for yolo_v5/v7)")
for _key in ("anchors", "masks", "cells_number", "bbox_number_on_cell",
             "output_sigmoid_activation", "do_cls_softmax"):
    _KEY_HINTS[_key] = _RAW_GRID_HINT

# --------------------------------------------------------------------------------------------
# The schema. Draft 2020-12. Each converter family has its own set of allowed keys (if/then),
# so a key that only makes sense for another converter is reported as not allowed here.

_NUMBER = {"type": "number"}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_NAME = {"type": "string", "minLength": 1}
_SIZE = {  # an int, or [n] / [h, w]
    "type": ["integer", "array"], "minimum": 1,
    "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 2,
}
_CHANNEL_VALUES = {"type": "array", "items": _NUMBER, "minItems": 1, "maxItems": 3}

_PARAMS_SCHEMA = {
    "type": "object",
    "properties": {
        "resize": {"enum": list(RESIZE_MODES)},
        "crop": {"enum": list(CROP_MODES)},
        "color_space": {"enum": list(COLOR_SPACES)},
        "color_format": {"enum": list(COLOR_SPACES)},  # DL Streamer's other spelling
        "range": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
        "mean": _CHANNEL_VALUES,
        "std": {**_CHANNEL_VALUES, "items": {"type": "number", "exclusiveMinimum": 0}},
        "padding": {
            "type": "object",
            "properties": {
                "stride": {"type": "integer", "minimum": 0},
                "stride_x": {"type": "integer", "minimum": 0},
                "stride_y": {"type": "integer", "minimum": 0},
                "fill_value": _CHANNEL_VALUES,
            },
            "additionalProperties": False,
        },
        "resize_size": _SIZE,
        "crop_size": _SIZE,
        "interpolation": {"enum": list(INTERPOLATIONS)},
    },
    "additionalProperties": False,
}

_INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "format": {"enum": list(INPUT_FORMATS)},
        "layer_name": _NAME,
        "precision": {"enum": list(PRECISIONS)},
        "params": _PARAMS_SCHEMA,
    },
    "additionalProperties": False,
}

_LABELS = {
    "type": ["array", "string"], "minLength": 1, "minItems": 1, "items": {"type": "string"},
}
_COMMON_OUTPUT_KEYS = {
    "converter": {"type": "string"},
    "layer_name": _NAME,
    "layer_names": {"type": "array", "items": _NAME, "minItems": 1},
    "attribute_name": _NAME,
}
_INDEX = {"type": "integer", "minimum": 0}  # extension: tensor_postproc_detection layouts
_COUNT = {"type": "integer", "minimum": 1}
_NMS_KEYS = {"iou_threshold": _UNIT, "max_detections": _COUNT,  # extensions but iou_threshold
             "class_agnostic": {"type": "boolean"}}
_FAMILY_KEYS: dict[str, dict[str, Any]] = {
    "label": {"labels": _LABELS, "method": {"enum": list(LABEL_METHODS)}, "threshold": _UNIT,
              "confidence_threshold": _UNIT, "compound_threshold": _UNIT},
    "detection": {"labels": _LABELS, "threshold": _UNIT, "confidence_threshold": _UNIT,
                  "box_index": _INDEX, "label_index": _INDEX, "confidence_index": _INDEX,
                  **_NMS_KEYS},
    "yolo": {"labels": _LABELS, "threshold": _UNIT, "confidence_threshold": _UNIT,
             "classes": _COUNT, "box_index": _INDEX, **_NMS_KEYS},
    "raw_data_copy": {},
}


def _family_rule(family: str) -> dict[str, Any]:
    return {
        "if": {"required": ["converter"],
               "properties": {"converter": {"enum": list(CONVERTER_FAMILIES[family])}}},
        "then": {"properties": {**_COMMON_OUTPUT_KEYS, **_FAMILY_KEYS[family]},
                 "additionalProperties": False},
    }


_OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["converter"],
    "properties": {"converter": {"enum": list(SUPPORTED_CONVERTERS)}},
    "allOf": [_family_rule(family) for family in CONVERTER_FAMILIES],
}

#: The JSON Schema every model-proc file is validated against (after the version check).
MODEL_PROC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "torchstream model-proc file",
    "type": "object",
    "required": ["json_schema_version"],
    "properties": {
        "json_schema_version": {"type": "string"},
        "input_preproc": {"type": "array", "items": _INPUT_SCHEMA},
        "output_postproc": {"type": "array", "items": _OUTPUT_SCHEMA},
    },
    "additionalProperties": False,
}


@cache
def _validator() -> jsonschema.Draft202012Validator:
    """Built on first use: importing jsonschema costs time that element registration (which
    imports every module) should not pay."""
    import jsonschema

    return jsonschema.Draft202012Validator(MODEL_PROC_SCHEMA)




# --------------------------------------------------------------------------------------------
# The parsed form.

@dataclass(frozen=True)
class Padding:
    """``params.padding``: a border of ``stride_x`` / ``stride_y`` pixels left and right / top
    and bottom of the resized image, filled with ``fill_value`` (per channel; None = zeros).
    DL Streamer's ``stride`` sets both."""

    stride_x: int = 0
    stride_y: int = 0
    fill_value: tuple[float, ...] | None = None


@dataclass(frozen=True)
class InputPreproc:
    """One entry of ``input_preproc``: how one model input is made from a video frame.

    None means "not given": the bins then use their defaults. When only ``resize_size`` or
    ``crop_size`` is given, the parser fills in the ``resize`` / ``crop`` mode they imply.
    """

    format: str = "image"
    layer_name: str | None = None
    color_space: str | None = None        # "RGB" | "BGR" | "GRAYSCALE"
    resize: str | None = None             # "no" | "no-aspect-ratio" | "aspect-ratio"
    crop: str | None = None               # "central" | "top_left" | ... | "bottom_right"
    range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    padding: Padding | None = None
    resize_size: tuple[int, ...] | None = None  # extension: (n,) shorter side, or (h, w)
    crop_size: tuple[int, ...] | None = None    # extension: (n,) square, or (h, w)
    interpolation: str | None = None            # extension: nearest | bilinear | bicubic
    precision: str | None = None                # DL Streamer's "FP32"/"FP16"/"U8"; informational


@dataclass(frozen=True)
class OutputPostproc:
    """One entry of ``output_postproc``: how model outputs become results.

    ``converter`` is the family torchstream runs (``label``, ``detection``, ``raw_data_copy``);
    ``converter_name`` is the name as written in the file (``detection_output``, ...).
    ``threshold`` holds ``confidence_threshold`` too (DL Streamer's name for it).
    """

    converter: str
    labels: tuple[str, ...] | None = None
    labels_file: str | None = None         # absolute path
    method: str | None = None              # label: max | softmax | compound | index
    attribute_name: str | None = None
    layer_name: str | None = None
    threshold: float | None = None
    layer_names: tuple[str, ...] | None = None
    compound_threshold: float | None = None  # label, method compound
    converter_name: str = ""
    # detection, torchstream extensions: tensor_postproc_detection's layout overrides
    box_index: int | None = None
    label_index: int | None = None
    confidence_index: int | None = None
    # detection and yolo: NMS (iou_threshold turns it on for detection); yolo: class count
    iou_threshold: float | None = None
    max_detections: int | None = None
    class_agnostic: bool | None = None
    classes: int | None = None


@dataclass(frozen=True)
class ModelProc:
    """A whole model-proc file; ``path`` is None when it was parsed from text."""

    path: str | None
    version: str
    input_preproc: tuple[InputPreproc, ...]
    output_postproc: tuple[OutputPostproc, ...]


# --------------------------------------------------------------------------------------------
# Loading and parsing.

def load_model_proc(path: str | Path) -> ModelProc:
    """Read, validate and parse the model-proc file at ``path``.

    Relative label file paths in it are resolved against the file's own folder. A bare file
    name that is not in the current folder names a model-proc file shipped in the package
    (``centernet_coco.json``).
    """
    if not str(path).strip():
        raise ConfigError("model-proc: the path is empty; expected a JSON file")
    p = shipped_or_given(os.path.expanduser(path), MODEL_PROC_DIR)
    source = f"model-proc {p}"
    try:
        if not p.exists():
            raise ConfigError(f"{source}: no such file")
        if p.is_dir():
            raise ConfigError(f"{source}: is a directory, not a JSON file")
        raw = p.read_bytes()
    except (OSError, ValueError) as exc:  # permissions, a NUL in the path...
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{source}: cannot be read: {why}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); "
                          f"expected a JSON file") from None
    proc = parse_model_proc(text, base_dir=p.resolve().parent, source=source)
    return ModelProc(str(p.resolve()), proc.version, proc.input_preproc, proc.output_postproc)


def parse_model_proc(text: str, base_dir: str | Path | None = None,
                     source: str = "model-proc") -> ModelProc:
    """Validate and parse model-proc JSON ``text``.

    ``base_dir`` resolves relative label file paths (the current folder when None); ``source``
    starts every error message (``load_model_proc`` passes ``"model-proc <path>"``).
    """
    document = _decode(text, source)
    _check_version(document, source)
    _check_converters_and_formats(document, source)
    _check_schema(document, source)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    inputs = tuple(_input_preproc(entry, f"input_preproc[{i}]", source)
                   for i, entry in enumerate(document.get("input_preproc", [])))
    outputs = tuple(_output_postproc(entry, f"output_postproc[{i}]", source, base)
                    for i, entry in enumerate(document.get("output_postproc", [])))
    return ModelProc(None, document["json_schema_version"], inputs, outputs)


def _decode(text: str, source: str) -> dict[str, Any]:
    """JSON text -> the top-level object; duplicate keys and NaN/Infinity are errors (the
    json module would silently keep the last key and accept the non-standard constants)."""
    if not isinstance(text, str):
        raise ConfigError(f"{source}: expected JSON text, got {type(text).__name__}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise _Duplicate(key)
            result[key] = value
        return result

    def no_constant(name: str) -> Any:
        raise _BadConstant(f"{name} is not a JSON number")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise _BadConstant(f"the number {number} is too large")
        return value

    try:
        document = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant,
                              parse_float=finite)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from None
    except _Duplicate as exc:
        raise ConfigError(f"{source}: invalid JSON: the key '{exc.args[0]}' appears twice "
                          f"in one object") from None
    except _BadConstant as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc.args[0]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level is {_json_type(document)}; a model-proc file is a JSON "
            f"object with \"json_schema_version\", \"input_preproc\" and \"output_postproc\""
        )
    return document


class _Duplicate(Exception):
    pass


class _BadConstant(Exception):
    pass


def _check_version(document: Mapping[str, Any], source: str) -> None:
    """``json_schema_version`` first: a file of another format fails with that, not with a
    list of keys it does not know."""
    low, high = SCHEMA_VERSIONS
    if "json_schema_version" not in document:
        raise ConfigError(f"{source}: json_schema_version: missing; expected a version from "
                          f"{low} to {high}, e.g. \"json_schema_version\": \"{high}\"")
    version = document["json_schema_version"]
    if not isinstance(version, str):
        raise ConfigError(f"{source}: json_schema_version: {version!r} is not of type 'string' "
                          f"(write it as \"{high}\")")
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not match or not (_version(low) <= tuple(map(int, match.groups())) <= _version(high)):
        raise ConfigError(f"{source}: json_schema_version: {version!r} is not supported "
                          f"({low} to {high})")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_converters_and_formats(document: Mapping[str, Any], source: str) -> None:
    """Names torchstream knows but cannot run get their own message, before the schema would
    complain about the keys that come with them (a yolo entry's ``anchors``...)."""
    outputs = document.get("output_postproc")
    for i, entry in enumerate(outputs if isinstance(outputs, list) else []):
        name = entry.get("converter") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in SUPPORTED_CONVERTERS:
            continue
        where = f"{source}: output_postproc[{i}].converter"
        supported = ", ".join(_PRIMARY_CONVERTERS)
        if name in UNSUPPORTED_CONVERTERS or _YOLO.fullmatch(name):
            raise ConfigError(f"{where}: converter '{name}' is not supported yet; "
                              f"supported: {supported}")
        raise ConfigError(f"{where}: unknown converter '{name}'; supported: {supported}")
    inputs = document.get("input_preproc")
    for i, entry in enumerate(inputs if isinstance(inputs, list) else []):
        fmt = entry.get("format") if isinstance(entry, dict) else None
        if fmt in UNSUPPORTED_INPUT_FORMATS:
            raise ConfigError(f"{source}: input_preproc[{i}].format: format '{fmt}' is not "
                              f"supported yet; supported: {', '.join(INPUT_FORMATS)}")


def _check_schema(document: Mapping[str, Any], source: str) -> None:
    """The first schema violation in document order, as one message (plus a count of others)."""
    import jsonschema

    try:
        errors = sorted(_validator().iter_errors(document), key=_error_order)
    except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.UnknownType,
            RecursionError) as exc:  # a bug in the schema, or a pathological document
        raise ConfigError(f"{source}: cannot be validated: {exc}") from None
    if not errors:
        return
    described = [_describe(error) for error in errors]
    where, why = described[0]
    others = len({w for w, _ in described[1:]} - {where})
    message = f"{source}: {where}: {why}"
    if others:
        message += f" (and problems at {others} more location{'s' if others > 1 else ''})"
    raise ConfigError(message)


def _error_order(error: jsonschema.ValidationError) -> tuple:
    # document order; at one location, report a wrong type before other rules
    path = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in error.absolute_path)
    return path, error.validator != "type"


def _location(path: Iterable[str | int]) -> str:
    """``["input_preproc", 0, "params", "mean"]`` -> ``input_preproc[0].params.mean``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(location, reason), worded for a person writing the file; jsonschema's own words for
    rules without a better wording. A missing or unknown key is located at the key itself."""
    kind, value, rule = error.validator, error.instance, error.validator_value
    path = list(error.absolute_path)
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(error.schema.get("properties", {}))
        key = next((k for k in value if k not in allowed), "?")
        text = "unknown key"
        if "converter" in allowed and isinstance(value.get("converter"), str):
            text += f" for converter '{value['converter']}'"
        if key in _KEY_HINTS:
            text += f" ({_KEY_HINTS[key]})"
        return _location([*path, key]), f"{text}; allowed: {', '.join(allowed)}"
    if kind == "required" and isinstance(value, dict):
        key = next((k for k in rule if k not in value), "?")
        return _location([*path, key]), "missing (required)"
    where = _location(path)
    if kind == "enum":
        hint = ""
        if isinstance(value, str) and value.upper() in rule and value not in rule:
            hint = " (names are case-sensitive)"
        return where, f"{_short(value)} is not one of {', '.join(repr(v) for v in rule)}{hint}"
    if kind == "type":
        expected = " or ".join(repr(t) for t in rule) if isinstance(rule, list) else repr(rule)
        return where, f"{_short(value)} is not of type {expected}"
    if kind in ("minItems", "maxItems") and isinstance(value, list):
        low = error.schema.get("minItems", 0)
        high = error.schema.get("maxItems")
        expected = (f"exactly {low}" if low == high else
                    f"{low} to {high}" if high is not None else f"at least {low}")
        items = "item" if len(value) == 1 else "items"
        return where, f"{_short(value)} has {len(value)} {items}; expected {expected}"
    if kind == "minLength":
        return where, "is an empty string"
    if kind in ("minimum", "maximum", "exclusiveMinimum"):
        low, high = error.schema.get("minimum"), error.schema.get("maximum")
        if low is not None and high is not None:
            return where, f"{_short(value)} is not in {low}..{high}"
        if kind == "exclusiveMinimum":
            return where, f"{_short(value)} must be greater than {rule}"
        bound = "below the minimum" if kind == "minimum" else "above the maximum"
        return where, f"{_short(value)} is {bound} {rule}"
    return where, error.message


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else "an object"


# --------------------------------------------------------------------------------------------
# Schema-valid entries -> dataclasses, with the checks a schema cannot express.

def _floats(values: Iterable[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _sizes(value: int | list[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, int) else tuple(value)


def _input_preproc(entry: Mapping[str, Any], where: str, source: str) -> InputPreproc:
    params = entry.get("params", {})
    at = f"{source}: {where}.params"

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{at}.{key}: {why}")

    value_range: tuple[float, float] | None = None
    if "range" in params:
        low, high = (float(v) for v in params["range"])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise fail("range", f"{[low, high]} must be [min, max] with min < max")
        value_range = (low, high)
    if "color_space" in params and "color_format" in params \
            and params["color_space"] != params["color_format"]:
        raise fail("color_format", f"{params['color_format']!r} contradicts color_space "
                                   f"{params['color_space']!r} (two spellings of one setting)")
    color_space = params.get("color_space", params.get("color_format"))
    channels = 1 if color_space == "GRAYSCALE" else 3
    mean, std = _floats(params.get("mean")), _floats(params.get("std"))
    expected = "1 (GRAYSCALE has one channel)" if channels == 1 else "1 or 3 (one per channel)"
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, channels):
            raise fail(key, f"has {len(values)} values; expected {expected}")

    padding = None
    if "padding" in params:
        pad = params["padding"]
        if "stride" in pad and ("stride_x" in pad or "stride_y" in pad):
            raise fail("padding", "give 'stride' or 'stride_x'/'stride_y', not both")
        fill = _floats(pad.get("fill_value"))
        if fill is not None and len(fill) not in (1, channels):
            raise fail("padding.fill_value", f"has {len(fill)} values; expected {expected}")
        stride = pad.get("stride", 0)
        padding = Padding(pad.get("stride_x", stride), pad.get("stride_y", stride), fill)

    resize, crop = params.get("resize"), params.get("crop")
    resize_size, crop_size = _sizes(params.get("resize_size")), _sizes(params.get("crop_size"))
    if resize_size is not None:
        if resize == "no":
            raise fail("resize_size", "is given but resize is 'no'")
        if len(resize_size) == 1 and resize == "no-aspect-ratio":
            raise fail("resize_size", f"{list(resize_size)} (the shorter side) keeps the aspect "
                                      f"ratio; with resize 'no-aspect-ratio' give [height, width]")
        if resize is None:
            resize = "aspect-ratio" if len(resize_size) == 1 else "no-aspect-ratio"
    if crop_size is not None:
        if crop is None:
            crop = "central"
        if resize_size is not None and len(resize_size) == 2:
            h, w = crop_size * 2 if len(crop_size) == 1 else crop_size
            if h > resize_size[0] or w > resize_size[1]:
                raise fail("crop_size", f"{list(crop_size)} is larger than resize_size "
                                        f"{list(resize_size)}")
        elif resize_size is not None and max(crop_size) > resize_size[0]:
            raise fail("crop_size", f"{list(crop_size)} is larger than the shorter side after "
                                    f"resize ({resize_size[0]})")

    return InputPreproc(
        format=entry.get("format", "image"),
        layer_name=entry.get("layer_name"),
        color_space=color_space,
        resize=resize,
        crop=crop,
        range=value_range,
        mean=mean,
        std=std,
        padding=padding,
        resize_size=resize_size,
        crop_size=crop_size,
        interpolation=params.get("interpolation"),
        precision=entry.get("precision"),
    )


def _output_postproc(entry: Mapping[str, Any], where: str, source: str,
                     base_dir: Path) -> OutputPostproc:
    name = entry["converter"]
    family = next(f for f, names in CONVERTER_FAMILIES.items() if name in names)
    at = f"{source}: {where}"

    if "threshold" in entry and "confidence_threshold" in entry:
        raise ConfigError(f"{at}: give 'threshold' or 'confidence_threshold' (the same "
                          f"setting), not both")
    if "layer_name" in entry and "layer_names" in entry:
        raise ConfigError(f"{at}: give 'layer_name' or 'layer_names', not both")
    threshold = entry.get("threshold", entry.get("confidence_threshold"))
    if "compound_threshold" in entry and entry.get("method") != "compound":
        raise ConfigError(f"{at}.compound_threshold: is only used with \"method\": \"compound\"")
    classes = entry.get("classes")
    if classes is not None and isinstance(entry.get("labels"), list) \
            and len(entry["labels"]) != classes:
        raise ConfigError(f"{at}.classes: {classes} classes, but labels names "
                          f"{len(entry['labels'])}")

    labels = labels_file = None
    raw_labels = entry.get("labels")
    if isinstance(raw_labels, list):
        labels = tuple(raw_labels)
    elif isinstance(raw_labels, str):
        labels_file = _resolve_labels_file(raw_labels, base_dir, f"{at}.labels")
        if classes is not None and len(read_labels_file(labels_file)) != classes:
            raise ConfigError(f"{at}.classes: {classes} classes, but the labels file "
                              f"{raw_labels} names {len(read_labels_file(labels_file))}")

    layer_names = entry.get("layer_names")
    return OutputPostproc(
        converter=family,
        labels=labels,
        labels_file=labels_file,
        method=entry.get("method"),
        attribute_name=entry.get("attribute_name"),
        layer_name=entry.get("layer_name"),
        threshold=None if threshold is None else float(threshold),
        layer_names=None if layer_names is None else tuple(layer_names),
        compound_threshold=_optional_float(entry.get("compound_threshold")),
        converter_name=name,
        box_index=entry.get("box_index"),
        label_index=entry.get("label_index"),
        confidence_index=entry.get("confidence_index"),
        iou_threshold=_optional_float(entry.get("iou_threshold")),
        max_detections=entry.get("max_detections"),
        class_agnostic=entry.get("class_agnostic"),
        classes=classes,
    )


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # an unreadable folder on the way, a NUL in the name
        return False


def _resolve_labels_file(name: str, base_dir: Path, where: str) -> str:
    """A labels path from the file -> an absolute path of a readable label file.

    Absolute paths are taken as they are; relative ones are looked up in the model-proc file's
    folder, then among the label files shipped in the package (``LABELS_DIR``), so the SPEC's
    ``"labels": "imagenet_2012.txt"`` works from any folder.
    """
    given = Path(os.path.expanduser(name))
    candidates = [given] if given.is_absolute() else [base_dir / given, LABELS_DIR / given]
    found = next((c for c in candidates if _is_file(c)), None)
    if found is None:
        tried = " or ".join(str(c) for c in candidates)
        raise ConfigError(f"{where}: labels file '{name}' not found (looked for {tried})")
    try:
        read_labels_file(found, prop="labels file")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return str(found.resolve())
