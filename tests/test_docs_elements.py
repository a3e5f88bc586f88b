"""docs/elements.md cannot drift from the elements: every property table lists exactly the
properties an element registers, with the declared type, range and default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchstream.elements import ELEMENTS, element_class, register_all
from torchstream.gst import GObject, Gst

DOC = Path(__file__).resolve().parents[1] / "docs" / "elements.md"
BINS = ("video_inference", "object_detect", "object_classify")


def documented_tables() -> dict[str, dict[str, tuple[str, str]]]:
    """Section element name -> {property: (type cell, default cell)}; the bins share one."""
    tables: dict[str, dict[str, tuple[str, str]]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## (.+)", line)
        if heading:
            title = heading.group(1).strip()
            section = "bins" if title == "The inference bins" else title
            continue
        if section is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4:
            continue
        names = re.findall(r"`([a-z0-9-]+)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(",")] if len(names) > 1 else [cells[2]]
        if len(defaults) != len(names):
            defaults = [cells[2]] * len(names)
        for name, default in zip(names, defaults, strict=True):
            tables.setdefault(section, {})[name] = (cells[1], default)
    return tables


def default_matches(cell: str, value) -> bool:
    text = re.split(r" \(|, ", cell.replace("`", "").strip())[0].strip()
    if value is None or value == "":
        return text in ("none", "null", "empty", '""')
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == value


def expected(section: str) -> dict:
    if section == "bins":
        merged: dict = {}
        for name in BINS:
            merged.update(element_class(name).PROPERTIES)
        return merged
    return element_class(section).PROPERTIES


@pytest.mark.parametrize("section", [*(n for n in ELEMENTS if n not in BINS), "bins"])
def test_the_property_table_matches_the_declarations(section):
    tables = documented_tables()
    props = expected(section)
    documented = tables.get(section, {})
    assert set(documented) == set(props), (
        f"docs/elements.md, {section}: documented {sorted(documented)}, declared "
        f"{sorted(props)}")
    for name, prop in props.items():
        type_cell, default_cell = documented[name]
        assert type_cell.split()[0].rstrip(",") == prop.kind, (section, name, type_cell)
        if prop.ranged:
            assert prop.range_text() in type_cell, (section, name, type_cell, prop.range_text())
        if prop.readable_only:
            assert "read-only" in type_cell, (section, name, type_cell)
        if section == "bins" and name == "inference-region":
            continue  # the default differs between the bins; the cell names both
        assert default_matches(default_cell, prop.default), (section, name, default_cell,
                                                             prop.default)


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
