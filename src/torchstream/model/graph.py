"""Running the forward pass as one TorchScript graph instead of eager Python.

An eager forward pass takes Python's GIL back between every two of its ops, and a pipeline
has several Python elements that want the GIL for every frame: the model then waits for them
(measured on 2 cores: mobilenet_v3_small at 78 fps alone fell to 40 fps beside three Python
threads doing 0.6 ms of work every 4 ms; traced, 118 and 108 fps). A TorchScript graph runs
the whole forward pass in C++ with the GIL released, so the other elements' Python overlaps
with it. Detectors gain too: ssdlite320_mobilenet_v3_large scripted ran at 8.9 fps in a
pipeline against 6.9 fps eager (bare: 9.5 and 7.2).

A traced or scripted graph runs the same ops as the eager module (the tests find its outputs
bit-identical); it is the ``torchscript`` engine (torchstream.model.engines), checked against the
eager module on two inputs before it is used: a graph that baked in a shape or a branch
differs there. Torchvision classifiers are traced; detectors, whose post-processing branches on
the data, are scripted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torchstream.errors import TorchstreamError


def build_graph(module: Any, mode: str, example: Sequence[Any]) -> Any:
    """The TorchScript graph of ``module`` (``mode``: trace or script; ``example``: the
    forward's arguments)."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if mode == "script":
            return torch.jit.script(module)
        if mode == "trace":
            if any(not isinstance(a, torch.Tensor) for a in example):
                raise TorchstreamError("the model takes a list of images (a detector): "
                                       "it is scripted, not traced")
            return torch.jit.trace(module, tuple(example), check_trace=False, strict=False)
    raise ValueError(mode)


def unwrap_scripted(output: Any) -> Any:
    """A scripted torchvision detector returns ``(losses, detections)``: the detections."""
    if (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], dict)
            and isinstance(output[1], list) and output[1] and isinstance(output[1][0], dict)):
        return output[1]
    return output
