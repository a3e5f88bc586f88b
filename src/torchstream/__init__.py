"""torchstream: PyTorch models in GStreamer pipelines."""
