"""object_detect with the real pretrained CenterNet COCO detector and its model-proc: real
objects in real pictures and video frames, boxes on the objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from tests.conftest import BIKES
from tests.helpers import box_iou as iou
from tests.helpers import decode_frames
from tests.helpers import region_pixels as pixels
from tests.results_helpers import run_results
from torchstream.environment import MODEL_PROC_DIR

REPO = Path(__file__).resolve().parents[1]
MODEL_PROC = MODEL_PROC_DIR / "centernet_coco.json"
CARS = json.loads((REPO / "tests" / "data" / "bikes_cars.json").read_text())["frames"]


def detect(model: Path, frames: list[np.ndarray], extra: str = ""):
    run = run_results(f"appsrc name=src ! object_detect model={model} model-proc={MODEL_PROC} "
                      f"{extra} ! appsink name=sink", frames, timeout=300)
    assert run.result.ok, run.error
    out = run.per_sink["sink"]
    assert len(out) == len(frames)
    return [o.results.regions for o in out]


@pytest.mark.parametrize("picture, label, minimum", [
    ("astronaut", "person", 0.5),
    ("coffee", "cup", 0.5),
    ("motorcycle", "motorcycle", 0.6),
])
def test_real_pictures(centernet, picture, label, minimum):
    image = data.stereo_motorcycle()[0] if picture == "motorcycle" else getattr(data, picture)()
    (regions,) = detect(centernet, [image])
    best = max((r for r in regions if r.label == label), key=lambda r: r.confidence)
    assert best.confidence >= minimum, [(r.label, r.confidence) for r in regions]
    assert best.confidence == max(r.confidence for r in regions)  # the picture's top object
    # the model-proc's threshold applies, and the 80 COCO names
    assert all(r.confidence >= 0.3 for r in regions)


def test_the_export_archive_gives_the_same_regions(centernet):
    image = data.coffee()
    (script,) = detect(centernet, [image])
    (export,) = detect(centernet.with_suffix(".pt2"), [image])
    assert [r.label for r in script] == [r.label for r in export]
    for a, b in zip(script, export, strict=True):
        assert abs(a.confidence - b.confidence) <= 1e-4
        assert np.abs(pixels(a, image) - pixels(b, image)).max() <= 0.5


@pytest.mark.slow
def test_cars_in_the_street_video(centernet):
    frames = decode_frames(BIKES, 41, start=140)
    assert len(frames) == 41
    per_frame = detect(centernet, frames)
    counts = [sum(r.label == "car" and r.confidence >= 0.35 for r in regions)
              for regions in per_frame]
    assert min(counts) >= 2, counts
    # every confident car box lies on a car annotated by hand (IoU >= 0.5), and most annotated
    # cars are found
    for index, boxes in CARS.items():
        i = int(index) - 140
        found = set()
        for r in per_frame[i]:
            if r.label != "car" or r.confidence < 0.35:
                continue
            overlaps = [iou(pixels(r, frames[i]), box) for box in boxes]
            best = int(np.argmax(overlaps))
            assert overlaps[best] >= 0.5, (index, pixels(r, frames[i]).round(), overlaps)
            found.add(best)
        assert len(found) >= 2 and len(found) >= len(boxes) // 2 + 1, (index, found)


def test_letterbox_boxes_come_back_to_the_frame(centernet):
    """A portrait picture and the same picture centred in a wider (square) black frame give
    the model the same letterboxed input: the boxes must be the same, shifted by the padding
    (the letterbox offsets and scale are undone exactly)."""
    picture = np.ascontiguousarray(data.astronaut()[:, 100:400])  # 512 x 300
    offset = (512 - 300) // 2
    wide = np.zeros((512, 512, 3), np.uint8)
    wide[:, offset:offset + 300] = picture
    narrow_regions, wide_regions = detect(centernet, [picture]) + detect(centernet, [wide])
    assert narrow_regions and len(narrow_regions) == len(wide_regions)
    for a, b in zip(narrow_regions, wide_regions, strict=True):
        assert a.label == b.label and abs(a.confidence - b.confidence) <= 1e-4
        shifted = pixels(a, picture) + np.array([offset, 0, offset, 0])
        assert np.abs(shifted - pixels(b, wide)).max() <= 2.0
    person = max(narrow_regions, key=lambda r: r.confidence)
    assert person.label == "person"
    x0, y0, x1, y1 = pixels(person, picture)
    assert x1 - x0 > 200 and y1 - y0 > 400  # the astronaut fills the picture
