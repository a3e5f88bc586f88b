"""gst-python loader entry: tensor_resize_crop (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("tensor_resize_crop")
