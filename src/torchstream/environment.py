"""Where torchstream's pieces live, and the environment GStreamer tools need to find them."""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
IMPORT_ROOT = PACKAGE_DIR.parent  # src/ of a checkout, site-packages of an installed wheel
# GStreamer's python plugin loader imports the files of <each GST_PLUGIN_PATH entry>/python/
PLUGIN_DIR = PACKAGE_DIR / "gst_plugins"
LABELS_DIR = PACKAGE_DIR / "data" / "labels"
MODEL_PROC_DIR = PACKAGE_DIR / "data" / "model_proc"


def _registry_path() -> Path:
    """A registry file private to this checkout and its element set, so a stale cache written
    by another environment never hides an element."""
    listing = sorted(p.name for p in (PLUGIN_DIR / "python").glob("*.py"))
    key = hashlib.sha1(f"{PLUGIN_DIR}|{sys.prefix}|{listing}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "torchstream" / f"registry-{key}.bin"


def gst_environment() -> dict[str, str]:
    """Variables that let gst-launch-1.0 / gst-inspect-1.0 (and their embedded Python) load
    the torchstream elements with this interpreter's packages."""
    site = sysconfig.get_paths()["purelib"]
    old_path = os.environ.get("PYTHONPATH", "")
    pythonpath = os.pathsep.join(p for p in (str(IMPORT_ROOT), site, old_path) if p)
    plugin_path = os.pathsep.join(
        p for p in (str(PLUGIN_DIR), os.environ.get("GST_PLUGIN_PATH", "")) if p
    )
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in (bin_dir, os.environ.get("PATH", "")) if p)
    registry = _registry_path()
    registry.parent.mkdir(parents=True, exist_ok=True)
    return {
        "GST_PLUGIN_PATH": plugin_path,
        "PYTHONPATH": pythonpath,
        "PATH": path,
        "GST_REGISTRY": str(registry),
    }


def shipped_or_given(path: str | Path, folder: Path) -> Path:
    """``path``, or the file of that bare name shipped in ``folder`` when ``path`` is a bare
    name with no such file in the current folder (``labels-file=imagenet_2012.txt``)."""
    p = Path(path)
    if not p.exists() and p.name == str(path) and (folder / p.name).is_file():
        return folder / p.name
    return p
