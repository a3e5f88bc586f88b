"""gst-python loader entry for the pytorch_tensor_inference element (implementation in torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("pytorch_tensor_inference")
