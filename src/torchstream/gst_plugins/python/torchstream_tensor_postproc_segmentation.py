"""gst-python loader entry: tensor_postproc_segmentation (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("tensor_postproc_segmentation")
