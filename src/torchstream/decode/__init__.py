"""Decoding a model's outputs into results: class scores into labels (``classify``), class
names and label files (``labels``), detection tables and torchvision detector outputs
(``detection``, ``yolo``, ``keypoints``), class maps (``segmentation``), and following the
detected objects over frames (``tracking``).

Imports the foundation modules and ``results``; no GStreamer.
"""
