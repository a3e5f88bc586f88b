"""Elements made by a factory: a floating reference for their creator, freed with their pipeline."""

from __future__ import annotations

import gc

import tests.helpers  # noqa: F401 - initialises GStreamer and registers the elements
from torchstream.elements import ELEMENTS, element_class
from torchstream.elements._base import FactoryMade
from torchstream.gst import Gst
from torchstream.gst.pipeline import run_to_end


def test_every_element_is_factory_made():
    assert [name for name in ELEMENTS if not issubclass(element_class(name), FactoryMade)] == []


def test_a_made_element_is_floating_and_a_bin_owns_it():
    for name in ELEMENTS:
        element = Gst.ElementFactory.make(name, None)
        assert element.is_floating(), name
        bin_ = Gst.Bin.new(None)
        bin_.add(element)
        assert not element.is_floating()
        assert element.get_parent() == bin_


def test_parse_launch_pipelines_free_their_python_elements():
    """A parse_launch pipeline's Python elements go with it (they used to outlive it, each
    with its settings, and print GStreamer-CRITICAL when made)."""
    freed = []

    def run() -> None:
        pipeline = Gst.parse_launch(
            "videotestsrc num-buffers=2 ! video/x-raw,format=RGBx,width=1,height=1 ! "
            "tensor_convert ! tensor_postproc_label labels=<r,g,b,x> ! fakesink")
        for element in pipeline.iterate_elements():
            if isinstance(element, FactoryMade):
                element.weak_ref(freed.append, element.get_name())
        assert run_to_end(pipeline, 10).ok

    run()
    gc.collect()
    assert len(freed) == 2, freed

