"""docs/elements.md's property tables, generated from the elements' declarations.

Each table sits between two markers under its element's heading; the prose around the tables
is written by hand. ``make docs`` (``python -m torchstream.elements.reference``) writes them,
``--check`` says whether the file is stale (a test runs it), so the reference cannot drift from
what the elements register.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

from torchstream.elements import ELEMENTS, element_class
from torchstream.elements._base import Prop, _number

BINS = ("video_inference", "object_detect", "object_classify")
BINS_HEADING = "The inference bins"
BEGIN = "<!-- properties of {name}: generated from the declarations by make docs -->"
END = "<!-- end of the generated properties -->"
HEADER = "| property | type | default | meaning |\n|---|---|---|---|"
DOC = Path(__file__).resolve().parents[3] / "docs" / "elements.md"


def type_cell(prop: Prop) -> str:
    text = prop.kind + (f" {prop.range_text()}" if prop.ranged else "")
    return text + (", read-only" if prop.readable_only else "")


def default_cell(value) -> str:
    if value is None:
        return "none"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return _number(value)
    return f"`{value}`"


def meaning_cell(prop: Prop) -> str:
    return (prop.doc or prop.blurb).replace("|", "\\|").replace("\n", " ")


def row(name: str, prop: Prop, default: str | None = None, note: str = "") -> str:
    meaning = meaning_cell(prop) + (f" ({note})" if note else "")
    return (f"| `{name}` | {type_cell(prop)} | "
            f"{default if default is not None else default_cell(prop.default)} | {meaning} |")


def element_table(name: str) -> str:
    props = element_class(name).PROPERTIES
    return "\n".join([HEADER, *(row(key, prop) for key, prop in props.items())])


def bins_table() -> str:
    """The three bins in one table: each property once, with the bins it belongs to when not
    all, and each bin's default where they differ."""
    declared = {name: element_class(name).PROPERTIES for name in BINS}
    names: list[str] = []
    for props in declared.values():
        names += [key for key in props if key not in names]
    rows = [HEADER]
    for key in names:
        owners = [b for b in BINS if key in declared[b]]
        prop = declared[owners[0]][key]
        meanings: dict[str, list[str]] = {}  # a meaning -> the bins it is theirs
        for b in owners:
            meanings.setdefault(meaning_cell(declared[b][key]), []).append(b)
        defaults = {b: default_cell(declared[b][key].default) for b in owners}
        default = None
        if len(set(defaults.values())) > 1:
            first = defaults[owners[0]]
            others = ", ".join(f"{b}: {d}" for b, d in defaults.items() if d != first)
            default = f"{first} ({others})"
        note = "" if len(owners) == len(BINS) else " and ".join(owners) + " only"
        if len(meanings) > 1:  # one declaration per bin: each bin's meaning
            prop = replace(prop, doc="; ".join(f"{', '.join(bins)}: {text}"
                                               for text, bins in meanings.items()))
        rows.append(row(key, prop, default, note))
    return "\n".join(rows)


def tables() -> dict[str, str]:
    """Heading -> the generated table of that section."""
    out = {name: element_table(name) for name in ELEMENTS
           if name not in BINS and element_class(name).PROPERTIES}
    out[BINS_HEADING] = bins_table()
    return out


def render(text: str) -> str:
    """``text`` with every section's property table replaced by the generated one (between
    the markers; the first time, the hand-written table under the heading)."""
    for heading, table in tables().items():
        begin = BEGIN.format(name=heading)
        block = f"{begin}\n{table}\n{END}"
        if begin in text:
            start = text.index(begin)
            end = text.index(END, start) + len(END)
            text = text[:start] + block + text[end:]
            continue
        section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        if section is None:
            raise ValueError(f"docs/elements.md has no section '## {heading}'")
        body = section.group(1)
        old = re.search(r"^\| property \| type \| default \| meaning \|\n(?:\|.*\n?)*", body,
                        re.M)
        if old is None:
            raise ValueError(f"docs/elements.md, '## {heading}': no property table to replace")
        new_body = body[:old.start()] + block + "\n" + body[old.end():]
        text = text[:section.start(1)] + new_body + text[section.end(1):]
    return text


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print(f"{DOC} is stale: run make docs", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
