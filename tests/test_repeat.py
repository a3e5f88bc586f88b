"""Repeating results on frames the inference branch skipped (meta_aggregate repeat-metadata):
what a result added to its frame is carried to later frames, region labels onto the same
objects (matched by overlap), never onto other objects."""

from __future__ import annotations

import pytest

from torchstream.results.aggregate import contribution, iou, repeat_contribution
from torchstream.results.data import Classification, FrameResults, Region

CAR = Classification("color", "red", 3, 0.9)


def region(x: float, rid: int, label: str = "car", *classes: Classification) -> Region:
    return Region(x, 0.2, x + 0.2, 0.6, label, 3, 0.8, rid, None, list(classes))


def test_iou():
    assert iou(region(0.1, 1), region(0.1, 2)) == pytest.approx(1.0)
    assert iou(region(0.1, 1), region(0.2, 2)) == pytest.approx(1 / 3)
    assert iou(region(0.1, 1), region(0.5, 2)) == 0.0


def test_a_detectors_regions_are_repeated_as_they_were():
    frame = FrameResults()
    result = FrameResults([region(0.1, 1), region(0.5, 2, "person")])
    added = contribution(frame, result)
    assert [r.label for r in added.regions] == ["car", "person"] and not added.classified
    later = repeat_contribution(FrameResults(), added)
    assert [(r.region_id, r.label, r.x_min) for r in later.regions] == [
        (1, "car", 0.1), (2, "person", 0.5)]


def test_a_region_label_goes_to_the_same_object_only():
    frame = FrameResults([region(0.1, 1), region(0.6, 2, "person")])
    result = FrameResults([region(0.1, 1, "car", CAR), region(0.6, 2, "person")])
    added = contribution(frame, result)
    assert not added.regions and [r.region_id for r in added.classified] == [1]
    # next frame: the car moved a little (IoU 0.6), another car appeared far away
    moved = FrameResults([region(0.13, 5), region(0.7, 6)])
    later = repeat_contribution(moved, added)
    assert [r.classifications for r in later.regions] == [[CAR], []]
    # a person at the car's place does not get the car's colour
    other = repeat_contribution(FrameResults([region(0.1, 1, "person")]), added)
    assert other.regions[0].classifications == []


def test_frame_classifications_are_repeated():
    result = FrameResults([], [Classification("classification", "tabby", 281, 0.7)])
    added = contribution(FrameResults(), result)
    assert repeat_contribution(FrameResults(), added).classifications == result.classifications
