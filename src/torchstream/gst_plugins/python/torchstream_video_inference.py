"""gst-python loader entry: video_inference (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("video_inference")
