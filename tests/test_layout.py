"""The layout is the architecture: a package per concept, each saying what lives there and
what it may import; only the GStreamer packages import gi (the core imports without
GStreamer); no import circle between packages. Read from the layout itself, not a list."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torchstream

PACKAGE = Path(torchstream.__file__).parent
GSTREAMER = set(torchstream.GSTREAMER_PACKAGES)
ALIASES = set(torchstream.PUBLIC_ALIASES)


def packages() -> list[str]:
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def foundation() -> list[str]:
    """The modules beside the packages that every package may import."""
    return sorted(p.stem for p in PACKAGE.glob("*.py")
                  if p.stem != "__init__" and p.stem not in ALIASES)


def modules(unit: str) -> dict[str, Path]:
    """Dotted name -> file of every module of a package or foundation module."""
    if (PACKAGE / unit).is_dir():
        return {f"torchstream.{unit}." + p.stem if p.stem != "__init__" else
                f"torchstream.{unit}": p for p in (PACKAGE / unit).glob("*.py")}
    return {f"torchstream.{unit}": PACKAGE / f"{unit}.py"}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def unit_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "torchstream" and len(parts) > 1 else None


def test_every_package_says_what_lives_there_and_what_it_may_import():
    assert {"results", "decode", "preprocess", "model", "plan", "gst", "elements",
            "streams"} <= set(packages())
    for package in packages():
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), package


def test_no_import_circle_between_packages():
    units = packages() + foundation()
    graph = {u: {unit_of(n) for path in modules(u).values() for n in imported(path)}
             - {None, u} for u in units}
    graph = {u: deps & set(units) for u, deps in graph.items()}

    def circle(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = circle(start, path + [nxt])
                if found:
                    return found
        return None

    for unit in units:
        assert circle(unit, [unit]) is None, " -> ".join(circle(unit, [unit]))


def core_modules() -> dict[str, Path]:
    found = {}
    for unit in packages() + foundation():
        if unit not in GSTREAMER:
            found |= modules(unit)
    return found


def test_only_the_gstreamer_packages_import_gi():
    """Read: no core module names gi or a GStreamer package, even inside a function."""
    for name, path in core_modules().items():
        bad = {n for n in imported(path) if n == "gi" or n.startswith("gi.")
               or unit_of(n) in GSTREAMER | ALIASES}
        assert not bad, f"{name} imports {sorted(bad)}"


SCRIPT = """
import sys
for name in {modules!r}:
    __import__(name)
print(sorted(m for m in sys.modules if m == "gi" or m.startswith("gi.")))
"""


def run_imports(names: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(modules=names)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_core_imports_without_gstreamer():
    names = sorted(core_modules())
    assert {"torchstream.results.data", "torchstream.model.loading", "torchstream.plan.chain",
            "torchstream.decode.detection", "torchstream.preprocess.resize",
            "torchstream.caps"} <= set(names)
    assert run_imports(names) == "[]"


def test_the_gstreamer_io_does_load_gi():
    """The check above can fail: a GStreamer module, imported the same way, loads gi."""
    assert "'gi'" in run_imports(["torchstream.gst.meta"])


def test_the_public_aliases_are_the_modules_they_name():
    """``torchstream.meta`` (the README's Python API) is ``torchstream.gst.meta``."""
    import importlib

    for alias, target in torchstream.PUBLIC_ALIASES.items():
        assert importlib.import_module(f"torchstream.{alias}") is importlib.import_module(target)
