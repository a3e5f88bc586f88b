"""docs/elements.md cannot drift from the elements: its property tables are generated from
the declarations (make docs), and the declarations are what the elements register."""

from __future__ import annotations

import pytest

from torchstream.elements import ELEMENTS, element_class, register_all
from torchstream.elements.reference import BEGIN, DOC, render, tables
from torchstream.gst import GObject, Gst


def test_the_reference_is_generated_from_the_declarations():
    """docs/elements.md's property tables are what ``make docs`` writes from the declarations
    now: a property added, removed or changed without ``make docs`` fails here."""
    current = DOC.read_text()
    assert render(current) == current, "docs/elements.md is stale: run make docs"


def test_every_element_with_properties_has_its_generated_table():
    text = DOC.read_text()
    for heading in tables():
        assert BEGIN.format(name=heading) in text, heading


@pytest.mark.parametrize("name", list(ELEMENTS))
def test_the_registered_properties_are_the_declared_ones(name):
    register_all()
    element = Gst.ElementFactory.make(name)
    inherited = {p.name for p in GObject.list_properties(element.__gtype__.parent)}
    registered = {p.name: p for p in element.list_properties() if p.name not in inherited}
    props = element_class(name).PROPERTIES
    assert set(registered) == set(props)
    for prop_name, prop in props.items():
        if prop.kind != "element":
            assert element.get_property(prop_name) == prop.default, prop_name
        if prop.ranged:
            assert f"[{prop.range_text()}]" in registered[prop_name].blurb, prop_name
