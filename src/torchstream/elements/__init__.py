"""GStreamer element shells over the torchstream core: one module per element (two for the
inference elements, three for the bins), ``_base`` for what they share.

``ELEMENTS`` maps each element name to ``module:Class``; the plugin loader files and in-process
registration both read it, so an element is declared once. May import gi (through ``gst``) and
every core package; the core never imports the elements.
"""

from __future__ import annotations

import importlib

ELEMENTS = {
    "tensor_convert": "torchstream.elements.tensor_convert:TensorConvert",
    "opencv_tensor_normalize": "torchstream.elements.tensor_normalize:OpenCVTensorNormalize",
    "pytorch_tensor_inference": "torchstream.elements.tensor_inference:PytorchTensorInference",
    "openvino_tensor_inference": "torchstream.elements.tensor_inference:OpenvinoTensorInference",
    "tensor_postproc_label": "torchstream.elements.tensor_postproc_label:TensorPostprocLabel",
    "tensor_postproc_detection":
        "torchstream.elements.tensor_postproc_detection:TensorPostprocDetection",
    "tensor_postproc_segmentation":
        "torchstream.elements.tensor_postproc_segmentation:TensorPostprocSegmentation",
    "tensor_resize_crop": "torchstream.elements.tensor_resize_crop:TensorResizeCrop",
    "tensor_roi_crop": "torchstream.elements.tensor_roi_crop:TensorRoiCrop",
    "tensor_sliding_window": "torchstream.elements.tensor_sliding_window:TensorSlidingWindow",
    "meta_aggregate": "torchstream.elements.meta_aggregate:MetaAggregate",
    "processbin": "torchstream.elements.processbin:ProcessBin",
    "frame_skip": "torchstream.elements.frame_skip:FrameSkip",
    "video_inference": "torchstream.elements.inference_bins:VideoInference",
    "object_detect": "torchstream.elements.inference_bins:ObjectDetect",
    "object_classify": "torchstream.elements.inference_bins:ObjectClassify",
    "meta_overlay": "torchstream.elements.meta_overlay:MetaOverlay",
    "meta_publish": "torchstream.elements.meta_publish:MetaPublish",
    "object_track": "torchstream.elements.object_track:ObjectTrack",
}


def element_class(name: str):
    module_name, _, cls = ELEMENTS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls)


def register_all() -> None:
    """Register every element in this process (no plugin scan needed)."""
    from torchstream.gst import Gst

    for name in ELEMENTS:
        if Gst.ElementFactory.find(name) is None:
            Gst.Element.register(None, name, Gst.Rank.NONE, element_class(name))


def gst_element_factory(name: str):
    """The ``__gstelementfactory__`` tuple a plugin loader file exports."""
    from torchstream.gst import Gst

    return (name, Gst.Rank.NONE, element_class(name))
