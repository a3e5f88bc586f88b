"""The wheel is the product: built from this checkout, installed into a new venv outside it, it
gives GStreamer every element and runs a classification pipeline there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import COCKATOO
from tests.test_cli import clean_shell
from torchstream.elements import ELEMENTS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv (Debian's python3, system site packages, as the README's set-up makes) with the
    wheel installed: its root.

    The wheel's dependencies (torch, torchvision, OpenVINO, OpenCV: gigabytes) are not
    downloaded again: a .pth file puts this checkout's venv after the new venv's own
    site-packages, so pip finds them installed and resolves the wheel's requirements against
    them, while torchstream itself can only come from the wheel (the checkout's editable
    install is a .pth file there, which Python does not read from a path a .pth added)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # the checkout's files, without its build outputs
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(root / "dist"), str(source)])
    (wheel,) = (root / "dist").glob("torchstream-*.whl")
    venv = root / "venv"
    _run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "zz_checkout_dependencies.pth").write_text(deps + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel)])
    return root


def in_venv(root: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` in a clean shell in ``root`` (outside the checkout), after
    ``eval "$(venv/bin/torchstream env)"``; GStreamer's registry goes under ``root``."""
    return clean_shell(f'eval "$(venv/bin/torchstream env)" && {script}', timeout=300, cwd=root,
                       env={"XDG_CACHE_HOME": str(root / "cache")})


def test_the_installed_package_holds_everything(installed):
    done = _run([str(installed / "venv" / "bin" / "python"), "-c",
                 "import torchstream, torchstream.environment as e; "
                 "print(torchstream.__file__); print(e.PLUGIN_DIR); print(e.LABELS_DIR); "
                 "print(e.MODEL_PROC_DIR)"], cwd=installed)
    package, plugins, labels, procs = (Path(line) for line in done.stdout.split())
    assert package.is_relative_to(installed / "venv"), package
    assert sorted(p.name for p in (plugins / "python").glob("*.py")) == sorted(
        f"torchstream_{name}.py" for name in ELEMENTS)
    assert sorted(p.name for p in labels.glob("*.txt")) == [
        "coco_80.txt", "coco_91cl_bkgr.txt", "imagenet_2012.txt"]
    assert (procs / "centernet_coco.json").is_file()


def test_gst_inspect_finds_every_element_of_the_wheel(installed):
    done = in_venv(installed, "echo $GST_PLUGIN_PATH && gst-inspect-1.0 python")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(str(installed / "venv")), done.stdout[:300]
    for name in ELEMENTS:
        assert f"  {name}:" in done.stdout, name
    assert "CRITICAL" not in done.stderr


def test_a_classification_pipeline_runs_from_the_wheel(installed, mobilenet_weights):
    """Labels from the weights' categories; the cockatoo is what the model sees most."""
    done = in_venv(
        installed,
        f"gst-launch-1.0 -q filesrc location={COCKATOO} ! decodebin ! "
        f"video_inference model=torchvision.models.mobilenet_v2 model-weights={mobilenet_weights}"
        " ! meta_publish file-path=out.jsonl ! fakesink")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CRITICAL" not in done.stderr, done.stderr[-2000:]
    frames = [json.loads(line) for line in (installed / "out.jsonl").read_text().splitlines()]
    assert len(frames) == 280
    labels = Counter(f["classifications"][0]["label"] for f in frames)
    assert labels.most_common(1)[0][0] == "sulphur-crested cockatoo", labels.most_common(5)
