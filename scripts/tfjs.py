"""Run a TensorFlow.js graph model (``model.json`` + ``.bin`` shards) as a torch module.

Written for the MobileNetV3 CenterNet COCO detector of ``@vladmandic/human`` (see
``docs/centernet.md``): the only real pretrained COCO detector this project can obtain from a
package registry. No TensorFlow is needed: the JSON topology is parsed here, the weights are
decoded with numpy (float16 / uint8 / uint16 quantisation included) and every node becomes a
torch operation with TensorFlow's exact semantics (SAME padding with the extra row/column at the
bottom/right, legacy bilinear resize, stable top-k...).

Tensors keep TensorFlow's layout (NHWC) between nodes, so that layout-dependent nodes (Reshape,
StridedSlice, Mean/Concat axes) need no rewriting. Convolutions and pooling view the NHWC tensor
as a channels-last NCHW tensor (a permute, no copy) and view the result back, so the layout costs
nothing. :class:`TFJSGraphModule` can be traced to TorchScript and exported with ``torch.export``
(the graph has static shapes).

Command line::

    python -m scripts.tfjs ops <model.json>              # the ops a graph contains
    python -m scripts.tfjs convert <model.json> <out-dir> [--name centernet]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SUPPORTED_OPS",
    "TFJSError",
    "TFJSGraph",
    "TFJSGraphModule",
    "UnsupportedOpError",
    "convert",
    "load_graph",
    "load_module",
    "same_padding",
    "tf_avg_pool",
    "tf_conv2d",
    "tf_depthwise_conv2d",
    "tf_gather",
    "tf_max_pool",
    "tf_resize_bilinear",
    "tf_strided_slice",
    "tf_topk",
]


class TFJSError(ValueError):
    """The graph or its weights cannot be read or converted."""


class UnsupportedOpError(TFJSError):
    """The graph holds an op this converter does not implement."""


# --------------------------------------------------------------------------------------------
# Parsing: topology + weights
# --------------------------------------------------------------------------------------------

_NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TF_DTYPES = {
    "DT_FLOAT": torch.float32,
    "DT_INT32": torch.int32,
    "DT_INT64": torch.int64,
    "DT_BOOL": torch.bool,
}


@dataclass
class Node:
    """One node of the graph, its attributes decoded to plain Python values."""

    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFJSGraph:
    """A parsed graph model: nodes in file order, constants, and the signature's names."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    input_shapes: dict[str, list[int]]

    def ops(self) -> dict[str, int]:
        """Op name → number of nodes (``Const`` and ``Placeholder`` included)."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _decode_attr(value: dict[str, Any]) -> Any:
    """An AttrValue in TF.js JSON form to a Python value (strings are base64 in the JSON)."""
    if "list" in value:
        lst = value["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        if "b" in lst:
            return [bool(v) for v in lst["b"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    return value


def _decode_weights(manifest: list[dict[str, Any]], base: Path) -> dict[str, np.ndarray]:
    """Decode every weight of every manifest group; shards of a group are one byte stream."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((base / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            dtype = w["dtype"]
            if dtype not in _NP_DTYPES:
                raise TFJSError(f"weight {w['name']}: dtype {dtype!r} is not supported")
            q = w.get("quantization")
            if q:
                qdtype = q["dtype"]
                storage = _QUANT_DTYPES.get(qdtype)
                if storage is None:
                    raise TFJSError(f"weight {w['name']}: quantization {qdtype!r} not supported")
                nbytes = count * np.dtype(storage).itemsize
                raw = np.frombuffer(data, storage, count, offset)
                if qdtype == "float16":
                    arr = raw.astype(np.float32)
                else:  # affine: value = q * scale + min (TF.js convention)
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                arr = arr.astype(_NP_DTYPES[dtype])
            else:
                nbytes = count * np.dtype(_NP_DTYPES[dtype]).itemsize
                arr = np.frombuffer(data, _NP_DTYPES[dtype], count, offset).copy()
            if offset + nbytes > len(data):
                raise TFJSError(f"weight {w['name']}: the weight shards are too short")
            offset += nbytes
            out[w["name"]] = arr.reshape(shape)
        if offset != len(data):
            raise TFJSError(f"weight shards {group['paths']}: {len(data) - offset} bytes unused")
    return out


def load_graph(model_json: str | Path) -> TFJSGraph:
    """Parse a TF.js ``graph-model`` JSON and its weight shards (next to it)."""
    path = Path(model_json)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format", "graph-model") != "graph-model" or "modelTopology" not in doc:
        raise TFJSError(f"{path}: not a TF.js graph model (format {doc.get('format')!r})")
    constants = _decode_weights(doc.get("weightsManifest", []), path.parent)
    nodes: list[Node] = []
    for raw in doc["modelTopology"].get("node", []):
        attr = {k: _decode_attr(v) for k, v in raw.get("attr", {}).items()}
        node = Node(raw["name"], raw["op"], list(raw.get("input", [])), attr)
        if node.op == "Const" and node.name not in constants:
            raise TFJSError(f"Const {node.name}: not in the weights manifest "
                            "(inline constant values are not supported)")
        nodes.append(node)
    sig = doc.get("signature", {})
    names = {n.name for n in nodes}
    # signature names may carry the tensor index ("input:0")
    inputs = [k.split(":")[0] for k in sig.get("inputs", {})] or [
        n.name for n in nodes if n.op == "Placeholder"]
    outputs = [k.split(":")[0] for k in sig.get("outputs", {})]
    if not outputs:  # nodes nobody consumes
        used = {i.split(":")[0].lstrip("^") for n in nodes for i in n.inputs}
        outputs = [n.name for n in nodes if n.name not in used and n.op != "Const"]
    shapes: dict[str, list[int]] = {}
    for name, spec in sig.get("inputs", {}).items():
        dims = spec.get("tensorShape", {}).get("dim", [])
        shapes[name.split(":")[0]] = [int(d.get("size", -1)) for d in dims]
    for name in inputs + outputs:
        if name not in names:
            raise TFJSError(f"signature names {name!r}, which is not a node of the graph")
    return TFJSGraph(nodes, constants, inputs, outputs, shapes)


# --------------------------------------------------------------------------------------------
# Ops with TensorFlow semantics (tensors in TF layout: NHWC)
# --------------------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding for one dimension: (before, after); the odd pixel goes after."""
    out = (size + stride - 1) // stride
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pads(x: Tensor, padding: str, kh: int, kw: int, strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an NHWC input."""
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding != "SAME":
        raise UnsupportedOpError(f"padding {padding!r} (only SAME and VALID are implemented)")
    top, bottom = same_padding(x.shape[1], kh, strides[0], dilations[0])
    left, right = same_padding(x.shape[2], kw, strides[1], dilations[1])
    return top, bottom, left, right


def _as_nchw(x: Tensor, pads: tuple[int, int, int, int],
             value: float = 0.0) -> tuple[Tensor, tuple[int, int]]:
    """NHWC → a channels-last NCHW view; symmetric padding is left to the torch op (returned),
    asymmetric padding (TF puts the odd pixel at the bottom/right) is applied here."""
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return x.permute(0, 3, 1, 2), (top, left)
    return F.pad(x, (0, 0, left, right, top, bottom), value=value).permute(0, 3, 1, 2), (0, 0)


def _activation(y: Tensor, act: str, alpha: Tensor | None, leaky: float) -> Tensor:
    if act == "":
        return y
    if act == "Relu":
        return torch.relu(y)
    if act == "Relu6":
        return torch.clamp(y, 0.0, 6.0)
    if act == "Elu":
        return F.elu(y)
    if act == "Sigmoid":
        return torch.sigmoid(y)
    if act == "LeakyRelu":
        return torch.where(y >= 0, y, y * leaky)
    if act == "Prelu":
        assert alpha is not None
        return torch.where(y >= 0, y, y * alpha)
    raise UnsupportedOpError(f"fused activation {act!r}")


def tf_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
              strides: Sequence[int] = (1, 1), padding: str = "SAME",
              dilations: Sequence[int] = (1, 1), act: str = "",
              alpha: Tensor | None = None, leaky: float = 0.2) -> Tensor:
    """Conv2D on NHWC ``x`` with a torch OIHW ``weight``; bias and activation as TF fuses them."""
    pads = _pads(x, padding, weight.shape[2], weight.shape[3], strides, dilations)
    xc, sym = _as_nchw(x, pads)
    y = F.conv2d(xc, weight, bias, stride=tuple(strides), padding=sym, dilation=tuple(dilations))
    return _activation(y.permute(0, 2, 3, 1), act, alpha, leaky)


def tf_depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                        strides: Sequence[int] = (1, 1), padding: str = "SAME",
                        dilations: Sequence[int] = (1, 1), act: str = "",
                        alpha: Tensor | None = None, leaky: float = 0.2) -> Tensor:
    """DepthwiseConv2dNative; ``weight`` is torch's grouped layout [C*mult, 1, kh, kw]."""
    pads = _pads(x, padding, weight.shape[2], weight.shape[3], strides, dilations)
    xc, sym = _as_nchw(x, pads)
    y = F.conv2d(xc, weight, bias, stride=tuple(strides), padding=sym,
                 dilation=tuple(dilations), groups=x.shape[3])
    return _activation(y.permute(0, 2, 3, 1), act, alpha, leaky)


def tf_max_pool(x: Tensor, ksize: Sequence[int], strides: Sequence[int], padding: str) -> Tensor:
    """MaxPool on NHWC; SAME pads with -inf so padding never wins."""
    xc, sym = _as_nchw(x, _pads(x, padding, ksize[0], ksize[1], strides, (1, 1)), -math.inf)
    return F.max_pool2d(xc, tuple(ksize), tuple(strides), sym).permute(0, 2, 3, 1)


def tf_avg_pool(x: Tensor, ksize: Sequence[int], strides: Sequence[int], padding: str) -> Tensor:
    """AvgPool on NHWC; TF averages over the valid (unpadded) pixels only."""
    top, bottom, left, right = _pads(x, padding, ksize[0], ksize[1], strides, (1, 1))
    xp = F.pad(x, (0, 0, left, right, top, bottom)).permute(0, 3, 1, 2)
    ones = F.pad(torch.ones_like(x[..., :1]), (0, 0, left, right, top, bottom)).permute(0, 3, 1, 2)
    total = F.avg_pool2d(xp, tuple(ksize), tuple(strides), divisor_override=1)
    count = F.avg_pool2d(ones, tuple(ksize), tuple(strides), divisor_override=1)
    return (total / count).permute(0, 2, 3, 1)


def _legacy_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool,
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices (low, high) and weights of TF's bilinear resize along one axis."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    dst = torch.arange(out_size, dtype=torch.float32, device=device)
    if half_pixel:
        src = (dst + 0.5) * scale - 0.5
        low_f = torch.floor(src)
        lerp = src - low_f
        low = torch.clamp(low_f, min=0).long()
    else:
        src = dst * scale
        low_f = torch.floor(src)
        lerp = src - low_f
        low = low_f.long()
    low = torch.clamp(low, max=in_size - 1)
    high = torch.clamp(low_f.long() + 1, 0, in_size - 1)
    return low, high, lerp


def tf_resize_bilinear(x: Tensor, size: Sequence[int], align_corners: bool = False,
                       half_pixel_centers: bool = False) -> Tensor:
    """ResizeBilinear on NHWC with TF's coordinate rules (default: the legacy ones).

    Legacy: ``src = dst * in/out`` (no half-pixel shift), neighbours ``floor(src)`` and
    ``min(floor(src)+1, in-1)``; torch's ``interpolate`` has no such mode.
    """
    h, w = int(size[0]), int(size[1])
    y0, y1, ly = _legacy_axis(x.shape[1], h, align_corners, half_pixel_centers, x.device)
    x0, x1, lx = _legacy_axis(x.shape[2], w, align_corners, half_pixel_centers, x.device)
    top = x.index_select(1, y0)
    bottom = x.index_select(1, y1)
    lx = lx.view(1, 1, w, 1)
    top = top.index_select(2, x0) + (top.index_select(2, x1) - top.index_select(2, x0)) * lx
    bottom = (bottom.index_select(2, x0)
              + (bottom.index_select(2, x1) - bottom.index_select(2, x0)) * lx)
    return top + (bottom - top) * ly.view(1, h, 1, 1)


def tf_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """TopKV2 (sorted) along the last axis; equal values keep the lower index first, as TF does.

    ``torch.topk`` leaves the order of ties unspecified (and a masked heatmap can hold
    thousands of equal zeros). Exact with static shapes: with ``t`` the k-th largest value, every
    element above ``t`` is in (``torch.topk`` finds them), and the remaining slots go to the
    lowest-index elements equal to ``t`` (a second top-k over a reversed index key); the k
    chosen indices are then ordered by value, ties by index (a stable sort of k elements).
    """
    n = x.shape[-1]
    vals, idx = torch.topk(x, k, dim=-1)
    t = vals[..., k - 1:k]
    rev = torch.arange(n, 0, -1, dtype=torch.float64 if n > 1 << 24 else torch.float32,
                       device=x.device)
    key = torch.where(x == t, rev, -1.0)
    _, first_equal = torch.topk(key, k, dim=-1)  # index order
    n_above = (vals > t).sum(-1, keepdim=True)
    slot = torch.arange(k, device=x.device)
    fill = torch.gather(first_equal, -1, torch.clamp(slot - n_above, min=0))
    chosen, _ = torch.sort(torch.where(slot < n_above, idx, fill), dim=-1)
    sorted_vals, order = torch.sort(torch.gather(x, -1, chosen), dim=-1, descending=True,
                                    stable=True)
    return sorted_vals, torch.gather(chosen, -1, order).to(torch.int32)


def tf_gather(params: Tensor, indices: Tensor, axis: int) -> Tensor:
    """GatherV2 with batch_dims 0; indices of any shape replace the axis."""
    axis = axis % params.dim()
    flat = params.index_select(axis, indices.reshape(-1).long())
    shape = list(params.shape[:axis]) + list(indices.shape) + list(params.shape[axis + 1:])
    return flat.reshape(shape)


def tf_gather_nd(params: Tensor, indices: Tensor) -> Tensor:
    """TF GatherNd: the last axis of ``indices`` indexes the leading axes of ``params``."""
    idx = indices.long()
    depth = idx.shape[-1]
    flat = idx.reshape(-1, depth)
    picked = params[tuple(flat[:, i] for i in range(depth))]
    return picked.reshape(*idx.shape[:-1], *params.shape[depth:])


def tf_strided_slice(x: Tensor, begin: Sequence[int], end: Sequence[int], strides: Sequence[int],
                     begin_mask: int, end_mask: int, shrink_axis_mask: int) -> Tensor:
    """StridedSlice without ellipsis/new-axis masks (rejected at conversion)."""
    out = x
    for d in range(len(begin)):
        step = int(strides[d])
        size = x.shape[d]
        if shrink_axis_mask >> d & 1:
            i = int(begin[d]) + size if int(begin[d]) < 0 else int(begin[d])
            out = out.narrow(d, i, 1)
            continue
        if step <= 0:
            raise UnsupportedOpError("StridedSlice with a non-positive stride")
        b = 0 if begin_mask >> d & 1 else int(begin[d])
        e = size if end_mask >> d & 1 else int(end[d])
        b = min(max(b + size if b < 0 else b, 0), size)
        e = min(max(e + size if e < 0 else e, 0), size)
        out = out.narrow(d, b, max(e - b, 0))
        if step > 1:
            out = out[(slice(None),) * d + (slice(None, None, step),)]
    shrink = [d for d in range(len(begin)) if shrink_axis_mask >> d & 1]
    for d in reversed(shrink):
        out = out.squeeze(d)
    return out


# --------------------------------------------------------------------------------------------
# Graph → module
# --------------------------------------------------------------------------------------------

SUPPORTED_OPS = (
    "Add", "AddV2", "AvgPool", "BiasAdd", "Cast", "ConcatV2", "Conv2D", "DepthwiseConv2dNative",
    "Equal", "ExpandDims", "FloorDiv", "FloorMod", "FusedDepthwiseConv2dNative", "GatherV2",
    "Greater", "Identity", "Less", "MaxPool", "Maximum", "Mean", "Minimum", "Mul", "Pack",
    "Relu", "Relu6", "Reshape", "ResizeBilinear", "RealDiv", "Rsqrt", "Sigmoid", "Softmax",
    "Squeeze", "StridedSlice", "Sub", "Tanh", "TopKV2", "Transpose", "_FusedConv2D", "ArgMax",
    "GatherNd", "Sqrt", "SquaredDifference", "Unpack",
)

Step = Callable[[list[Tensor]], Tensor | tuple[Tensor, ...]]


def _ref(name: str) -> tuple[str, int]:
    """``node:1`` → (node, 1); ``node`` → (node, 0)."""
    if name.startswith("^"):
        raise TFJSError(f"control dependency {name!r} is not supported")
    if ":" in name:
        base, idx = name.rsplit(":", 1)
        return base, int(idx)
    return name, 0


def _data_inputs(node: Node) -> list[str]:
    """A node's inputs without its control dependencies (``^name``: run-after edges, which a
    graph evaluated in order needs no more)."""
    return [i for i in node.inputs if not i.startswith("^")]


def _topo_order(graph: TFJSGraph, outputs: Sequence[str]) -> list[Node]:
    """Nodes needed for ``outputs``, each after its inputs (the file order is not topological)."""
    by_name = {n.name: n for n in graph.nodes}
    order: list[Node] = []
    state: dict[str, int] = {}
    for out in outputs:
        stack: list[tuple[str, bool]] = [(out, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise TFJSError(f"the graph has a cycle through {name!r}")
            if name not in by_name:
                raise TFJSError(f"input {name!r} is not a node of the graph")
            state[name] = 1
            stack.append((name, True))
            for i in reversed(_data_inputs(by_name[name])):
                dep = _ref(i)[0]
                if state.get(dep) != 2:
                    stack.append((dep, False))
    return order


class TFJSGraphModule(nn.Module):
    """The graph as a torch module: ``forward(x)`` returns the outputs in ``self.output_names``.

    ``x`` is the graph's input in TF layout (NHWC) unless ``channels_first=True``, in which case
    a 4-D input is taken as NCHW and permuted (a view) on entry. Constants are buffers: torch
    layout for convolution filters, the graph's dtype (float32 / int32) for the rest.
    """

    def __init__(self, graph: TFJSGraph, outputs: Sequence[str] | None = None,
                 channels_first: bool = False) -> None:
        super().__init__()
        self.output_names = list(outputs or graph.outputs)
        if len(graph.inputs) != 1:
            raise TFJSError(f"graphs with {len(graph.inputs)} inputs are not supported")
        self.input_name = graph.inputs[0]
        self.channels_first = channels_first
        self._steps: list[tuple[str, Step, list[tuple[str, int]]]] = []
        self._buffer_of: dict[str, str] = {}
        self._consts = graph.constants
        nodes = _topo_order(graph, self.output_names)
        self.op_counts: dict[str, int] = {}
        unsupported = sorted({n.op for n in nodes} - set(SUPPORTED_OPS) - {"Const", "Placeholder"})
        if unsupported:
            raise UnsupportedOpError(f"unsupported TF op(s): {', '.join(unsupported)}")
        for node in nodes:
            self.op_counts[node.op] = self.op_counts.get(node.op, 0) + 1
            if node.op == "Placeholder":
                if node.name != self.input_name:
                    raise TFJSError(f"Placeholder {node.name} is not the signature's input")
                continue
            if node.op == "Const":
                continue
            self._steps.append(self._build(node))
        del self._consts  # numpy copies: every constant the steps need is a buffer now

    # -- constants -------------------------------------------------------------------------

    def _const_np(self, ref: str, what: str) -> np.ndarray:
        name = _ref(ref)[0]
        if name not in self._consts:
            raise TFJSError(f"{what}: input {ref!r} must be a constant")
        return self._consts[name]

    def _buffer(self, key: str, value: np.ndarray | Tensor) -> tuple[str, int]:
        """Register a constant as a buffer once; a step refers to it as ('#buffer', 0)."""
        if key not in self._buffer_of:
            attr = f"c{len(self._buffer_of)}"
            t = value if isinstance(value, Tensor) else torch.from_numpy(np.array(value))
            self.register_buffer(attr, t.contiguous())
            self._buffer_of[key] = attr
        return ("#" + self._buffer_of[key], 0)

    def _operand(self, ref: str) -> tuple[str, int]:
        name, idx = _ref(ref)
        if name in self._consts:
            return self._buffer(name, self._consts[name])
        return name, idx

    # -- node builders ---------------------------------------------------------------------

    def _build(self, n: Node) -> tuple[str, Step, list[tuple[str, int]]]:
        op, a = n.op, n.attr
        ins = _data_inputs(n)
        fmt = a.get("data_format", "NHWC")
        if fmt not in ("NHWC", ""):
            raise UnsupportedOpError(f"{op} {n.name}: data_format {fmt} (only NHWC)")

        def hw(v: list[int] | None, default: int = 1) -> list[int]:
            return [int(v[1]), int(v[2])] if v else [default, default]

        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            depthwise = "Depthwise" in op
            filt = self._const_np(ins[1], f"{op} {n.name}")
            if depthwise:  # [kh, kw, in, mult] -> [in*mult, 1, kh, kw]
                kh, kw, cin, mult = filt.shape
                w = filt.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            else:  # HWIO -> OIHW
                w = filt.transpose(3, 2, 0, 1)
            refs = [self._operand(ins[0]),
                    self._buffer(n.name + "/weight", np.ascontiguousarray(w))]
            fused = list(a.get("fused_ops", []))
            if fused and fused[0] != "BiasAdd":
                raise UnsupportedOpError(f"{op} {n.name}: fused ops {fused}")
            act = fused[1] if len(fused) > 1 else ""
            if len(fused) > 2 or act not in ("", "Relu", "Relu6", "Elu", "Sigmoid", "LeakyRelu",
                                             "Prelu"):
                raise UnsupportedOpError(f"{op} {n.name}: fused ops {fused}")
            has_bias = bool(fused)
            if has_bias:
                refs.append(self._operand(ins[2]))
            has_alpha = act == "Prelu"
            if has_alpha:
                refs.append(self._operand(ins[3]))
            if a.get("explicit_paddings"):
                raise UnsupportedOpError(f"{op} {n.name}: EXPLICIT padding")
            strides, dil = hw(a.get("strides")), hw(a.get("dilations"))
            padding = a.get("padding", "VALID")
            leaky = float(a.get("leakyrelu_alpha", 0.2))
            fn = tf_depthwise_conv2d if depthwise else tf_conv2d

            def conv(v: list[Tensor]) -> Tensor:
                bias = v[2] if has_bias else None
                alpha = v[3] if has_alpha else None
                return fn(v[0], v[1], bias, strides, padding, dil, act, alpha, leaky)
            return n.name, conv, refs

        if op in ("MaxPool", "AvgPool"):
            ksize, strides, padding = hw(a.get("ksize")), hw(a.get("strides")), a["padding"]
            pool = tf_max_pool if op == "MaxPool" else tf_avg_pool
            return n.name, lambda v: pool(v[0], ksize, strides, padding), [self._operand(ins[0])]

        if op == "ResizeBilinear":
            size = [int(s) for s in self._const_np(ins[1], f"ResizeBilinear {n.name}")]
            ac, hp = bool(a.get("align_corners", False)), bool(a.get("half_pixel_centers", False))
            return (n.name, lambda v: tf_resize_bilinear(v[0], size, ac, hp),
                    [self._operand(ins[0])])

        unary: dict[str, Callable[[Tensor], Tensor]] = {
            "Relu": torch.relu, "Relu6": lambda t: torch.clamp(t, 0.0, 6.0),
            "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Rsqrt": torch.rsqrt,
            "Identity": lambda t: t, "Softmax": lambda t: torch.softmax(t, -1),
            "Sqrt": torch.sqrt,
        }
        if op in unary:
            f1 = unary[op]
            return n.name, lambda v: f1(v[0]), [self._operand(ins[0])]

        binary: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
            "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub,
            "Mul": torch.mul, "RealDiv": torch.div, "Maximum": torch.maximum,
            "Minimum": torch.minimum, "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt,
            "FloorDiv": lambda p, q: torch.div(p, q, rounding_mode="floor"),
            "FloorMod": torch.remainder, "SquaredDifference": lambda p, q: (p - q) * (p - q),
        }
        if op in binary:
            f2 = binary[op]
            return n.name, lambda v: f2(v[0], v[1]), [self._operand(i) for i in ins[:2]]

        if op == "Cast":
            dst = _TF_DTYPES.get(a.get("DstT", ""))
            if dst is None:
                raise UnsupportedOpError(f"Cast {n.name} to {a.get('DstT')}")
            return n.name, lambda v: v[0].to(dst), [self._operand(ins[0])]

        if op == "Mean":
            axes = [int(i) for i in np.atleast_1d(self._const_np(ins[1], f"Mean {n.name}"))]
            keep = bool(a.get("keep_dims", False))
            return (n.name, lambda v: torch.mean(v[0], dim=axes, keepdim=keep),
                    [self._operand(ins[0])])

        if op == "ConcatV2":
            axis = int(self._const_np(ins[-1], f"ConcatV2 {n.name}"))
            refs = [self._operand(i) for i in ins[:-1]]
            return n.name, lambda v: torch.cat(v, dim=axis), refs

        if op == "Pack":
            axis = int(a.get("axis", 0))
            return n.name, lambda v: torch.stack(v, dim=axis), [self._operand(i) for i in ins]

        if op == "Reshape":
            shape = [int(s) for s in np.atleast_1d(self._const_np(ins[1], f"Reshape {n.name}"))]
            return n.name, lambda v: v[0].reshape(shape), [self._operand(ins[0])]

        if op == "ExpandDims":
            dim = int(self._const_np(ins[1], f"ExpandDims {n.name}"))
            return n.name, lambda v: v[0].unsqueeze(dim), [self._operand(ins[0])]

        if op == "Squeeze":
            dims = [int(d) for d in a.get("squeeze_dims", [])]

            def squeeze(v: list[Tensor]) -> Tensor:
                t = v[0]
                ds = dims or [d for d in range(t.dim()) if t.shape[d] == 1]
                for d in sorted((d % t.dim() for d in ds), reverse=True):
                    t = t.squeeze(d)
                return t
            return n.name, squeeze, [self._operand(ins[0])]

        if op == "Transpose":
            perm = [int(p) for p in self._const_np(ins[1], f"Transpose {n.name}")]
            return n.name, lambda v: v[0].permute(perm), [self._operand(ins[0])]

        if op == "StridedSlice":
            if a.get("ellipsis_mask", 0) or a.get("new_axis_mask", 0):
                raise UnsupportedOpError(f"StridedSlice {n.name}: ellipsis/new_axis masks")
            begin, end, strd = (
                [int(s) for s in self._const_np(i, f"StridedSlice {n.name}")] for i in ins[1:4]
            )
            bm, em, sm = (int(a.get(k, 0)) for k in ("begin_mask", "end_mask", "shrink_axis_mask"))
            return (n.name, lambda v: tf_strided_slice(v[0], begin, end, strd, bm, em, sm),
                    [self._operand(ins[0])])

        if op == "GatherV2":
            if int(a.get("batch_dims", 0)) != 0:
                raise UnsupportedOpError(f"GatherV2 {n.name}: batch_dims != 0")
            axis = int(self._const_np(ins[2], f"GatherV2 {n.name}"))
            return (n.name, lambda v: tf_gather(v[0], v[1], axis),
                    [self._operand(ins[0]), self._operand(ins[1])])

        if op == "ArgMax":
            axis = int(self._const_np(ins[1], f"ArgMax {n.name}"))
            out_type = _TF_DTYPES.get(a.get("output_type", "DT_INT64"), torch.int64)
            return (n.name, lambda v: torch.argmax(v[0], dim=axis).to(out_type),
                    [self._operand(ins[0])])

        if op == "Unpack":
            axis = int(a.get("axis", 0))
            return n.name, lambda v: tuple(torch.unbind(v[0], dim=axis)), [self._operand(ins[0])]

        if op == "GatherNd":
            return (n.name, lambda v: tf_gather_nd(v[0], v[1]),
                    [self._operand(ins[0]), self._operand(ins[1])])

        if op == "TopKV2":
            k = int(self._const_np(ins[1], f"TopKV2 {n.name}"))  # sorted=false allows any order
            return n.name, lambda v: tf_topk(v[0], k), [self._operand(ins[0])]

        raise UnsupportedOpError(f"unsupported TF op: {op} (node {n.name})")

    # -- evaluation ------------------------------------------------------------------------

    def run(self, x: Tensor, keep: bool = False) -> dict[str, Tensor | tuple[Tensor, ...]]:
        """Evaluate the graph; with ``keep`` every intermediate value is returned (for tests)."""
        if self.channels_first and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        values: dict[str, Tensor | tuple[Tensor, ...]] = {self.input_name: x}
        for name, fn, refs in self._steps:
            args: list[Tensor] = []
            for ref, idx in refs:
                if ref.startswith("#"):
                    args.append(getattr(self, ref[1:]))
                else:
                    v = values[ref]
                    args.append(v[idx] if isinstance(v, tuple) else v)
            values[name] = fn(args)
        if keep:
            return values
        return {k: values[k] for k in self.output_names}

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        """The output tensor, or a tuple of them in ``output_names`` order when several."""
        out = self.run(x)
        res = tuple(v[0] if isinstance(v, tuple) else v for v in out.values())
        return res[0] if len(res) == 1 else res


def load_module(model_json: str | Path, outputs: Sequence[str] | None = None,
                channels_first: bool = False) -> TFJSGraphModule:
    """Parse ``model_json`` and build the module (eval mode)."""
    return TFJSGraphModule(load_graph(model_json), outputs, channels_first).eval()


# --------------------------------------------------------------------------------------------
# Conversion to files
# --------------------------------------------------------------------------------------------


def _example_input(graph: TFJSGraph, channels_first: bool) -> Tensor:
    shape = graph.input_shapes.get(graph.inputs[0])
    if not shape or any(s <= 0 for s in shape):
        raise TFJSError(f"the input {graph.inputs[0]} has no static shape: {shape}")
    if channels_first and len(shape) == 4:
        shape = [shape[0], shape[3], shape[1], shape[2]]
    gen = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=gen) * 255.0


def convert(model_json: str | Path, out_dir: str | Path, name: str | None = None,
            outputs: Sequence[str] | None = None, channels_first: bool = True,
            formats: Sequence[str] = ("ts", "pt2"), force: bool = False) -> list[Path]:
    """Write ``<out_dir>/<name>.ts`` (traced TorchScript) and/or ``<name>.pt2`` (torch.export).

    Skips a format whose file is newer than the JSON and its shards (``force`` rewrites). Each
    written file is reloaded and checked against the eager module on a random input.
    """
    src = Path(model_json)
    out = Path(out_dir)
    name = name or src.stem
    doc = json.loads(src.read_text(encoding="utf-8"))
    inputs = [src] + [src.parent / p for g in doc.get("weightsManifest", []) for p in g["paths"]]
    newest = max(p.stat().st_mtime for p in inputs)
    targets = {fmt: out / f"{name}.{fmt}" for fmt in formats}
    todo = {f: p for f, p in targets.items()
            if force or not p.exists() or p.stat().st_mtime <= newest}
    if not todo:
        return []
    graph = load_graph(src)
    module = TFJSGraphModule(graph, outputs, channels_first).eval()
    x = _example_input(graph, channels_first)
    with torch.no_grad():
        ref = module(x)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt, path in todo.items():
        tmp = path.with_name(".tmp-" + path.name)  # keeps the suffix torch.export wants
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit", category=FutureWarning)
            # Shapes become constants in the trace: intended, the graph's shapes are static.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if fmt == "ts":
                traced = torch.jit.trace(module, (x,), check_trace=False)
                torch.jit.save(traced, str(tmp))
                got = torch.jit.load(str(tmp))(x)
            elif fmt == "pt2":
                exported = torch.export.export(module, (x,))
                torch.export.save(exported, str(tmp))
                got = torch.export.load(str(tmp)).module()(x)
            else:
                raise TFJSError(f"unknown format {fmt!r} (ts, pt2)")
        pairs = zip(ref, got, strict=True) if isinstance(ref, tuple) else [(ref, got)]
        for r, g in pairs:
            if r.shape != g.shape or not torch.allclose(r.float(), g.float(), atol=1e-5, rtol=0):
                tmp.unlink(missing_ok=True)
                raise TFJSError(f"{path.name}: the saved module disagrees with the eager one")
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.tfjs",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("ops", help="list the ops of a graph model")
    o.add_argument("model_json")
    c = sub.add_parser("convert", help="write TorchScript (.ts) and torch.export (.pt2) files")
    c.add_argument("model_json")
    c.add_argument("out_dir")
    c.add_argument("--name", default=None, help="file stem (default: the JSON's)")
    c.add_argument("--output", action="append", help="output node (default: the signature's)")
    c.add_argument("--nhwc", action="store_true", help="take NHWC input (default: NCHW)")
    c.add_argument("--format", action="append", choices=["ts", "pt2"], help="default: both")
    c.add_argument("--force", action="store_true", help="rewrite even when up to date")
    args = p.parse_args(argv)
    try:
        if args.cmd == "ops":
            graph = load_graph(args.model_json)
            for op, count in graph.ops().items():
                known = op in SUPPORTED_OPS or op in ("Const", "Placeholder")
                mark = "" if known else "  UNSUPPORTED"
                print(f"{count:5d}  {op}{mark}")
            return 0
        written = convert(args.model_json, args.out_dir, args.name, args.output,
                          channels_first=not args.nhwc, formats=args.format or ("ts", "pt2"),
                          force=args.force)
    except (TFJSError, OSError) as e:
        print(f"tfjs: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"tfjs: wrote {path}")
    if not written:
        print(f"tfjs: up to date in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
