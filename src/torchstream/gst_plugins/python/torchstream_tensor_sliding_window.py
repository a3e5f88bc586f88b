"""gst-python loader entry: tensor_sliding_window (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("tensor_sliding_window")
