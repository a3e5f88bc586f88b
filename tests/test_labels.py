"""Label lists and label files: the shipped files, parsing, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision

from torchstream.decode.labels import (
    Labels,
    check_covers,
    load_labels,
    parse_labels,
    read_labels_file,
)
from torchstream.environment import LABELS_DIR
from torchstream.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
IMAGENET = LABELS_DIR / "imagenet_2012.txt"
COCO = LABELS_DIR / "coco_91cl_bkgr.txt"


def test_shipped_files_match_torchvision_line_for_line():
    imagenet = read_labels_file(IMAGENET)
    coco = read_labels_file(COCO)
    assert len(imagenet) == 1000 and len(coco) == 91
    assert list(imagenet) == torchvision.models.MobileNet_V2_Weights.DEFAULT.meta["categories"]
    weights = torchvision.models.detection.SSDLite320_MobileNet_V3_Large_Weights.DEFAULT
    assert list(coco) == weights.meta["categories"]
    # line index = class id
    assert imagenet[89] == "sulphur-crested cockatoo" and imagenet[967] == "espresso"
    assert coco[0] == "__background__" and coco[1] == "person" and coco[3] == "car"
    assert coco.count("N/A") == 10 and len(set(coco) - {"N/A", "__background__"}) == 80


def test_generator_script_reproduces_the_shipped_files(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_labels.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1000 labels" in done.stdout and "91 labels" in done.stdout
    for shipped in (IMAGENET, COCO):
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize(("text", "expected"), [
    ("<cat,dog,bird>", ("cat", "dog", "bird")),
    ("< cat , hot dog >", ("cat", "hot dog")),
    ("[a,b]", ("a", "b")),
    ("a,b", ("a", "b")),
    ('<"sea lion",seal>', ("sea lion", "seal")),
    ("<one>", ("one",)),
])
def test_labels_property_strings(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("<>", "property 'labels' is empty"),
    ("  ", "property 'labels' is empty"),
    ("<a,b", "does not end with '>'"),
    ("<a,,b>", "empty label at position 1"),
    ("<a, >", "empty label at position 1"),
])
def test_bad_labels_property_strings(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_labels(text)


def test_label_file_lines(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes("\ufeffcat\r\n  hot dog \n\nbird\n\n\n".encode())
    # BOM and CRLF gone, spaces stripped, an inner blank line keeps id 2's place,
    # trailing blank lines are not labels
    assert read_labels_file(path) == ("cat", "hot dog", "", "bird")
    path.write_text("only\n")
    assert read_labels_file(path) == ("only",)
    path.write_text("[PAD]\n[UNK]\n")  # bracketed names, not JSON
    assert read_labels_file(path) == ("[PAD]", "[UNK]")


def _unreadable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/proc/self/mem")  # root reads any mode; this file refuses a plain read
    path = tmp_path / "secret.txt"
    path.write_text("a\n")
    path.chmod(0)
    return path


def _file(name: str, data: bytes):
    def make(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return make


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: d, "is a directory"),
    (_file("e.txt", b""), "is empty"),
    (_file("b.txt", b"\n \n\n"), "is empty"),
    (_file("x.bin", b"\x89PNG\r\n\x1a\n\0\0"), "binary"),
    (_file("l.txt", b"caf\xe9\n"), "not UTF-8"),
    (_file("j.json", json.dumps({"labels": ["a", "b"]}).encode()), "looks like JSON"),
    (_file("k.json", json.dumps(["a", "b"], indent=1).encode()), "looks like JSON"),
])
def test_bad_label_files_name_the_property_and_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        read_labels_file(path)
    assert "labels-file" in str(info.value) and str(path) in str(info.value)


def test_unreadable_label_file(tmp_path):
    path = _unreadable(tmp_path)
    with pytest.raises(ConfigError, match="cannot be read") as info:
        read_labels_file(path)
    assert str(path) in str(info.value)


def test_load_labels_picks_the_property_or_the_file(tmp_path):
    assert load_labels(None, None) is None
    assert load_labels("", "") is None
    from_list = load_labels("<a,b>", None)
    assert from_list == Labels(("a", "b"), "property 'labels'")
    from_file = load_labels(None, str(COCO))
    assert from_file.from_file and len(from_file) == 91 and str(COCO) in from_file.source
    assert from_file.name(3) == "car"
    with pytest.raises(ConfigError, match="outside the 91 labels"):
        from_file.name(91)
    with pytest.raises(ConfigError, match="not both"):
        load_labels("<a>", str(COCO))


def test_coverage_says_how_many_lines_and_classes():
    coco = load_labels(None, str(COCO))
    imagenet = load_labels(None, str(IMAGENET))
    check_covers(imagenet, 1000)
    check_covers(imagenet, 10)  # more labels than classes is fine
    check_covers(coco, 91)
    with pytest.raises(ConfigError) as info:
        check_covers(coco, 1000)
    text = str(info.value)
    assert str(COCO) in text and "91 lines" in text and "1000 classes" in text
    with pytest.raises(ConfigError, match="property 'labels' has 2 labels but the model "
                                          "outputs 3 classes"):
        check_covers(load_labels("<a,b>", None), 3)
