"""tensor_resize_crop against torchvision's reference transforms, on real frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import functional as F

from tests.conftest import COCKATOO, IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import decode_frames, run_pipeline
from torchstream.errors import ConfigError
from torchstream.preprocess.resize import ResizeSpec, parse_size


def resize_pipeline(props: str) -> str:
    return ("appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
            f"tensor_resize_crop {props} ! appsink name=sink")


def chw(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))


def test_shorter_side_and_centre_crop_equal_torchvision(bikes_frames):
    run = run_pipeline(resize_pipeline("size=256 crop=224"), bikes_frames[:4])
    assert run.result.ok, run.error
    assert 'dimensions=(string)"224:224:3"' in run.outputs[0].caps or \
        "dimensions=(string)224:224:3" in run.outputs[0].caps
    for out, frame in zip(run.outputs, bikes_frames, strict=False):
        ref = F.center_crop(F.resize(chw(frame), [256], antialias=True), [224]).numpy()
        assert np.array_equal(out.arrays[0], ref)


@pytest.mark.parametrize(("props", "shape"), [
    ("size=100x50 mode=no-aspect-ratio", (3, 50, 100)),
    ("size=128 mode=letterbox", (3, 128, 128)),
    ("size=300", (3, 300, 705)),
    ("crop=64x32", (3, 32, 64)),
])
def test_output_shapes_follow_the_properties(bikes_frames, props, shape):
    run = run_pipeline(resize_pipeline(props), bikes_frames[:2])
    assert run.result.ok, run.error
    assert run.outputs[0].arrays[0].shape == shape


def test_letterbox_keeps_the_picture_centred(bikes_frames):
    frame = bikes_frames[0]  # 640x272
    run = run_pipeline(resize_pipeline("size=320 mode=letterbox"), [frame])
    assert run.result.ok, run.error
    out = run.outputs[0].arrays[0]
    inner = F.resize(chw(frame), [136, 320], antialias=True).numpy()
    top = (320 - 136) // 2
    assert np.array_equal(out[:, top:top + 136], inner)
    assert out[:, :top].max() == 0 and out[:, top + 136:].max() == 0


def test_bad_properties_are_errors(bikes_frames):
    with pytest.raises(ConfigError, match="'size'"):
        parse_size("12y4", "size")
    with pytest.raises(ConfigError, match="'mode'"):
        ResizeSpec(size=(10,), mode="stretch")
    run = run_pipeline(resize_pipeline("size=abc"), bikes_frames[:1], timeout=30)
    assert not run.result.ok and "'size'" in run.error


def test_chain_equals_the_weights_reference_transform(mobilenet_weights):
    """Resize 256 + centre crop 224 + ImageNet normalisation: the same probabilities as
    torchvision's ``weights.transforms()`` and the same model, frame by frame."""
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    model.eval()
    frames = decode_frames(COCKATOO, 12, start=195)
    run = run_pipeline(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        "tensor_resize_crop size=256 crop=224 ! "
        f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD} ! "
        "pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights} ! appsink name=sink",
        frames,
    )
    assert run.result.ok, run.error
    transform = weights.transforms()
    with torch.inference_mode():
        reference = model(torch.stack([transform(chw(f)) for f in frames])).softmax(-1).numpy()
    got = torch.from_numpy(np.stack([o.arrays[0] for o in run.outputs])).softmax(-1).numpy()
    assert np.array_equal(got.argmax(-1), reference.argmax(-1))
    assert np.abs(got - reference).max() <= 1e-4
    categories = weights.meta["categories"]
    assert categories[int(got[5].argmax())] == "sulphur-crested cockatoo"  # frame 200


def recorded_mappings(props: str, frames) -> list:
    """The frame mapping on each buffer leaving ``tensor_resize_crop props``."""
    from tests.results_helpers import run_results
    from torchstream.gst.meta import read_frame_mapping

    seen: list = []
    run = run_results(
        "appsrc name=src ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        f"tensor_resize_crop {props} ! test_meta_writer name=spy ! appsink name=sink",
        frames, writers={"spy": lambda buf, _i: seen.append(read_frame_mapping(buf))})
    assert run.result.ok, run.error
    return seen


@pytest.mark.parametrize(("props", "spec"), [
    ("size=128 mode=letterbox", ResizeSpec(size=(128,), mode="letterbox")),
    ("size=256 crop=224", ResizeSpec(size=(256,), crop=(224,))),
    ("crop=64x32", ResizeSpec(crop=(32, 64))),
])
def test_crops_and_letterboxes_record_where_the_picture_went(bikes_frames, props, spec):
    mappings = recorded_mappings(props, bikes_frames[:2])
    assert mappings == [spec.mapping(272, 640)] * 2
    assert not mappings[0].is_identity


@pytest.mark.parametrize("props", ["size=300", "size=100x50 mode=no-aspect-ratio"])
def test_plain_resizes_record_nothing(bikes_frames, props):
    """A resize scales the whole picture: normalised coordinates do not change."""
    assert recorded_mappings(props, bikes_frames[:2]) == [None, None]


def test_letterbox_mapping_puts_the_picture_where_apply_put_it(bikes_frames):
    """The frame's corners, mapped into the letterboxed tensor, are the picture's corners
    there (torchvision's rounding of 640x272 * 0.5 = 320x136, 92 rows of padding above)."""
    spec = ResizeSpec(size=(320,), mode="letterbox")
    m = spec.mapping(272, 640)
    top_left = ((0 - m.ox) / m.sx * 320, (0 - m.oy) / m.sy * 320)
    bottom_right = ((1 - m.ox) / m.sx * 320, (1 - m.oy) / m.sy * 320)
    assert top_left == pytest.approx((0, 92)) and bottom_right == pytest.approx((320, 228))
    out = spec.apply(chw(bikes_frames[0])).numpy()
    assert out[:, :92].max() == 0 and out[:, 228:].max() == 0
    assert out[:, 92].max() > 0 and out[:, 227].max() > 0


# --- ResizeSpec.apply computes only the crop's pixels: bit for bit torchvision's result ---

def reference(image: torch.Tensor, spec: ResizeSpec) -> torch.Tensor:
    """torchvision's own resize + centre crop for ``spec`` (what a classifier's transform does)."""
    shorter_side = spec.mode == "aspect-ratio" and len(spec.size) == 1
    size = [spec.size[0]] if shorter_side else list(spec.resized_hw(*image.shape[1:]))
    mode = F.InterpolationMode(spec.interpolation)
    return F.center_crop(F.resize(image, size, interpolation=mode, antialias=spec.antialias),
                         list(spec.crop))


def random_image(rng: np.random.Generator, c: int, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, 256, (c, h, w), dtype=np.uint8))


def sweep_cases(n: int, seed: int = 20240607) -> list[tuple]:
    """(channels, h, w, spec) drawn at random: sizes 1..800 (odd ones, portrait and landscape),
    down- and upscaling, shorter side, exact box or fitted box, crops from 1 pixel to the whole
    picture."""
    rng = np.random.default_rng(seed)
    cases: list[tuple] = []
    while len(cases) < n:
        c, h, w = int(rng.choice([1, 3, 4])), int(rng.integers(1, 801)), int(rng.integers(1, 801))
        interpolation = ("bilinear", "bicubic")[len(cases) % 2]
        draw = rng.random()
        if draw < 0.45:
            size, mode = (int(rng.integers(1, 400)),), "aspect-ratio"
            if size[0] * max(h, w) / min(h, w) > 2000:
                continue
        else:
            size = (int(rng.integers(1, 500)), int(rng.integers(1, 500)))
            mode = "no-aspect-ratio" if draw < 0.9 else "aspect-ratio"
        rh, rw = ResizeSpec(size=size, mode=mode).resized_hw(h, w)
        crop = tuple(int(rng.integers(1, n_ + 1)) if rng.random() < 0.8 else n_ for n_ in (rh, rw))
        cases.append((c, h, w, ResizeSpec(size=size, mode=mode, crop=crop,
                                          interpolation=interpolation)))
    return cases


@pytest.mark.parametrize(("c", "h", "w", "spec"), sweep_cases(160))
def test_resize_and_crop_equal_torchvision_bit_for_bit(c, h, w, spec):
    image = random_image(np.random.default_rng(h * 1000 + w), c, h, w)
    out = spec.apply(image)
    assert out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), reference(image, spec).numpy())


EDGE_GEOMETRIES = [
    # (h, w, resized h, resized w): the classifier's frames, one axis only, upscaling by a
    # hair (torch would skip a pass of unchanged length), 1-pixel pictures
    (272, 640, 256, 602), (720, 1280, 256, 455), (256, 300, 256, 200), (300, 256, 100, 256),
    (191, 530, 192, 445), (400, 400, 401, 399), (50, 70, 256, 358), (1, 5, 9, 4), (7, 1, 3, 40),
    (3, 3, 1, 1), (2, 640, 256, 602),
]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("h", "w", "rh", "rw"), EDGE_GEOMETRIES)
def test_edge_geometries_equal_torchvision(h, w, rh, rw, interpolation):
    image = random_image(np.random.default_rng(h + w), 3, h, w)
    crops = {(rh, rw), (1, 1), (1, rw), (rh, 1), (max(1, rh - 1), max(1, rw - 1)),
             (min(rh, 224), min(rw, 224))}
    for crop in sorted(crops):
        spec = ResizeSpec(size=(rh, rw), mode="no-aspect-ratio", crop=crop,
                          interpolation=interpolation)
        assert np.array_equal(spec.apply(image).numpy(), reference(image, spec).numpy()), crop


def test_views_and_channels_last_inputs_equal_torchvision():
    """A region of a frame (as the roi elements pass it) and an HWC array seen as CHW."""
    rng = np.random.default_rng(5)
    frame = random_image(rng, 3, 500, 700)
    hwc = torch.from_numpy(rng.integers(0, 256, (272, 640, 3), dtype=np.uint8))
    spec = ResizeSpec(size=(256,), crop=(224,))
    for image in (frame[:, 37:400, 51:650], hwc.permute(2, 0, 1), hwc.permute(2, 0, 1)[:, 9:, 5:]):
        assert np.array_equal(spec.apply(image).numpy(), reference(image, spec).numpy())


def test_the_classifier_transform_does_not_resize_the_whole_frame(monkeypatch):
    image = random_image(np.random.default_rng(1), 3, 272, 640)
    spec = ResizeSpec(size=(256,), crop=(224,))
    want = reference(image, spec)

    def whole_frame(*_args, **_kwargs):
        raise AssertionError("the whole frame was resized")

    monkeypatch.setattr(F, "resize", whole_frame)
    assert np.array_equal(spec.apply(image).numpy(), want.numpy())
    with pytest.raises(AssertionError, match="whole frame"):  # letterbox: torchvision's path
        ResizeSpec(size=(128,), mode="letterbox", crop=(100,)).apply(image)


@pytest.mark.parametrize("spec", [
    ResizeSpec(size=(100,), crop=(120, 300)),  # crop larger than the picture: zero padding
    ResizeSpec(size=(256,), crop=(224,), interpolation="nearest"),
    ResizeSpec(size=(256,), crop=(224,), antialias=False),
    ResizeSpec(size=(256,), crop=(224,), interpolation="bicubic", antialias=False),
])
def test_specs_left_to_torchvision_still_equal_it(spec):
    image = random_image(np.random.default_rng(2), 3, 272, 640)
    assert np.array_equal(spec.apply(image).numpy(), reference(image, spec).numpy())
