"""The TF.js graph converter (scripts/tfjs.py) and the CenterNet COCO detector built with it.

Every op is checked against an independent numpy version of TensorFlow's documented semantics
(written out below), the real graph is checked node by node and end to end against a numpy
evaluation, the TorchScript / torch.export files against the eager module, and the detector on
real pictures. Tests that need the downloaded model skip only when npm or its registry is
unavailable (the reason printed is the fetch script's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scripts import tfjs
from scripts.fetch_human import CACHE_DIR, TARBALL, FetchError, fetch
from torchstream.environment import LABELS_DIR

ROOT = Path(__file__).resolve().parents[1]
LABELS_80 = LABELS_DIR / "coco_80.txt"
SIZE = 512

# ------------------------------------------------------------------------------------------
# numpy references of TF semantics (NHWC), independent of the torch code
# ------------------------------------------------------------------------------------------


def np_same(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def np_pad(x: np.ndarray, padding: str, kh: int, kw: int, s: tuple[int, int],
           d: tuple[int, int], value: float = 0.0) -> np.ndarray:
    if padding == "VALID":
        return x
    t, b = np_same(x.shape[1], kh, s[0], d[0])
    left, r = np_same(x.shape[2], kw, s[1], d[1])
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _taps(xp: np.ndarray, kh: int, kw: int, s: tuple[int, int], d: tuple[int, int]):
    oh = (xp.shape[1] - ((kh - 1) * d[0] + 1)) // s[0] + 1
    ow = (xp.shape[2] - ((kw - 1) * d[1] + 1)) // s[1] + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * d[0]: i * d[0] + (oh - 1) * s[0] + 1: s[0],
                           j * d[1]: j * d[1] + (ow - 1) * s[1] + 1: s[1], :]


def np_conv2d(x, f, s=(1, 1), padding="SAME", d=(1, 1)):
    """f: HWIO, as TF stores it."""
    kh, kw = f.shape[:2]
    out = 0.0
    for i, j, patch in _taps(np_pad(x.astype(np.float64), padding, kh, kw, s, d), kh, kw, s, d):
        out = out + patch @ f[i, j].astype(np.float64)
    return np.asarray(out, np.float32)


def np_depthwise(x, f, s=(1, 1), padding="SAME", d=(1, 1)):
    """f: [kh, kw, C, multiplier]; output channel c*multiplier + m."""
    kh, kw, c, m = f.shape
    out = 0.0
    for i, j, patch in _taps(np_pad(x.astype(np.float64), padding, kh, kw, s, d), kh, kw, s, d):
        out = out + patch[..., :, None] * f[i, j].astype(np.float64)
    out = np.asarray(out)
    return out.reshape(out.shape[:3] + (c * m,)).astype(np.float32)


def np_max_pool(x, k, s, padding):
    xp = np_pad(x, padding, k[0], k[1], s, (1, 1), value=-np.inf)
    return np.max(np.stack([p for _, _, p in _taps(xp, k[0], k[1], s, (1, 1))]), axis=0)


def np_resize_bilinear(x, oh, ow, align_corners=False, half_pixel=False):
    """TF's ResizeBilinear, pixel by pixel from its documented coordinate rules."""
    n, ih, iw, c = x.shape

    def coords(out_size, in_size):
        scale = ((in_size - 1) / (out_size - 1) if align_corners and out_size > 1
                 else in_size / out_size)
        res = []
        for o in range(out_size):
            src = (o + 0.5) * scale - 0.5 if half_pixel else o * scale
            lo = int(np.floor(src))
            res.append((min(max(lo, 0), in_size - 1), min(max(lo + 1, 0), in_size - 1),
                        src - np.floor(src)))
        return res

    xd = x.astype(np.float64)
    out = np.zeros((n, oh, ow, c))
    for oy, (y0, y1, ly) in enumerate(coords(oh, ih)):
        for ox, (x0, x1, lx) in enumerate(coords(ow, iw)):
            top = xd[:, y0, x0] * (1 - lx) + xd[:, y0, x1] * lx
            bottom = xd[:, y1, x0] * (1 - lx) + xd[:, y1, x1] * lx
            out[:, oy, ox] = top * (1 - ly) + bottom * ly
    return out.astype(np.float32)


def np_topk(x, k):
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, idx, -1), idx.astype(np.int32)


def np_strided_slice(x, begin, end, strides, bm, em, sm):
    sl = []
    for dim in range(len(begin)):
        if sm >> dim & 1:
            sl.append(int(begin[dim]))
        else:
            sl.append(slice(None if bm >> dim & 1 else int(begin[dim]),
                            None if em >> dim & 1 else int(end[dim]), int(strides[dim])))
    return x[tuple(sl)]


def _hw(v):
    return (int(v[1]), int(v[2])) if v else (1, 1)


def np_node(node: tfjs.Node, args: list, const) -> object:
    """One graph node in numpy. ``args``: input values; ``const(i)``: input i as a constant."""
    op, a = node.op, node.attr
    if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        fn = np_depthwise if "Depthwise" in op else np_conv2d
        y = fn(args[0], args[1], _hw(a.get("strides")), a["padding"], _hw(a.get("dilations")))
        fused = a.get("fused_ops", [])
        if fused:
            y = y + args[2]
        for act in fused[1:]:
            y = {"Relu": lambda t: np.maximum(t, 0), "Relu6": lambda t: np.clip(t, 0, 6)}[act](y)
        return y.astype(np.float32)
    if op == "MaxPool":
        return np_max_pool(args[0], _hw(a["ksize"]), _hw(a["strides"]), a["padding"])
    if op == "ResizeBilinear":
        h, w = (int(v) for v in const(1))
        return np_resize_bilinear(args[0], h, w, a.get("align_corners", False),
                                  a.get("half_pixel_centers", False))
    simple = {
        "Relu": lambda: np.maximum(args[0], 0), "Relu6": lambda: np.clip(args[0], 0, 6),
        "Sigmoid": lambda: 1 / (1 + np.exp(-args[0].astype(np.float64))),
        "Identity": lambda: args[0], "Add": lambda: args[0] + args[1],
        "AddV2": lambda: args[0] + args[1], "Sub": lambda: args[0] - args[1],
        "Mul": lambda: args[0] * args[1], "Equal": lambda: args[0] == args[1],
        "FloorDiv": lambda: np.floor_divide(args[0], args[1]),
        "FloorMod": lambda: np.mod(args[0], args[1]),
        "Mean": lambda: args[0].astype(np.float64).mean(
            axis=tuple(int(v) for v in np.atleast_1d(const(1))), keepdims=a["keep_dims"]),
        "ConcatV2": lambda: np.concatenate(args[:-1], axis=int(const(len(args) - 1))),
        "Reshape": lambda: args[0].reshape([int(v) for v in const(1)]),
        "ExpandDims": lambda: np.expand_dims(args[0], int(const(1))),
        "Cast": lambda: args[0].astype({"DT_FLOAT": np.float32, "DT_INT32": np.int32,
                                        "DT_INT64": np.int64}[a["DstT"]]),
        "TopKV2": lambda: np_topk(args[0], int(const(1))),
        "GatherV2": lambda: np.take(args[0], args[1], axis=int(const(2))),
        "RealDiv": lambda: args[0] / args[1], "Sqrt": lambda: np.sqrt(args[0]),
        "SquaredDifference": lambda: np.square(args[0] - args[1]),
        "Pack": lambda: np.stack(args, axis=int(a.get("axis", 0))),
        "Unpack": lambda: tuple(np.moveaxis(args[0], int(a.get("axis", 0)), 0)),
        "Squeeze": lambda: np.squeeze(args[0], axis=tuple(int(d) for d in a["squeeze_dims"])
                                      if a.get("squeeze_dims") else None),
        "ArgMax": lambda: np.argmax(args[0], axis=int(const(1))).astype(
            {"DT_INT32": np.int32}.get(a.get("output_type"), np.int64)),
        "GatherNd": lambda: args[0][tuple(np.moveaxis(args[1], -1, 0))],
        "StridedSlice": lambda: np_strided_slice(
            args[0], const(1), const(2), const(3), a.get("begin_mask", 0),
            a.get("end_mask", 0), a.get("shrink_axis_mask", 0)),
    }
    if op not in simple:
        raise NotImplementedError(op)
    y = simple[op]()
    return y.astype(np.float32) if isinstance(y, np.ndarray) and y.dtype == np.float64 else y


def np_eval_graph(graph: tfjs.TFJSGraph, x_nhwc: np.ndarray, outputs: list[str]) -> dict:
    """Evaluate the graph with numpy only (recursively, memoised)."""
    by_name = {n.name: n for n in graph.nodes}
    values: dict[str, object] = {graph.inputs[0]: x_nhwc}

    def value(ref: str):
        name, _, idx = ref.partition(":")
        if name in graph.constants:
            return graph.constants[name]
        if name not in values:
            node = by_name[name]
            inputs = [i for i in node.inputs if not i.startswith("^")]  # no control edges
            values[name] = np_node(node, [value(i) for i in inputs],
                                   lambda i, inputs=inputs: value(inputs[i]))
        v = values[name]
        return v[int(idx or 0)] if isinstance(v, tuple) else v

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    return {o: value(o) for o in outputs}


# ------------------------------------------------------------------------------------------
# op level: torch ops against the numpy references, random inputs
# ------------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def test_same_padding_puts_the_odd_pixel_after():
    assert tfjs.same_padding(6, 3, 2) == (0, 1)   # TF: extra row at the bottom
    assert tfjs.same_padding(5, 3, 2) == (1, 1)
    assert tfjs.same_padding(7, 5, 1, dilation=2) == (4, 4)
    assert tfjs.same_padding(8, 1, 2) == (0, 0)
    for n in range(1, 12):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                assert tfjs.same_padding(n, k, s) == np_same(n, k, s)


@pytest.mark.parametrize("h,w,k,s,d,padding", [
    (9, 8, 3, 2, 1, "SAME"), (8, 8, 3, 2, 1, "SAME"), (7, 10, 5, 1, 2, "SAME"),
    (11, 9, 3, 2, 1, "VALID"), (6, 7, 1, 1, 1, "SAME"), (10, 10, 2, 2, 1, "SAME"),
])
def test_conv2d_and_depthwise_match_tf_semantics(h, w, k, s, d, padding):
    x = RNG.normal(size=(1, h, w, 5)).astype(np.float32)
    f = RNG.normal(size=(k, k, 5, 4)).astype(np.float32)
    b = RNG.normal(size=(4,)).astype(np.float32)
    weight = t(f.transpose(3, 2, 0, 1))
    got = tfjs.tf_conv2d(t(x), weight, t(b), (s, s), padding, (d, d), "Relu6").numpy()
    want = np.clip(np_conv2d(x, f, (s, s), padding, (d, d)) + b, 0, 6)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    fd = RNG.normal(size=(k, k, 5, 2)).astype(np.float32)
    bd = RNG.normal(size=(10,)).astype(np.float32)
    wd = t(fd.transpose(2, 3, 0, 1).reshape(10, 1, k, k))
    got = tfjs.tf_depthwise_conv2d(t(x), wd, t(bd), (s, s), padding, (d, d), "Relu").numpy()
    want = np.maximum(np_depthwise(x, fd, (s, s), padding, (d, d)) + bd, 0)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("h,w,k,s,padding", [
    (8, 8, 3, 1, "SAME"), (9, 8, 3, 2, "SAME"), (8, 8, 2, 2, "SAME"), (9, 7, 3, 2, "VALID"),
])
def test_max_pool_pads_with_minus_infinity(h, w, k, s, padding):
    x = RNG.normal(size=(1, h, w, 3)).astype(np.float32) - 10  # all negative: zero pad would win
    got = tfjs.tf_max_pool(t(x), (k, k), (s, s), padding).numpy()
    np.testing.assert_array_equal(got, np_max_pool(x, (k, k), (s, s), padding))


@pytest.mark.parametrize("ih,iw,oh,ow", [(4, 4, 8, 8), (5, 7, 12, 9), (16, 16, 32, 32),
                                         (9, 6, 4, 5)])
@pytest.mark.parametrize("align_corners,half_pixel", [(False, False), (True, False),
                                                      (False, True)])
def test_resize_bilinear_matches_tf_rules(ih, iw, oh, ow, align_corners, half_pixel):
    x = RNG.normal(size=(1, ih, iw, 3)).astype(np.float32)
    got = tfjs.tf_resize_bilinear(t(x), (oh, ow), align_corners, half_pixel).numpy()
    want = np_resize_bilinear(x, oh, ow, align_corners, half_pixel)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6)


def test_legacy_resize_is_not_torch_interpolate():
    """The graph's upsampling uses neither align_corners nor half-pixel centres: the last
    row/column is copied from the edge, unlike torch's modes."""
    x = RNG.normal(size=(1, 4, 4, 2)).astype(np.float32)
    got = tfjs.tf_resize_bilinear(t(x), (8, 8)).numpy()
    np.testing.assert_array_equal(got[:, ::2, ::2], x)  # even outputs sit on input pixels
    np.testing.assert_array_equal(got[:, -1, -1], x[:, -1, -1])
    half = torch.nn.functional.interpolate(t(x).permute(0, 3, 1, 2), size=(8, 8),
                                           mode="bilinear", align_corners=False)
    assert not np.allclose(half.permute(0, 2, 3, 1).numpy(), got)


def test_topk_is_sorted_and_keeps_lower_index_first_on_ties():
    x = RNG.integers(0, 6, size=(2, 5000)).astype(np.float32)  # thousands of ties
    x[0, :4000] = 0
    for k in (1, 7, 100):
        vals, idx = tfjs.tf_topk(t(x), k)
        want_vals, want_idx = np_topk(x, k)
        np.testing.assert_array_equal(vals.numpy(), want_vals)
        np.testing.assert_array_equal(idx.numpy(), want_idx)
        assert idx.dtype == torch.int32
    y = RNG.random(size=(1, 100000)).astype(np.float32)
    vals, idx = tfjs.tf_topk(t(y), 100)
    np.testing.assert_array_equal(idx.numpy(), np_topk(y, 100)[1])


def test_gather_and_strided_slice():
    p = RNG.normal(size=(6, 4)).astype(np.float32)
    i = np.array([[3, 0], [2, 2]], np.int32)
    np.testing.assert_array_equal(tfjs.tf_gather(t(p), t(i), 0).numpy(), np.take(p, i, 0))
    np.testing.assert_array_equal(tfjs.tf_gather(t(p), t(i), 1).numpy(), np.take(p, i, 1))
    x = RNG.normal(size=(2, 7, 5)).astype(np.float32)
    for args in [((0, 0, 1), (0, 0, 2), (1, 1, 1), 3, 3, 0), ((1, 2, 0), (2, 7, 5), (1, 2, 2),
                                                                0, 4, 1),
                 ((0, -3, 0), (0, -1, 0), (1, 1, 1), 5, 5, 0)]:
        np.testing.assert_array_equal(tfjs.tf_strided_slice(t(x), *args).numpy(),
                                      np_strided_slice(x, *args))


# ------------------------------------------------------------------------------------------
# small graphs written here: quantised weights, unsupported ops
# ------------------------------------------------------------------------------------------


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


def _write_graph(path: Path, nodes: list[dict], weights: list[tuple[dict, bytes]]) -> Path:
    (path / "g.bin").write_bytes(b"".join(data for _, data in weights))
    doc = {
        "format": "graph-model",
        "signature": {"inputs": {"x": {"name": "x", "dtype": "DT_FLOAT", "tensorShape": {
            "dim": [{"size": "1"}, {"size": "6"}, {"size": "6"}, {"size": "2"}]}}},
            "outputs": {"y": {"name": "y"}}},
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["g.bin"], "weights": [w for w, _ in weights]}],
    }
    (path / "g.json").write_text(json.dumps(doc))
    return path / "g.json"


def test_quantised_weights_and_fused_conv_graph(tmp_path):
    """uint8 (affine) and float16 quantised weights decode as TF.js defines them."""
    q = RNG.integers(0, 256, size=(3, 3, 2, 3)).astype(np.uint8)
    scale, lo = 0.01, -1.2
    bias = RNG.normal(size=(3,)).astype(np.float16)
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "w", "op": "Const"}, {"name": "b", "op": "Const"},
        {"name": "y", "op": "_FusedConv2D", "input": ["x", "w", "b"], "attr": {
            "strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": _b64("SAME")},
            "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}},
            "dilations": {"list": {"i": ["1", "1", "1", "1"]}}}},
    ]
    weights = [
        ({"name": "w", "shape": [3, 3, 2, 3], "dtype": "float32",
          "quantization": {"dtype": "uint8", "scale": scale, "min": lo}}, q.tobytes()),
        ({"name": "b", "shape": [3], "dtype": "float32",
          "quantization": {"dtype": "float16"}}, bias.tobytes()),
    ]
    path = _write_graph(tmp_path, nodes, weights)
    graph = tfjs.load_graph(path)
    f = q.astype(np.float32) * np.float32(scale) + np.float32(lo)
    np.testing.assert_array_equal(graph.constants["w"], f)
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    got = tfjs.TFJSGraphModule(graph)(t(x)).numpy()
    want = np.maximum(np_conv2d(x, f, (2, 2)) + bias.astype(np.float32), 0)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_unsupported_op_is_named(tmp_path):
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Erf", "input": ["x"]}]
    path = _write_graph(tmp_path, nodes, [])
    with pytest.raises(tfjs.UnsupportedOpError, match="Erf"):
        tfjs.load_module(path)
    done = subprocess.run([sys.executable, "-m", "scripts.tfjs", "convert", str(path),
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "unsupported TF op(s): Erf" in done.stderr


# ------------------------------------------------------------------------------------------
# fetching
# ------------------------------------------------------------------------------------------


def _fetch_cmd(cache: Path) -> list[str]:
    return [sys.executable, "-m", "scripts.fetch_human", "--cache-dir", str(cache)]


def test_fetch_reports_an_unreachable_registry(tmp_path):
    env = dict(os.environ, npm_config_registry="http://127.0.0.1:9")
    done = subprocess.run(_fetch_cmd(tmp_path), capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot reach http://127.0.0.1:9" in lines[0] and TARBALL in lines[0]
    assert not (tmp_path / "human-3.3.6" / "centernet.json").exists()


def test_fetch_reports_missing_npm(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path / "nothing-here"))
    done = subprocess.run(_fetch_cmd(tmp_path), capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "npm is not installed" in done.stderr
    assert "apt-get install npm" in done.stderr


# ------------------------------------------------------------------------------------------
# the real CenterNet graph
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def centernet_json() -> Path:
    try:
        return fetch(CACHE_DIR).model_json
    except FetchError as e:
        if e.unavailable:
            pytest.skip(str(e))
        raise


@pytest.fixture(scope="session")
def centernet_graph(centernet_json) -> tfjs.TFJSGraph:
    return tfjs.load_graph(centernet_json)


@pytest.fixture(scope="session")
def detector(centernet_graph) -> tfjs.TFJSGraphModule:
    return tfjs.TFJSGraphModule(centernet_graph, channels_first=True).eval()


def letterbox(img: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """Scale the longer side to 512 (bilinear), centre, pad with black: the upstream
    project's own preprocessing (RGB uint8 values, no normalisation)."""
    h, w = img.shape[:2]
    s = SIZE / max(h, w)
    nh, nw = round(h * s), round(w * s)
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, s, top, left


def nchw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="session")
def pictures() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(),
            "motorcycle": data.stereo_motorcycle()[0]}


def test_graph_ops_are_the_documented_ones(centernet_graph):
    assert centernet_graph.ops() == {
        "Const": 267, "Mul": 64, "_FusedConv2D": 62, "Add": 44, "Relu6": 28,
        "FusedDepthwiseConv2dNative": 15, "DepthwiseConv2dNative": 11, "Mean": 9, "Cast": 4,
        "ConcatV2": 4, "ExpandDims": 4, "Reshape": 4, "StridedSlice": 4, "FloorDiv": 3,
        "Identity": 3, "Relu": 3, "ResizeBilinear": 3, "FloorMod": 2, "Sigmoid": 2, "Sub": 2,
        "Conv2D": 1, "Equal": 1, "GatherV2": 1, "MaxPool": 1, "Placeholder": 1, "TopKV2": 1}
    assert centernet_graph.outputs == ["tower_0/wh", "tower_0/keypoints", "tower_0/detections"]


@pytest.mark.e2e
def test_every_node_matches_numpy_on_a_real_image(centernet_graph, detector, pictures):
    """Node by node: each torch node output against numpy fed the same (torch) inputs."""
    img, *_ = letterbox(pictures["coffee"])
    with torch.no_grad():
        values = detector.run(nchw(img), keep=True)
    by_name = {n.name: n for n in centernet_graph.nodes}

    def as_np(ref: str):
        name, _, idx = ref.partition(":")
        if name in centernet_graph.constants:
            return centernet_graph.constants[name]
        v = values[name]
        v = v[int(idx or 0)] if isinstance(v, tuple) else v
        return v.numpy()

    worst: dict[str, float] = {}
    for name, got in values.items():
        node = by_name[name]
        if node.op == "Placeholder":
            continue
        want = np_node(node, [as_np(i) for i in node.inputs],
                       lambda i, node=node: as_np(node.inputs[i]))
        pairs = zip(got, want, strict=True) if isinstance(got, tuple) else [(got, want)]
        for g, w in pairs:
            g = g.numpy()
            assert g.shape == np.shape(w), name
            if g.dtype.kind in "biu":
                np.testing.assert_array_equal(g, w, err_msg=name)
            else:
                err = float(np.max(np.abs(g - w)) / max(1.0, float(np.max(np.abs(w)))))
                worst[node.op] = max(worst.get(node.op, 0.0), err)
                assert err < 1e-5, (name, err)
    assert {"_FusedConv2D", "ResizeBilinear", "MaxPool", "TopKV2", "Mean"} <= set(worst)


@pytest.mark.e2e
def test_whole_graph_matches_numpy_on_a_real_image(centernet_graph, detector, pictures):
    img, *_ = letterbox(pictures["motorcycle"])
    outs = ["tower_0/keypoints", "tower_0/wh", "tower_0/detections"]
    want = np_eval_graph(centernet_graph, img.astype(np.float32)[None], outs)
    with torch.no_grad():
        got = {k: v.numpy() for k, v in detector.run(nchw(img)).items()}
    np.testing.assert_allclose(got["tower_0/keypoints"], want["tower_0/keypoints"], atol=1e-4)
    np.testing.assert_allclose(got["tower_0/wh"], want["tower_0/wh"], atol=2e-3, rtol=1e-4)
    g, w = got["tower_0/detections"][0], want["tower_0/detections"][0]
    confident = w[:, 4] > 0.05
    assert confident.sum() >= 5
    n = int(confident.sum())
    np.testing.assert_array_equal(g[:n, 5], w[:n, 5])                 # classes
    np.testing.assert_allclose(g[:n, 4], w[:n, 4], atol=1e-4)        # scores
    np.testing.assert_allclose(g[:n, :4], w[:n, :4], atol=5e-3)      # boxes (pixels)


def _best(det: np.ndarray, cls: int) -> np.ndarray:
    rows = det[det[:, 5] == cls]
    return rows[np.argmax(rows[:, 4])]


@pytest.mark.e2e
def test_real_pictures_are_detected(detector, pictures, capsys):
    labels = LABELS_80.read_text().splitlines()
    out = {}
    for name, cls_name, min_score in [("astronaut", "person", 0.5), ("coffee", "cup", 0.5),
                                      ("motorcycle", "motorcycle", 0.6)]:
        img, s, top, left = letterbox(pictures[name])
        with torch.no_grad():
            det = detector.run(nchw(img))["tower_0/detections"][0].numpy()
        assert det.shape == (100, 6)
        assert np.all(np.diff(det[:, 4]) <= 0)  # best first
        best = _best(det, labels.index(cls_name))
        x1, y1, x2, y2, score, _ = best
        out[name] = (cls_name, round(float(score), 3), [round(float(v)) for v in best[:4]])
        assert score >= min_score, out[name]
        # a box in input pixels, on the picture's content (not the letterbox bars)
        h, w = pictures[name].shape[:2]
        assert x1 < x2 and y1 < y2
        assert -16 <= x1 and x2 <= SIZE + 16 and top - 16 <= y1 and y2 <= top + h * s + 16
        area = (x2 - x1) * (y2 - y1) / (w * h * s * s)
        assert area > {"astronaut": 0.3, "coffee": 0.1, "motorcycle": 0.3}[name], area
        # the strongest detection of the whole picture is the expected class
        assert labels[int(det[0, 5])] == cls_name
    with capsys.disabled():
        print(f"\ncenternet scores: {out}")


@pytest.mark.e2e
def test_nhwc_and_nchw_inputs_agree(centernet_graph, detector, pictures):
    img, *_ = letterbox(pictures["astronaut"])
    nhwc = tfjs.TFJSGraphModule(centernet_graph, ["tower_0/detections"]).eval()
    with torch.no_grad():
        a = nhwc(torch.from_numpy(img)[None].float())
        b = detector.run(nchw(img))["tower_0/detections"]
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.e2e
def test_torchscript_and_export_round_trips(centernet_json, pictures, tmp_path):
    written = tfjs.convert(centernet_json, tmp_path, name="centernet",
                           outputs=["tower_0/detections"])
    assert sorted(p.name for p in written) == ["centernet.pt2", "centernet.ts"]
    assert tfjs.convert(centernet_json, tmp_path, name="centernet",
                        outputs=["tower_0/detections"]) == []  # up to date: skipped
    eager = tfjs.load_module(centernet_json, ["tower_0/detections"], channels_first=True)
    img, *_ = letterbox(pictures["motorcycle"])
    x = nchw(img)
    with torch.no_grad():
        want = eager(x)
        ts = torch.jit.load(str(tmp_path / "centernet.ts"))(x)
        pt2 = torch.export.load(str(tmp_path / "centernet.pt2")).module()(x)
    assert want.shape == (1, 100, 6)
    torch.testing.assert_close(ts, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pt2, want, atol=1e-5, rtol=0)


def test_labels_are_torchvision_coco_without_background_and_na(centernet_json):
    labels = LABELS_80.read_text().splitlines()
    coco91 = (LABELS_DIR / "coco_91cl_bkgr.txt").read_text().splitlines()
    assert labels == [c for c in coco91 if c not in ("__background__", "N/A")]
    assert len(labels) == 80
    # ... and in the order of the package's own label table (in the cached tarball)
    if not (CACHE_DIR / TARBALL).is_file():
        pytest.skip(f"{TARBALL} was removed from {CACHE_DIR} after extraction")
    with tarfile.open(CACHE_DIR / TARBALL) as tar:
        src = tar.extractfile("package/src/object/labels.ts").read().decode()
    assert re.findall(r"label: '([^']+)'", src) == labels


# ------------------------------------------------------------------------------------------
# the real MoveNet Lightning graph (one person's 17 keypoints)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def movenet_graph() -> tfjs.TFJSGraph:
    try:
        return tfjs.load_graph(fetch(CACHE_DIR, "movenet-lightning").model_json)
    except FetchError as e:
        if e.unavailable:
            pytest.skip(str(e))
        raise


@pytest.mark.e2e
def test_movenet_matches_numpy_on_a_real_frame(movenet_graph):
    """The ops it adds (ArgMax, GatherNd, Sqrt, SquaredDifference, Unpack; control edges
    skipped) against numpy, on a bikes.mp4 frame with a cyclist, letterboxed to 192."""
    from tests.conftest import BIKES
    from tests.helpers import decode_frames

    assert {"ArgMax", "GatherNd", "Sqrt", "SquaredDifference", "Unpack"} <= set(
        movenet_graph.ops())
    frame = decode_frames(BIKES, 1, start=120)[0]
    h, w = frame.shape[:2]
    scale = 192 / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    img = np.zeros((192, 192, 3), np.uint8)
    top = (192 - nh) // 2
    img[top:top + nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    module = tfjs.TFJSGraphModule(movenet_graph, channels_first=True).eval()
    [out] = movenet_graph.outputs
    want = np_eval_graph(movenet_graph, img.astype(np.int32)[None], [out])[out]
    with torch.no_grad():
        got = module(nchw(img)).numpy()
    assert got.shape == want.shape == (1, 1, 17, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert float(got[0, 0, :, 2].mean()) > 0.4  # the cyclist is found: a confident pose
