"""gst-python loader entry for the tensor_convert element (implementation in torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("tensor_convert")
