"""Fuzzing the three text codecs users and upstream elements feed: tensor caps, model-proc JSON
and the results metadata. Whatever comes in, the answer is a parsed value or the project's own
error (never a KeyError, IndexError, RecursionError... escaping from a vfunc), and whatever the
writer accepts reads back exactly."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tests.helpers  # noqa: F401 - initialises GStreamer and registers the elements
from torchstream.caps import (
    TYPE_NAMES,
    TensorInfo,
    TensorsConfig,
    config_from_fields,
    parse_caps_string,
)
from torchstream.errors import CapsError, ConfigError, TorchstreamError
from torchstream.gst import Gst
from torchstream.gst.meta import read_results, write_results
from torchstream.plan.modelproc import ModelProc, parse_model_proc
from torchstream.results.data import (
    Classification,
    FrameResults,
    ModelRecord,
    Region,
    decode_results,
    encode_results,
)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- tensor caps -------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 5000), min_size=1, max_size=5).map(tuple)
configs = st.lists(st.builds(TensorInfo, st.sampled_from(TYPE_NAMES), shapes),
                   min_size=1, max_size=4).map(lambda ts: TensorsConfig(tuple(ts)))

# Text close to real caps: pieces of valid fields, broken in every place.
_caps_pieces = st.sampled_from([
    "other/tensors", "other/tensor", "video/x-raw", ",", ":", "=", '"', "\\", "(", ")",
    "(uint)", "(int)", "(string)", "num_tensors", "types", "dimensions", "float32", "uint8",
    "bogus", "0", "1", "3", "224", "-1", "99999999999999999999", " ", "\n", "\x00", "é", ";",
])
caps_like = st.lists(_caps_pieces, max_size=25).map("".join)


@FAST
@given(st.one_of(caps_like, st.text(max_size=80)))
def test_any_caps_text_parses_or_gives_a_caps_error(text: str) -> None:
    try:
        config = parse_caps_string(text)
    except CapsError as exc:
        assert exc.message
        return
    assert isinstance(config, TensorsConfig) and len(config) >= 1
    for t in config.tensors:
        assert t.dtype in TYPE_NAMES and all(d >= 0 for d in t.shape)


@pytest.mark.gst_criticals  # gst_caps_from_string asserts on some fuzzed structure names
@FAST
@given(caps_like)
def test_any_caps_gstreamer_accepts_parses_or_gives_a_caps_error(text: str) -> None:
    """What GStreamer's own parser makes of the text goes through ``config_from_fields`` (the
    path negotiation takes): fields of any GType must give a clean error."""
    caps = Gst.Caps.from_string("other/tensors," + text) if text else None
    assume(caps is not None and caps.get_size() == 1 and not caps.is_any())
    try:
        config_from_fields(caps.get_structure(0))
    except CapsError as exc:
        assert exc.message


@FAST
@given(configs)
def test_caps_round_trip_exactly(config: TensorsConfig) -> None:
    text = config.to_caps_string()
    assert parse_caps_string(text) == config
    caps = Gst.Caps.from_string(text)
    assert caps is not None
    assert config_from_fields(caps.get_structure(0)) == config
    assert parse_caps_string(caps.to_string()) == config  # GStreamer's escaping undone


@FAST
@given(configs, st.sampled_from(["types", "dimensions", "num_tensors"]),
       st.one_of(st.text(max_size=12), st.integers(-5, 10)))
def test_one_broken_field_names_that_field(config: TensorsConfig, key: str, value) -> None:
    fields = {"types": config.types_string, "dimensions": config.dimensions_string,
              "num_tensors": len(config)}
    fields[key] = value
    try:
        parsed = config_from_fields(fields)
    except CapsError as exc:
        assert f"'{key}'" in exc.message or "'types'" in exc.message \
            or "'dimensions'" in exc.message
        return
    assert len(parsed) >= 1


# --- model-proc JSON ---------------------------------------------------------------------------

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 1000),
                       st.floats(allow_nan=False, allow_infinity=False, width=32),
                       st.sampled_from(["RGB", "BGR", "GRAYSCALE", "no", "aspect-ratio",
                                        "no-aspect-ratio", "central", "top_left", "label",
                                        "detection", "softmax", "max", "image", "yolo_v5",
                                        "labels/imagenet_2012.txt", "", "x"]),
                       st.text(max_size=6))
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)
_PRE_KEYS = ["color_space", "resize", "crop", "range", "mean", "std", "padding", "resize_size",
             "crop_size", "interpolation"]
_POST_KEYS = ["converter", "labels", "method", "attribute_name", "layer_name", "threshold",
              "box_index", "label_index", "confidence_index"]
pre_entry = st.fixed_dictionaries(
    {}, optional={"format": st.sampled_from(["image", "tensor", 3]),
                  "layer_name": _json_value,
                  "params": st.dictionaries(st.sampled_from(_PRE_KEYS), _json_value, max_size=5)})
post_entry = st.dictionaries(st.sampled_from(_POST_KEYS), _json_value, max_size=5)
documents = st.fixed_dictionaries(
    {}, optional={
        "json_schema_version": st.sampled_from(["2.2.0", "1.0.0", "2.0.0", "3.0.0", "x", 2]),
        "input_preproc": st.one_of(st.lists(pre_entry, max_size=2), _json_value),
        "output_postproc": st.one_of(st.lists(post_entry, max_size=2), _json_value),
        "extra": _json_value,
    })


def _parse_or_config_error(text: str) -> ModelProc | None:
    try:
        return parse_model_proc(text)
    except ConfigError as exc:
        assert exc.message.startswith("model-proc")
        return None


@FAST
@given(documents)
def test_any_model_proc_document_parses_or_gives_a_config_error(document: dict) -> None:
    proc = _parse_or_config_error(json.dumps(document))
    if proc is not None:
        assert proc.version == document["json_schema_version"]


@FEW
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.sampled_from(['{', '}', '[', ']', '"', ':', ',', 'NaN', '1e999',
                                           '"input_preproc"', '"json_schema_version"', '"2.2.0"',
                                           'null', '\ufeff', '-', '0']), max_size=30).map("".join)))
def test_any_text_as_model_proc_parses_or_gives_a_config_error(text: str) -> None:
    _parse_or_config_error(text)


def test_deeply_nested_model_proc_is_a_config_error() -> None:
    """A bomb of nested arrays must not escape as RecursionError."""
    text = '{"json_schema_version":"2.2.0","extra":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _parse_or_config_error(text) is None


# --- results metadata --------------------------------------------------------------------------

unit = st.floats(0.0, 1.0, allow_nan=False)
names = st.text(max_size=10)  # any unicode, quotes, backslashes, NUL included
confidences = st.floats(allow_nan=False, allow_infinity=False)
classifications = st.builds(Classification, names, names, st.integers(-2**31, 2**31 - 1),
                            confidences)


@st.composite
def regions_lists(draw) -> list[Region]:
    count = draw(st.integers(0, 6))
    ids = draw(st.lists(st.integers(0, 2**31 - 1), min_size=count, max_size=count, unique=True))
    out = []
    for region_id in ids:
        x0, x1 = sorted((draw(unit), draw(unit)))
        y0, y1 = sorted((draw(unit), draw(unit)))
        out.append(Region(x0, y0, x1, y1, draw(names), draw(st.integers(-1, 10**6)),
                          draw(confidences), region_id,
                          draw(st.none() | st.sampled_from(ids)),
                          draw(st.lists(classifications, max_size=2))))
    return out


frame_results = st.builds(
    FrameResults, regions_lists(), st.lists(classifications, max_size=3),
    st.lists(st.builds(ModelRecord, names, st.lists(names, max_size=3).map(tuple)), max_size=2))


@FAST
@given(frame_results)
def test_results_round_trip_through_the_codec(results: FrameResults) -> None:
    decoded, _ = decode_results(encode_results(results))
    assert decoded == results


@FEW
@given(frame_results, st.sampled_from([None, (1, 1), (640, 272), (3840, 2160)]))
def test_results_round_trip_on_a_real_buffer(results: FrameResults, size) -> None:
    buf = Gst.Buffer.new_allocate(None, 16, None)
    write_results(buf, FrameResults(regions=[Region(0, 0, 1, 1, "old", 1, 0.5, 7)]),
                  *(size or (None, None)))
    write_results(buf, results, *(size or (None, None)))  # replaces the old results
    assert read_results(buf) == results


@FAST
@given(frame_results, st.sampled_from(["x_min", "y_max", "confidence"]),
       st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1.5]))
def test_invalid_numbers_are_refused_cleanly(results: FrameResults, key: str, bad: float) -> None:
    assume(results.regions)
    setattr(results.regions[0], key, bad)
    if key == "confidence" and math.isfinite(bad):
        encode_results(results)  # any finite confidence is a value, not an error
        return
    try:
        encode_results(results)
    except TorchstreamError as exc:
        assert "results metadata" in exc.message
    else:
        raise AssertionError(f"{key}={bad} was accepted")


@FAST
@given(st.one_of(st.text(max_size=60), _json_value.map(json.dumps),
                 st.builds(lambda d: json.dumps({"v": 1, **d}),
                           st.dictionaries(st.sampled_from(["r", "c", "m", "roi"]), _json_value,
                                           max_size=3))))
def test_any_results_text_decodes_or_gives_a_clean_error(text: str) -> None:
    try:
        results, _ = decode_results(text)
    except TorchstreamError as exc:
        assert "results metadata" in exc.message
        return
    assert isinstance(results, FrameResults)
