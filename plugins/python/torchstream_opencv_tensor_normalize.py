"""gst-python loader entry for the opencv_tensor_normalize element (implementation in torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("opencv_tensor_normalize")
