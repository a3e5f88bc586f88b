"""gst-python loader entry: opencv_tensor_normalize (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("opencv_tensor_normalize")
