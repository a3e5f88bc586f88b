"""gst-python loader entry: pytorch_tensor_inference (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("pytorch_tensor_inference")
