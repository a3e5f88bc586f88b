"""Planning the inference bins' element chains from a model and its model-proc file
(``chain``), and reading model-proc files (``modelproc``).

Imports the foundation modules, ``model``, ``preprocess`` and ``decode``; no GStreamer.
"""
