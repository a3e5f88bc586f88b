"""opencv_tensor_normalize: ((x/255)*(max-min)+min - mean[c]) / std[c], unit and in a pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.harness import Harness
from tests.helpers import run_pipeline
from torchstream.caps import TensorInfo, TensorsConfig, parse_caps_string
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.gst import Gst
from torchstream.preprocess.normalize import NormalizeParams, Normalizer
from torchstream.props import parse_float_list

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def reference(x: np.ndarray, rng, mean, std, axis: int | None) -> np.ndarray:
    """The formula in float64, channel values broadcast along ``axis``."""
    lo, hi = rng
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        mean = np.broadcast_to(mean, (x.shape[axis],)).reshape(shape)
        std = np.broadcast_to(std, (x.shape[axis],)).reshape(shape)
    return ((x.astype(np.float64) / 255.0) * (hi - lo) + lo - mean) / std


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-6, relative once values pass 1 (float32 holds ~7 significant digits)."""
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected) / np.maximum(1.0, np.abs(expected))
    assert err.max() <= 1e-6, f"max error {err.max()}"


def normalize(x: np.ndarray, params: NormalizeParams) -> np.ndarray:
    out = np.full(x.shape, np.nan, np.float32)
    Normalizer(params, x.shape)(x, out)
    return out


def random_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def every_value(shape_of_channel_last: bool, channels: int = 3) -> np.ndarray:
    """All 256 byte values in every channel, in a different order per channel."""
    ramp = np.stack([np.roll(np.arange(256, dtype=np.uint8), 37 * c) for c in range(channels)])
    chw = ramp.reshape(channels, 16, 16)
    return np.ascontiguousarray(chw.transpose(1, 2, 0)) if shape_of_channel_last else chw


RANGES = [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]


@pytest.mark.parametrize("rng", RANGES)
@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_per_channel_matches_formula_on_random_data(rng, layout):
    x = random_u8((3, 37, 53), seed=1)
    axis = 0
    if layout == "HWC":
        x, axis = np.ascontiguousarray(x.transpose(1, 2, 0)), 2
    params = NormalizeParams(range=rng, mean=MEAN, std=STD)
    assert_close(normalize(x, params), reference(x, rng, MEAN, STD, axis))


@pytest.mark.parametrize("rng", RANGES)
@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_every_byte_value_in_every_channel(rng, layout):
    x = every_value(layout == "HWC")
    axis = 2 if layout == "HWC" else 0
    params = NormalizeParams(range=rng, mean=MEAN, std=STD)
    assert_close(normalize(x, params), reference(x, rng, MEAN, STD, axis))


def test_channel_order_is_respected():
    """Each channel gets its own mean/std: a constant image gives three distinct planes."""
    x = np.full((3, 4, 5), 200, np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.5, 0.25, 2.0)
    out = normalize(x, NormalizeParams(mean=mean, std=std))
    for c in range(3):
        assert np.allclose(out[c], (200 / 255 - mean[c]) / std[c], atol=1e-6, rtol=0)
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
    out = normalize(hwc, NormalizeParams(mean=mean, std=std))
    for c in range(3):
        assert np.allclose(out[..., c], (200 / 255 - mean[c]) / std[c], atol=1e-6, rtol=0)


@pytest.mark.parametrize("rng", RANGES)
@pytest.mark.parametrize("shape", [(3, 20, 30), (20, 30, 3), (20, 30, 4), (1, 20, 30), (50,)])
def test_single_value_mean_and_std(rng, shape):
    x = random_u8(shape, seed=2)
    params = NormalizeParams(range=rng, mean=(0.5,), std=(0.25,))
    assert_close(normalize(x, params), reference(x, rng, 0.5, 0.25, None))


def test_every_byte_value_single_channel():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for rng in RANGES:
        params = NormalizeParams(range=rng, mean=(0.2,), std=(3.0,))
        assert_close(normalize(x, params), reference(x, rng, 0.2, 3.0, None))


def test_defaults_only_scale_to_unit_range():
    x = every_value(False)
    assert_close(normalize(x, NormalizeParams()), x.astype(np.float64) / 255.0)


def test_one_mean_with_per_channel_std():
    x = random_u8((3, 10, 12), seed=3)
    params = NormalizeParams(range=(-1.0, 1.0), mean=(0.5,), std=STD)
    assert_close(normalize(x, params), reference(x, (-1.0, 1.0), (0.5,) * 3, STD, 0))


def test_four_channel_packed_with_four_values():
    x = random_u8((9, 11, 4), seed=4)
    mean, std = (0.1, 0.2, 0.3, 0.4), (0.5, 0.6, 0.7, 0.8)
    params = NormalizeParams(range=(0.0, 1.0), mean=mean, std=std)
    assert_close(normalize(x, params), reference(x, (0.0, 1.0), mean, std, 2))


def test_batched_nchw():
    x = random_u8((2, 3, 8, 10), seed=5)
    params = NormalizeParams(mean=MEAN, std=STD)
    assert_close(normalize(x, params), reference(x, (0.0, 1.0), MEAN, STD, 1))


def test_channel_count_mismatch_is_an_error():
    with pytest.raises(TorchstreamError, match="channel"):
        Normalizer(NormalizeParams(mean=MEAN, std=STD), (4, 10, 10))


@pytest.mark.parametrize(
    "kwargs, prop",
    [({"std": (0.2, 0.0, 0.3)}, "std"), ({"mean": (1.0, 2.0), "std": (1.0, 2.0, 3.0)}, "mean"),
     ({"range": (0.0,)}, "range")],
)
def test_bad_params_name_the_property(kwargs, prop):
    with pytest.raises(ConfigError, match=f"'{prop}'"):
        NormalizeParams(**kwargs)


# --- property strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, values",
    [
        ("<0.485,0.456,0.406>", (0.485, 0.456, 0.406)),
        ("[1,2]", (1.0, 2.0)),
        ("1,2", (1.0, 2.0)),
        ("<0,1>", (0.0, 1.0)),
        ("<-1, 1>", (-1.0, 1.0)),
        (" < 0.5 > ", (0.5,)),
        ("255", (255.0,)),
        ("(1e-3,2.5E2)", (0.001, 250.0)),
    ],
)
def test_parse_float_list(text, values):
    assert parse_float_list(text, "mean") == values


@pytest.mark.parametrize(
    "text", ["<a,b>", "<1,,2>", "<1,2,>", "<>", "", "   ", "<nan,1>", "<1,inf>", "<0.5 0.2>",
             "<1,2]", "1,2>", "<<1,2>>", "<1_0>"]
)
@pytest.mark.parametrize("prop", ["mean", "std", "range"])
def test_bad_float_lists_name_the_property(text, prop):
    with pytest.raises(ConfigError, match=f"'{prop}'"):
        parse_float_list(text, prop)


def test_non_string_property_value_names_the_property():
    with pytest.raises(ConfigError, match="'std'"):
        parse_float_list(None, "std")  # type: ignore[arg-type]


# --- in a pipeline ---------------------------------------------------------------------------


def tee_pipeline(fmt: str, props: str) -> str:
    return (
        f"appsrc name=src ! videoconvert ! video/x-raw,format={fmt} ! tensor_convert ! "
        "tee name=t ! queue ! appsink name=raw  t. ! queue ! "
        f"opencv_tensor_normalize {props} ! appsink name=sink"
    )


IMAGENET = f"range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD}"


@pytest.mark.parametrize("fmt, axis, dims", [("RGBP", 0, "640:272:3"), ("RGB", 2, "3:640:272")])
def test_pipeline_output_is_the_formula_on_the_raw_tensor(bikes_frames, fmt, axis, dims):
    run = run_pipeline(tee_pipeline(fmt, IMAGENET), bikes_frames, sinks=("sink", "raw"), timeout=30)
    assert run.result.ok, run.error
    raw, out = run.per_sink["raw"], run.per_sink["sink"]
    assert len(raw) == len(out) == len(bikes_frames)
    assert [o.pts for o in out] == [r.pts for r in raw]
    in_caps = parse_caps_string(raw[0].caps)
    out_caps = parse_caps_string(out[0].caps)
    assert in_caps.types_string == "uint8" and out_caps.types_string == "float32"
    assert in_caps.dimensions_string == out_caps.dimensions_string == dims
    for r, o in zip(raw, out, strict=True):
        (x,), (y,) = r.arrays, o.arrays
        assert x.dtype == np.uint8
        assert_close(y, reference(x, (0.0, 1.0), MEAN, STD, axis))
    # the data are real frames, not a constant: the output spans the normalised range
    assert out[0].arrays[0].min() < -1.5 and out[0].arrays[0].max() > 2.0


def planar(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


def tensor_caps(*shapes: tuple[int, ...], dtype: str = "uint8") -> str:
    return TensorsConfig(tuple(TensorInfo(dtype, shape) for shape in shapes)).to_caps_string()


@pytest.mark.parametrize("rng", ["<-1,1>", "<0,255>"])
def test_other_ranges(bikes_frames, rng):
    """The element alone (a harness): tensors in, the formula out, timestamps kept."""
    harness = Harness("opencv_tensor_normalize", range=rng, mean="<0.5>", std="<0.25>")
    frames = [planar(f) for f in bikes_frames[:3]]
    assert harness.start(tensor_caps(frames[0].shape)), harness.error()
    for frame in frames:
        assert harness.push(frame) == Gst.FlowReturn.OK, harness.error()
    lo, hi = parse_float_list(rng, "range")
    for i, frame in enumerate(frames):
        out = harness.pull()
        assert out.pts == i * Gst.SECOND // 25
        (y,) = harness.arrays(out)
        assert_close(y, reference(frame, (lo, hi), 0.5, 0.25, None))
    assert parse_caps_string(harness.out_caps.to_string()).types_string == "float32"
    harness.stop()


@pytest.mark.parametrize(
    "props, name",
    [("mean=<a,b>", "mean"), ("std=<0.2,0,0.3>", "std"), ("range=<0>", "range"),
     ("range=<0,x>", "range"), ("std=<1,2>", "std")],
)
def test_bad_property_stops_the_pipeline_with_an_error(bikes_frames, props, name):
    run = run_pipeline(tee_pipeline("RGBP", props), bikes_frames, sinks=("sink", "raw"),
                       timeout=10)
    assert not run.result.ok
    assert not run.result.timed_out, run.error
    assert run.error is not None and f"'{name}'" in run.error, run.error
    assert "opencv_tensor_normalize" in run.error or "opencvtensornormalize" in run.error
    assert run.per_sink["sink"] == []


def test_mean_with_wrong_channel_count_for_the_tensor_is_an_error():
    harness = Harness("opencv_tensor_normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    accepted = harness.start(tensor_caps((4, 8, 8)))
    flow = harness.push(np.zeros((4, 8, 8), np.uint8)) if accepted else None
    assert not accepted or flow != Gst.FlowReturn.OK
    assert "channel" in (harness.error() or ""), harness.error()
    assert harness.buffers == []
    harness.stop()


@pytest.mark.parametrize("props", ["range=<0>", "mean=<a,b>"])
def test_bad_property_is_a_settings_error(props):
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers=2 ! video/x-raw,format=RGBP,width=32,height=16 ! "
        f"tensor_convert ! opencv_tensor_normalize {props} ! fakesink"
    )
    try:
        pipeline.set_state(Gst.State.PLAYING)
        msg = pipeline.get_bus().timed_pop_filtered(
            10 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS
        )
        assert msg is not None and msg.type == Gst.MessageType.ERROR
        err, debug = msg.parse_error()
        assert err.matches(Gst.LibraryError.quark(), Gst.LibraryError.SETTINGS), err.message
        assert props.split("=")[0] in err.message
        assert debug  # the traceback travels as the debug detail
    finally:
        pipeline.set_state(Gst.State.NULL)


@pytest.mark.parametrize("mean, std", [((0.5,), (0.25,)), (MEAN, STD)])
def test_strided_views_in_and_out(mean, std):
    """Views (a crop of a frame, a transposed output) are read and written in place."""
    frame = random_u8((3, 40, 60), seed=6)
    src = frame[:, 5:25, 10:40]  # not contiguous
    out = np.full((30, 20, 3), np.nan, np.float32)
    dst = out.transpose(2, 1, 0)  # shape (3, 20, 30), not contiguous
    assert not src.flags.c_contiguous and not dst.flags.c_contiguous
    Normalizer(NormalizeParams(mean=mean, std=std), src.shape)(src, dst)
    assert_close(dst, reference(src, (0.0, 1.0), mean, std, 0))

    hwc = np.ascontiguousarray(frame.transpose(1, 2, 0))[5:25, 10:40]
    big = np.full((20, 30, 4), np.nan, np.float32)
    Normalizer(NormalizeParams(mean=mean, std=std), hwc.shape)(hwc, big[..., :3])
    assert_close(big[..., :3], reference(hwc, (0.0, 1.0), mean, std, 2))
    assert np.isnan(big[..., 3]).all()


def test_wrong_arrays_are_refused():
    normalizer = Normalizer(NormalizeParams(), (3, 4, 5))
    with pytest.raises(ValueError, match="shape"):
        normalizer(np.zeros((3, 4, 6), np.uint8), np.zeros((3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="float32"):
        normalizer(np.zeros((3, 4, 5), np.uint8), np.zeros((3, 4, 5), np.float64))
