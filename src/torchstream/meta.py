"""The public name of :mod:`torchstream.gst.meta` (reading and writing results and tensors
records on buffers), kept for programs written against ``torchstream.meta``."""

import sys

from torchstream.gst import meta

sys.modules[__name__] = meta
