"""gst-python loader entry: frame_skip (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("frame_skip")
