"""gst-python loader entry: meta_publish (see torchstream.elements)."""

from torchstream.elements import gst_element_factory

__gstelementfactory__ = gst_element_factory("meta_publish")
