"""torchstream: PyTorch models in GStreamer pipelines.

A package per concept: ``results``, ``decode``, ``preprocess``, ``model`` and ``plan`` are
the core, plain Python that imports without GStreamer; ``gst`` (GStreamer I/O), ``elements``
(the element shells), ``streams`` (the streams file and its runners), ``serve`` (the service:
REST API, metrics, preview) and ``command`` (the command line) are the packages that import
gi. The modules beside them are the foundation every package may import: ``errors``,
``props`` (property value grammars), ``environment`` (paths), ``caps`` (tensor caps).
"""

# the packages that may import gi (read by the layout test)
GSTREAMER_PACKAGES = ("gst", "elements", "streams", "serve", "command")
# modules kept under an older public name: that name -> the module it stands for
PUBLIC_ALIASES = {"meta": "torchstream.gst.meta"}
