"""The other/tensors caps codec: dims innermost first, one entry per tensor, errors name fields."""

from __future__ import annotations

import pytest

import tests.helpers  # noqa: F401 - initialises GStreamer and registers the elements
from torchstream.caps import (
    TYPE_NAMES,
    TensorInfo,
    TensorsConfig,
    config_from_fields,
    format_dimensions,
    format_dims,
    parse_caps_string,
    parse_dimensions,
    parse_dims,
)
from torchstream.errors import CapsError
from torchstream.gst import Gst


def structure(text: str):
    caps = Gst.Caps.from_string(text)
    assert caps is not None, f"GStreamer could not parse {text!r}"
    return caps.get_structure(0)


def config(*tensors: tuple[str, tuple[int, ...]]) -> TensorsConfig:
    return TensorsConfig(tuple(TensorInfo(t, s) for t, s in tensors))


# --- dims ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dims",
    [
        ((3, 224, 224), "224:224:3"),
        ((272, 640, 3), "3:640:272"),
        ((1, 3, 320, 240), "240:320:3:1"),
        ((1000,), "1000"),
        ((0, 4), "4:0"),
        ((2, 0, 7), "7:0:2"),
    ],
)
def test_dims_round_trip_innermost_first(shape, dims):
    assert format_dims(shape) == dims
    assert parse_dims(dims) == shape


def test_zero_d_tensor_is_written_as_one():
    assert format_dims(()) == "1"
    assert parse_dims("1") == (1,)


def test_several_tensors_round_trip():
    shapes = [(3, 224, 224), (0, 4), (0,), (1, 1000)]
    text = format_dimensions(shapes)
    assert text == "224:224:3,4:0,0,1000:1"
    assert parse_dimensions(text) == shapes


def test_spaces_around_dims_are_tolerated():
    assert parse_dimensions(" 224 : 224 : 3 , 1000 ") == [(3, 224, 224), (1000,)]


def test_zero_marks_a_variable_dim():
    info = TensorInfo("float32", (0, 4))
    assert not info.is_fixed
    assert TensorInfo("float32", (5, 4)).is_fixed
    assert info.nbytes((7, 4)) == 7 * 4 * 4


@pytest.mark.parametrize(
    "name, itemsize",
    [("uint8", 1), ("int8", 1), ("int32", 4), ("int64", 8), ("float16", 2), ("bfloat16", 2),
     ("float32", 4), ("float64", 8), ("bool", 1)],
)
def test_each_type_round_trips_through_gstreamer(name, itemsize):
    original = config((name, (2, 3, 5)))
    assert original.tensors[0].itemsize == itemsize
    assert original.tensors[0].nbytes() == 30 * itemsize
    text = original.to_caps_string()
    assert config_from_fields(structure(text)) == original
    assert parse_caps_string(text) == original


def test_all_spec_types_are_known():
    assert set(TYPE_NAMES) == {"uint8", "int8", "int32", "int64", "float16", "bfloat16",
                               "float32", "float64", "bool"}


def test_multi_tensor_config_round_trips_through_gstreamer():
    original = config(("float32", (0, 4)), ("int64", (0,)), ("float32", (0,)),
                      ("uint8", (3, 224, 224)))
    text = original.to_caps_string()
    assert original.types_string == "float32,int64,float32,uint8"
    assert original.dimensions_string == "4:0,0,0,224:224:3"
    caps = Gst.Caps.from_string(text)
    s = caps.get_structure(0)
    assert s.get_value("num_tensors") == 4
    assert s.get_value("dimensions") == "4:0,0,0,224:224:3"
    assert config_from_fields(s) == original
    assert len(config_from_fields(s)) == 4
    # GStreamer's own serialisation (spaces, escaped commas) parses back too
    assert parse_caps_string(caps.to_string()) == original


def test_parse_caps_string_and_structure_agree():
    text = ('other/tensors,num_tensors=(uint)2,types=(string)"uint8,float32",'
            'dimensions=(string)"224:224:3,1000"')
    expected = config(("uint8", (3, 224, 224)), ("float32", (1000,)))
    assert parse_caps_string(text) == expected
    assert config_from_fields(structure(text)) == expected


def test_unquoted_single_dim_is_accepted():
    # GStreamer's parser types an unquoted 1000 as an int; it is still a valid dims entry
    text = "other/tensors,num_tensors=(uint)1,types=float32,dimensions=1000"
    assert config_from_fields(structure(text)) == config(("float32", (1000,)))
    assert parse_caps_string(text) == config(("float32", (1000,)))


def test_num_tensors_is_optional():
    text = 'other/tensors,types=(string)"int64,bool",dimensions=(string)"0,3:2"'
    expected = config(("int64", (0,)), ("bool", (2, 3)))
    assert config_from_fields(structure(text)) == expected
    assert parse_caps_string(text) == expected


def test_unknown_fields_are_ignored():
    text = ('other/tensors,num_tensors=(uint)1,types=(string)uint8,framerate=(fraction)25/1,'
            'format=(string)static,layout=(string)"a,b",dimensions=(string)"3:4:5",extra=(int)7')
    expected = config(("uint8", (5, 4, 3)))
    assert config_from_fields(structure(text)) == expected
    assert parse_caps_string(text) == expected


def test_a_plain_dict_of_fields_is_accepted():
    fields = {"num_tensors": 1, "types": "int32", "dimensions": "6:2"}
    assert config_from_fields(fields) == config(("int32", (2, 6)))


# --- errors ----------------------------------------------------------------------------------

GOOD_TYPES = 'types=(string)"uint8"'
GOOD_DIMS = 'dimensions=(string)"224:224:3"'


def refused(text: str) -> list[str]:
    """Messages of both entry points (Gst.Structure and plain string) for one caps string."""
    messages = []
    with pytest.raises(CapsError) as e1:
        config_from_fields(structure(text))
    messages.append(str(e1.value))
    with pytest.raises(CapsError) as e2:
        parse_caps_string(text)
    messages.append(str(e2.value))
    return messages


def test_missing_types_is_refused_naming_it():
    for message in refused(f"other/tensors,num_tensors=(uint)1,{GOOD_DIMS}"):
        assert "'types'" in message


def test_missing_dimensions_is_refused_naming_it():
    for message in refused(f"other/tensors,num_tensors=(uint)1,{GOOD_TYPES}"):
        assert "'dimensions'" in message


@pytest.mark.parametrize(
    "dims", ["a:3", "3:a", "224::3", "-1:3", "3.5:2", "224:224:3,", "3:\u00b2"]
)
def test_malformed_dims_are_refused_naming_dimensions(dims):
    for message in refused(f'other/tensors,{GOOD_TYPES},dimensions=(string)"{dims}"'):
        assert "'dimensions'" in message


def test_malformed_dims_message_quotes_the_bad_part():
    with pytest.raises(CapsError, match="'a'"):
        parse_dims("a:3")


@pytest.mark.parametrize("types", ["float", "uint16", "FLOAT32", "uint8,complex64", "uint8,"])
def test_unknown_type_is_refused_naming_types(types):
    dims = ",".join(["3"] * len(types.split(",")))
    for message in refused(f'other/tensors,types=(string)"{types}",dimensions=(string)"{dims}"'):
        assert "'types'" in message


def test_count_mismatch_between_types_and_dimensions():
    text = 'other/tensors,types=(string)"uint8,float32",dimensions=(string)"224:224:3"'
    for message in refused(text):
        assert "'types'" in message and "'dimensions'" in message
        assert "2" in message and "1" in message


@pytest.mark.parametrize("num", [0, 2, 3])
def test_wrong_num_tensors_is_refused_naming_it(num):
    text = f"other/tensors,num_tensors=(uint){num},{GOOD_TYPES},{GOOD_DIMS}"
    for message in refused(text):
        assert "'num_tensors'" in message


def test_other_media_type_is_refused():
    for message in refused(f"video/x-raw,{GOOD_TYPES},{GOOD_DIMS}"):
        assert "other/tensors" in message


def test_non_string_caps_is_refused():
    with pytest.raises(CapsError):
        parse_caps_string(None)  # type: ignore[arg-type]
