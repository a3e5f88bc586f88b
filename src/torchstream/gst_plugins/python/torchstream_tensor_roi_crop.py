"""gst-python loader entry: tensor_roi_crop (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("tensor_roi_crop")
