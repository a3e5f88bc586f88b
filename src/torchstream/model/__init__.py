"""Models: loading them (``loading``: torchvision and timm factories, model files; weights
files in the usual layouts: ``checkpoints``), choosing and building the engine that runs them
(``engines``, ``graph``; the choice kept on disk between processes: ``choice_store``),
running batches of tensors through them (``batching``) and sharing one instance between
streams (``sharing``).

Imports the foundation modules, ``decode`` (class names) and ``preprocess`` (region
batches); no GStreamer.
"""
