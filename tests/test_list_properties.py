"""Every list property takes one grammar: ``a,b`` and ``<a,b>`` give the same value (the
object-class defect came from one property splitting on commas only). The list properties
are found from the declarations (a string property whose blurb shows a ``<...>`` list), so a
new one without a case here fails."""

from __future__ import annotations

import re

import pytest

from torchstream.decode.keypoints import parse_point_connections, parse_point_names
from torchstream.decode.labels import load_labels
from torchstream.elements import ELEMENTS, element_class
from torchstream.props import parse_class_set, parse_float_list

LIST_IN_BLURB = re.compile(r"<[^<>]*,[^<>]*>|<v>")
# property -> (what its elements parse it with, the items of a sample value)
PARSERS = {
    "range": (lambda text: parse_float_list(text, "range"), ("0", "1")),
    "mean": (lambda text: parse_float_list(text, "mean"), ("0.485", "0.456", "0.406")),
    "std": (lambda text: parse_float_list(text, "std"), ("0.229", "0.224", "0.225")),
    "fill": (lambda text: parse_float_list(text, "fill"), ("114", "0", "7")),
    "labels": (lambda text: load_labels(text, None).names, ("car", "person", "bus")),
    "object-class": (lambda text: parse_class_set(text, "object-class"), ("car", "person")),
    "point-names": (parse_point_names, ("nose", "left_eye", "right_eye")),
    "point-connections": (parse_point_connections, ("nose-left_eye", "nose-right_eye")),
}


def list_properties() -> list[tuple[str, str]]:
    return [(name, key) for name in ELEMENTS
            for key, prop in element_class(name).PROPERTIES.items()
            if prop.kind == "string" and key != "model" and LIST_IN_BLURB.search(prop.blurb)]


def test_every_list_property_has_a_case():
    found = list_properties()
    assert len(found) >= 15  # normalize, the post-processing, crops, tracking and the bins
    assert {key for _, key in found} <= set(PARSERS)


@pytest.mark.parametrize("element, key", list_properties())
def test_a_list_property_takes_both_grammars(element, key):
    parse, items = PARSERS[key]
    plain, bracketed = ",".join(items), "<" + ",".join(items) + ">"
    value = parse(plain)
    assert value == parse(bracketed) == parse(" < " + " , ".join(items) + " > ")
    assert len(value) == len(items)
