"""Preprocessing maths: frames as tensors (``video``), resize and crop exactly as torchvision's
transforms (``resize``), normalisation (``normalize``), regions cropped for a classifier
(``roi``) and clip windows of frames (``clips``).

Imports the foundation modules and ``results``; no GStreamer.
"""
