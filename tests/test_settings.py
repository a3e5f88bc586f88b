"""Each element's settings are one typed object made from its declarations, and what a run
keeps is one object made at start and dropped at stop."""

from __future__ import annotations

import pytest

from tests.conftest import MOBILENET_V2_WEIGHTS
from torchstream.elements import ELEMENTS, element_class
from torchstream.elements._base import settings_class
from torchstream.gst import Gst


@pytest.mark.parametrize("name", sorted(ELEMENTS))
def test_settings_hold_every_declared_default_and_nothing_else(name):
    cls = element_class(name)
    settings = settings_class(cls)()
    declared = {key: prop for key, prop in cls.PROPERTIES.items() if not prop.readable_only}
    assert settings.by_name() == {key: prop.default for key, prop in declared.items()}
    with pytest.raises(AttributeError):
        settings.no_such_setting = 1  # a misspelt setting is an error, not a new attribute


def test_properties_set_through_gstreamer_land_in_the_typed_settings(tmp_path):
    publish = Gst.ElementFactory.make("meta_publish")
    publish.set_property("file-path", str(tmp_path / "out.jsonl"))
    assert publish.settings.file_path == str(tmp_path / "out.jsonl")
    skip = Gst.ElementFactory.make("frame_skip")
    skip.set_property("interval", 3)
    assert skip.settings.interval == 3 and skip.get_property("interval") == 3


def _elements_with_run_state(pipeline: Gst.Bin) -> dict[str, object]:
    found = {}
    iterator = pipeline.iterate_recurse()
    while True:
        result, element = iterator.next()
        if result != Gst.IteratorResult.OK:
            break
        if hasattr(element, "run"):
            found[element.get_factory().get_name()] = element
    return found


def test_a_run_state_exists_from_start_to_stop_and_is_gone_after(tmp_path):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=4 ! video/x-raw,width=96,height=64 ! "
        f"video_inference model=torchvision.models.mobilenet_v2 model-weights="
        f"{MOBILENET_V2_WEIGHTS} engine=torch ! frame_skip interval=2 ! object_track ! "
        f"meta_overlay ! meta_publish file-path={tmp_path / 'out.jsonl'} ! fakesink")
    pipeline.set_state(Gst.State.READY)  # the bin plans and builds its chain
    elements = _elements_with_run_state(pipeline)
    assert {"pytorch_tensor_inference", "tensor_resize_crop", "opencv_tensor_normalize",
            "tensor_postproc_label", "meta_aggregate", "frame_skip", "object_track",
            "meta_overlay", "meta_publish"} <= set(elements)
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(
        60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    try:
        assert message is not None and message.type == Gst.MessageType.EOS, message
        running = {name for name, element in elements.items() if element.run is not None}
        assert running == set(elements)
        skip = elements["frame_skip"]
        assert (skip.get_property("passed"), skip.get_property("dropped")) == (2, 2)
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert {name for name, element in elements.items() if element.run is not None} == set()
    # the counters of the run that ended stay readable
    assert (skip.get_property("passed"), skip.get_property("dropped")) == (2, 2)
