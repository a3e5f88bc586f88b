"""Running the forward pass as one TorchScript graph instead of eager Python.

An eager forward pass takes Python's GIL back between every two of its ops, and a pipeline
has several Python elements that want the GIL for every frame: the model then waits for them
(measured on 2 cores: mobilenet_v3_small at 78 fps alone fell to 40 fps beside three Python
threads doing 0.6 ms of work every 4 ms; traced, 118 and 108 fps). A TorchScript graph runs
the whole forward pass in C++ with the GIL released, so the other elements' Python overlaps
with it. Detectors gain too: ssdlite320_mobilenet_v3_large scripted ran at 8.9 fps in a
pipeline against 6.9 fps eager (bare: 9.5 and 7.2).

A traced or scripted graph runs the same ops as the eager module (the tests find its outputs
bit-identical), and it is checked against the eager module on a fresh input before it is
used: a graph that baked in a shape or a branch differs there. ``freeze`` also folds batch
norms into convolutions: faster, but its outputs differ from the eager ones by float rounding.

TorchScript keeps every traced or scripted class's graphs for the life of the process (about
13 MB per trace of resnet50, measured), so a graph is made once per loaded model file, mode and
input shapes and reused by later pipelines and caps negotiations (:func:`cached_graph`).
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from torchstream.errors import ConfigError, TorchstreamError, exception_summary

GRAPH_MODES = ("auto", "eager", "trace", "script", "freeze")
GRAPH_MODE_BLURB = (
    "How the forward pass runs: auto (trace torchvision classifiers, script torchvision "
    "detectors, other modules as loaded), "
    "eager (the module as loaded), trace or script (a TorchScript graph, checked equal to the "
    "module: runs without holding Python's GIL), freeze (trace + fold batch norms: faster, "
    "outputs differ by float rounding)"
)


def parse_graph_mode(text: str | None) -> str:
    mode = (text or "auto").strip().lower()
    if mode not in GRAPH_MODES:
        raise ConfigError(f"property 'graph-mode' must be one of {', '.join(GRAPH_MODES)}, "
                          f"got {text!r}")
    return mode


def resolve_graph_mode(mode: str, source: str, takes_image_list: bool) -> str:
    """``auto``: trace torchvision classifiers (no data-dependent Python in their forward),
    script torchvision detectors (their post-processing branches on the data, which TorchScript
    keeps and tracing would not), and keep users' own modules (whose forward may branch on the
    data in ways a check cannot see) as loaded. TorchScript files already are graphs."""
    if source == "torchscript":
        return "eager"
    if mode != "auto":
        return mode
    if source != "torchvision":
        return "eager"
    return "script" if takes_image_list else "trace"


def build_graph(module: Any, mode: str, example: Sequence[Any]) -> Any:
    """The TorchScript graph of ``module`` (``example``: the forward's arguments)."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if mode == "script":
            return torch.jit.script(module)
        if mode in ("trace", "freeze"):
            if any(not isinstance(a, torch.Tensor) for a in example):
                raise TorchstreamError("the model takes a list of images (a detector): "
                                       "trace it with graph-mode=script instead")
            graph = torch.jit.trace(module, tuple(example), check_trace=False, strict=False)
            return torch.jit.freeze(graph.eval()) if mode == "freeze" else graph
    raise ValueError(mode)


def outputs_match(a: Any, b: Any) -> bool:
    """Whether two model outputs (tensors, nested in tuples, lists and dicts) agree: same
    shapes and types, integers equal, floats within what freezing's rounding moves them."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        return torch.allclose(a, b, rtol=1e-3, atol=1e-4, equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(outputs_match(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(outputs_match(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def unwrap_scripted(output: Any) -> Any:
    """A scripted torchvision detector returns ``(losses, detections)``: the detections."""
    if (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], dict)
            and isinstance(output[1], list) and output[1] and isinstance(output[1][0], dict)):
        return output[1]
    return output


def graph_for(module: Any, mode: str, name: str, example: Sequence[Any],
              check: Sequence[Any], run: Callable[[Any, Sequence[Any]], Any]) -> Any:
    """``module``'s graph in ``mode``, checked against eager on ``check`` (other arguments
    than ``example``); ``run(callable, args)`` calls a module the engine's way."""
    try:
        graph = build_graph(module, mode, example)
        with warnings.catch_warnings():  # said once, on a graph's first call
            warnings.filterwarnings("ignore", message=r".*always returns a \(Losses, Detections\)")
            same = outputs_match(unwrap_scripted(run(module, check)),
                                 unwrap_scripted(run(graph, check)))
    except TorchstreamError as exc:
        raise TorchstreamError(f"graph-mode={mode}: model {name}: {exc.message}") from exc
    except Exception as exc:  # noqa: BLE001 - TorchScript's own errors, summarised
        raise TorchstreamError(
            f"graph-mode={mode}: model {name} cannot be made a TorchScript graph: "
            f"{type(exc).__name__}: {exception_summary(exc)} (graph-mode=eager runs it as it is)",
            detail=str(exc),
        ) from exc
    if not same:
        raise TorchstreamError(
            f"graph-mode={mode}: model {name}'s TorchScript graph gives other outputs than the "
            "module on a new input (its forward depends on the data or the shape); use "
            "graph-mode=eager or script"
        )
    return graph


GRAPH_CACHE_SIZE = 8  # graphs (and the weights they hold) kept for reuse, least recent dropped
_graphs: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
_graphs_lock = threading.Lock()


def cached_graph(key: Hashable | None, make: Callable[[], Any], owner: Any = None) -> Any:
    """The graph made earlier under ``key``, else ``make()`` (kept when it succeeds, together
    with ``owner``, the model it is made from, which stays loaded for as long: the graph holds
    its parameters anyway, and a model loaded again then shares them instead of holding a
    second copy). ``key`` must name the weights too (``None``: nothing to name them by, always
    made afresh)."""
    if key is None:
        return make()
    with _graphs_lock:
        entry = _graphs.get(key)
        if entry is not None:
            _graphs.move_to_end(key)
            return entry[0]
    graph = make()
    with _graphs_lock:
        _graphs[key] = (graph, owner)
        while len(_graphs) > GRAPH_CACHE_SIZE:
            _graphs.popitem(last=False)
    return graph


def signature(args: Sequence[Any]) -> tuple:
    """Shapes, types and devices of a forward pass's arguments (tensors or lists of them)."""
    out = []
    for a in args:
        items = a if isinstance(a, (list, tuple)) else [a]
        out.append(tuple((tuple(t.shape), str(t.dtype), str(t.device)) for t in items))
    return tuple(out)
