"""What the inference bins build: the element chain for a model, GStreamer-free.

``video_inference``, ``object_detect`` and ``object_classify`` are processbins whose stages come
from :func:`plan_chain`: a list of :class:`Step` (element factory name and property values) per
stage, decided from the model string, its torchvision weights and an optional model-proc file.
Keeping the decision here makes it testable without a pipeline and keeps the element shells to
the GStreamer plumbing.

Default preprocessing (a model-proc file overrides any of it):

- a torchvision classifier: RGB, the weights' own transform (shorter side to ``resize_size``,
  centre crop ``crop_size``, [0, 1], the weights' mean/std), as ``weights.transforms()`` does;
- a torchvision detector: the full frame as RGB [0, 1] (the model resizes internally);
- a torchvision clip model (``torchvision.models.video.*``): each frame as its weights'
  ``VideoClassification`` does (exact resize, no antialiasing, centre crop, mean/std), then
  ``tensor_sliding_window`` stacks ``clip-length`` frames into one ``[C,T,H,W]`` clip;
- a timm classifier (``timm.<architecture>``): timm's own evaluation transform for it
  (``resolve_model_data_config``: shorter side to size / crop_pct, centre crop, its
  interpolation and mean/std);
- a model file: the full frame as RGB [0, 1], no resize (give a model-proc for anything else;
  a model-proc that resizes without a size takes it from the file's fixed input shape).

A classifier is always labelled: by its class names when they are known (published weights,
the checkpoint, a ``labels.txt`` beside the file), else by class id. A model file's output is
labelled when it turns out to be class scores, and said to be left raw when it is not.

With ``inference-region=roi-list`` (object_classify's default) the classifier sees each selected
region cropped from the full-resolution frame (``tensor_roi_crop``), all regions of a frame in
one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torchstream.errors import ConfigError
from torchstream.model.engines import OPENVINO_MODEL_SUFFIXES, refuse_graph_mode
from torchstream.model.loading import (
    MODEL_FILE_SUFFIXES,
    TIMM_PREFIX,
    TORCHVISION_PREFIX,
    ClassifierPreprocess,
    classifier_preprocess,
    is_factory_name,
    is_timm_name,
    is_torchvision_name,
    model_file_input_size,
    timm_preprocess,
    torchvision_weights_for,
)
from torchstream.model.sharing import DEFAULT_TIMEOUT_MS
from torchstream.plan.modelproc import (
    COLOR_FORMATS,
    InputPreproc,
    ModelProc,
    OutputPostproc,
    load_model_proc,
)
from torchstream.preprocess.clips import DEFAULT_CLIP_LENGTH, is_clip_model, weights_clip_length
from torchstream.props import launch_element

KINDS = ("video_inference", "object_detect", "object_classify")
REGIONS = ("full-frame", "roi-list")


@dataclass(frozen=True)
class Step:
    """One element of a stage: its factory name and the properties to set on it."""

    factory: str
    props: dict = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Chain:
    """The stages of a processbin; ``postprocess`` may be empty (raw tensors attached)."""

    preprocess: tuple[Step, ...]
    process: tuple[Step, ...]
    postprocess: tuple[Step, ...]
    skip_interval: int = 1  # the inference branch sees one frame in this many
    repeat: bool = False  # results of the last inferred frame go on the skipped frames


@dataclass(frozen=True)
class Geometry:
    """How the frame becomes the model input: resize mode, sizes, interpolation."""

    mode: str  # "none", "aspect-ratio", "no-aspect-ratio", "letterbox"
    size: str = ""  # tensor_resize_crop's size syntax: "N" or "WxH"
    crop: str = ""
    interpolation: str = "bilinear"
    antialias: bool = True
    padding: str = ""  # letterbox: tensor_resize_crop's padding (XxY) and fill
    fill: str = ""


def launch_text(steps: Sequence[Step]) -> str:
    """Steps as gst-launch-1.0 text that runs as it reads (:func:`props.launch_element`);
    "none" for no steps."""
    return " ! ".join(launch_element(step.factory, step.props) for step in steps) or "none"


def backend_of(model: str | None) -> str:
    """The inference element that runs ``model``: pytorch_tensor_inference for torchvision
    names and PyTorch files, openvino_tensor_inference for OpenVINO IR and ONNX files (as DL
    Streamer's bins choose by the file); anything else is refused with the kinds there are."""
    if not model:
        raise ConfigError("property 'model' is not set (a torchvision.models.* name or a "
                          "model file)")
    suffix = Path(model).suffix.lower()
    if is_factory_name(model) or suffix in MODEL_FILE_SUFFIXES:
        return "pytorch_tensor_inference"
    if suffix in OPENVINO_MODEL_SUFFIXES:
        return "openvino_tensor_inference"
    kinds = ", ".join((TORCHVISION_PREFIX + "*", TIMM_PREFIX + "*") + MODEL_FILE_SUFFIXES)
    raise ConfigError(f"property 'model': no inference backend for '{model}'; supported: "
                      f"{kinds} (pytorch_tensor_inference), "
                      f"{', '.join(OPENVINO_MODEL_SUFFIXES)} (openvino_tensor_inference)")


def _refuse_pytorch_settings(model: str, settings: dict) -> None:
    """What only PyTorch models take, set for an OpenVINO file: an error, not ignored."""
    if settings.get("model-weights"):
        raise ConfigError(f"property 'model-weights' applies to torchvision factories; "
                          f"'{model}' is an OpenVINO model file that carries its own weights")
    if (settings.get("device") or "cpu").strip().lower() != "cpu":
        raise ConfigError(f"property 'device': OpenVINO model files run on the CPU here, "
                          f"got {settings['device']!r}")
    if (settings.get("engine") or "auto").strip().lower() != "auto":
        raise ConfigError(f"property 'engine' applies to PyTorch models; '{model}' runs "
                          "in OpenVINO (openvino_tensor_inference)")


def is_detector(model: str) -> bool:
    return model.startswith(TORCHVISION_PREFIX + "detection.")


def is_segmentation(model: str) -> bool:
    return model.startswith(TORCHVISION_PREFIX + "segmentation.")


def _size_text(size: tuple[int, ...] | None) -> str:
    """(n,) -> "n"; (h, w) -> "wxh" (tensor_resize_crop's WxH)."""
    if not size:
        return ""
    return str(size[0]) if len(size) == 1 else f"{size[1]}x{size[0]}"


def _vector(values) -> str:
    return "<" + ",".join(repr(float(v)) for v in values) + ">"


def plan_chain(kind: str, settings: dict) -> Chain:
    """The chain a bin of ``kind`` builds from its property values (``settings``, keyed by
    property name)."""
    if kind not in KINDS:
        raise ValueError(kind)
    model = settings.get("model")
    refuse_graph_mode(settings.get("graph-mode"))
    backend = backend_of(model)
    region = settings.get("inference-region") or "full-frame"
    if region not in REGIONS:
        raise ConfigError(f"property 'inference-region' must be one of {', '.join(REGIONS)}, "
                          f"got {region!r}")
    if region == "roi-list" and kind != "object_classify":
        raise ConfigError(f"{kind}: inference-region=roi-list is not supported yet (only "
                          "object_classify classifies regions)")
    proc = load_model_proc(settings["model-proc"]) if settings.get("model-proc") else None
    if proc is not None and len(proc.input_preproc) > 1:
        raise ConfigError(f"model-proc {proc.path}: input_preproc: models with several inputs "
                          "are not supported yet (one entry expected)")
    if is_clip_model(model) and kind != "video_inference":
        raise ConfigError(f"{kind}: {model} is a clip model (one label per clip of frames, no "
                          "regions); run it in video_inference")
    weights = None
    if is_torchvision_name(model):
        weights = torchvision_weights_for(model, settings.get("model-weights") or None)
    detector = is_detector(model)
    preproc = proc.input_preproc[0] if proc and proc.input_preproc else None
    if is_timm_name(model):
        tv = timm_preprocess(model)
    else:
        tv = classifier_preprocess(weights) if weights is not None and not detector else None
    pre = list(_preprocess(kind, region, model, weights, tv, preproc, settings))
    inference = {"model": model, "batch-size": int(settings.get("batch-size") or 1),
                 "threads": int(settings.get("threads") or 0)}
    if settings.get("cache-dir") is not None:
        inference["cache-dir"] = settings["cache-dir"]
    if settings.get("model-instance-id"):
        inference.update({"model-instance-id": settings["model-instance-id"],
                          "batch-timeout": int(settings.get("batch-timeout", DEFAULT_TIMEOUT_MS))})
    if backend == "pytorch_tensor_inference":
        inference.update({"model-weights": settings.get("model-weights") or None,
                          "device": settings.get("device") or "cpu",
                          "engine": settings.get("engine") or "auto"})
    else:
        _refuse_pytorch_settings(model, settings)
    process = (Step(backend, inference, "inference"),)
    post = _postprocess(kind, detector, proc, settings)
    interval = int(settings.get("inference-interval") or 1)
    reclassify = int(settings.get("reclassify-interval") or 1)
    if kind == "object_classify":
        interval *= reclassify
    repeat = bool(settings.get("repeat-metadata")) or (kind == "object_classify"
                                                        and reclassify > 1)
    return Chain(tuple(pre), process, post, interval, repeat)


def _geometry(model: str, tv: ClassifierPreprocess | None,
              preproc: InputPreproc | None) -> Geometry:
    if preproc is None:
        if tv is None:
            return Geometry("none")
        # one size: the shorter side (torchvision's resize); two: exactly that size
        mode = "no-aspect-ratio" if len(tv.resize_size) == 2 else "aspect-ratio"
        return Geometry(mode, _size_text(tv.resize_size), _size_text(tv.crop_size),
                        tv.interpolation, tv.antialias)
    resize_size = preproc.resize_size or (tv.resize_size if tv else None)
    crop_size = preproc.crop_size or (tv.crop_size if tv else None)
    if not resize_size and not crop_size and preproc.resize not in (None, "no") \
            and not is_factory_name(model):
        resize_size = model_file_input_size(model)  # a file with a fixed input shape
    interpolation = preproc.interpolation or (tv.interpolation if tv else "bilinear")
    where = f"model-proc: input_preproc[0].params.resize={preproc.resize!r}"
    if preproc.padding is not None and (preproc.resize != "aspect-ratio"
                                        or preproc.crop is not None):
        raise ConfigError("model-proc: input_preproc[0].params.padding applies to \"resize\": "
                          "\"aspect-ratio\" without a crop (a letterbox)")
    if preproc.crop not in (None, "central"):
        raise ConfigError(f"model-proc: input_preproc[0].params.crop={preproc.crop!r} is not "
                          "supported yet (only 'central')")
    if preproc.resize in (None, "no"):
        if preproc.crop and not crop_size:
            raise ConfigError(f"model-proc: input_preproc[0].params.crop needs params.crop_size "
                              f"for {model}")
        return Geometry("none", crop=_size_text(crop_size) if preproc.crop else "")
    if preproc.resize == "no-aspect-ratio":
        size = crop_size or resize_size
        if not size:
            raise ConfigError(f"{where} needs the model's input size: add params.crop_size "
                              f"(or use a torchvision model whose weights give it) for {model}")
        return Geometry("no-aspect-ratio", _size_text(size if len(size) == 2 else
                                                      (size[0], size[0])), "", interpolation)
    # aspect-ratio: shorter side + centre crop with a crop, otherwise fit and pad (letterbox)
    if preproc.crop == "central":
        if not resize_size or not crop_size:
            raise ConfigError(f"{where} with crop=central needs params.resize_size and "
                              f"params.crop_size (or a torchvision model whose weights give "
                              f"them) for {model}")
        return Geometry("aspect-ratio", _size_text(resize_size), _size_text(crop_size),
                        interpolation)
    size = crop_size or resize_size
    if not size:
        raise ConfigError(f"{where} needs the model's input size: add params.resize_size "
                          f"(the letterbox box) for {model}")
    padding = preproc.padding
    if padding is None:
        return Geometry("letterbox", _size_text(size), "", interpolation)
    fill = _vector(padding.fill_value) if padding.fill_value else ""
    return Geometry("letterbox", _size_text(size), "", interpolation,
                    padding=f"{padding.stride_x}x{padding.stride_y}", fill=fill)


def _preprocess(kind, region, model, weights, tv, preproc, settings):
    color = (preproc.color_space if preproc and preproc.color_space else "RGB").upper()
    if color not in COLOR_FORMATS:
        raise ConfigError(f"model-proc: input_preproc[0].params.color_space={color!r}: one of "
                          f"{', '.join(COLOR_FORMATS)}")
    yield Step("videoconvert", {}, "convert")
    yield Step("capsfilter", {"caps": f"video/x-raw,format={COLOR_FORMATS[color]}"}, "format")
    yield Step("tensor_convert", {}, "tensor")
    geometry = _geometry(model, tv, preproc)
    resize = {"size": geometry.size, "crop": geometry.crop, "interpolation":
              geometry.interpolation, "antialias": geometry.antialias}
    if geometry.padding or geometry.fill:
        resize.update(padding=geometry.padding, fill=geometry.fill)
    if geometry.mode != "none":
        resize["mode"] = geometry.mode
    if region == "roi-list":
        if not geometry.crop and geometry.mode not in ("letterbox", "no-aspect-ratio"):
            raise ConfigError(f"object_classify: the classifier's input size is unknown for "
                              f"{model}: give a model-proc with params.resize_size / crop_size")
        yield Step("tensor_roi_crop", {**resize, "object-class": settings.get("object-class")
                                       or ""}, "roi_crop")
    elif geometry.mode != "none" or geometry.crop:
        yield Step("tensor_resize_crop", resize, "resize")
    value_range = preproc.range if preproc and preproc.range else (0.0, 1.0)
    mean = preproc.mean if preproc and preproc.mean else (tv.mean if tv and not preproc
                                                           else None)
    std = preproc.std if preproc and preproc.std else (tv.std if tv and not preproc else None)
    norm = {"range": _vector(value_range)}
    if mean:
        norm["mean"] = _vector(mean)
    if std:
        norm["std"] = _vector(std)
    yield Step("opencv_tensor_normalize", norm, "normalize")
    if is_clip_model(model):
        length = int(settings.get("clip-length") or 0) or weights_clip_length(weights) \
            or DEFAULT_CLIP_LENGTH
        yield Step("tensor_sliding_window", {"length": length, "stride": int(
            settings.get("clip-stride") or 0)}, "window")


def _postprocess(kind, detector, proc: ModelProc | None, settings) -> tuple[Step, ...]:
    """The post-processing stage. A factory classifier is labelled (by name when its class
    names are known: the label post-processing finds them through the tensors record, else
    by class id); a model file's output when it is class scores."""
    post: OutputPostproc | None = proc.output_postproc[0] if proc and proc.output_postproc \
        else None
    if proc is not None and len(proc.output_postproc) > 1:
        raise ConfigError(f"model-proc {proc.path}: output_postproc: one converter is supported "
                          "yet, the file has several")
    labels = settings.get("labels") or None
    labels_file = settings.get("labels-file") or None
    if not labels and not labels_file and post is not None:
        labels = ("<" + ",".join(post.labels) + ">") if post.labels else None
        labels_file = post.labels_file
    threshold = settings.get("threshold")
    segmentation = is_segmentation(settings.get("model") or "")
    if segmentation and post is None:
        if kind != "video_inference":
            raise ConfigError(f"{kind}: {settings['model']} is a semantic segmentation model "
                              "(a class per pixel, no regions); run it in video_inference")
        return (Step("tensor_postproc_segmentation", {"labels": labels,
                                                      "labels-file": labels_file}, "postproc"),)
    model = settings.get("model") or ""
    if_scores = False
    if post is not None:
        converter = post.converter
    elif kind == "object_detect" or (kind == "video_inference" and detector):
        converter = "detection"
    else:
        converter = "label"
        # a model file may output anything: labelled once its output shows class scores
        if_scores = kind == "video_inference" and not is_factory_name(model) \
            and not labels and not labels_file
    if converter == "raw_data_copy":
        return ()
    if converter in ("detection", "yolo"):
        if kind == "object_classify":
            raise ConfigError("object_classify: a detection converter makes no sense here; "
                              "use object_detect")
        props = {"labels": labels, "labels-file": labels_file}
        if converter == "yolo":
            props["converter"] = post.converter_name
        for key in ("box_index", "label_index", "confidence_index", "max_detections",
                    "classes"):
            if post is not None and getattr(post, key) is not None:
                props[key.replace("_", "-")] = int(getattr(post, key))
        if post is not None and post.iou_threshold is not None:
            props["iou-threshold"] = float(post.iou_threshold)
            if converter == "detection":
                props["nms"] = True  # a detection entry asks for NMS by giving its IoU
        if post is not None and post.class_agnostic is not None:
            props["class-agnostic"] = bool(post.class_agnostic)
        if threshold is not None and threshold >= 0:
            props["threshold"] = float(threshold)
        elif post is not None and post.threshold is not None:
            props["threshold"] = float(post.threshold)
        for key in ("point-names", "point-connections"):
            if settings.get(key):
                props[key] = settings[key]
        return (Step("tensor_postproc_detection", props, "postproc"),)
    # a model-proc's converter is a family name: raw_data_copy, detection, yolo or label
    method = (post.method if post and post.method else "softmax")
    props = {"method": method, "labels": labels, "labels-file": labels_file}
    if post is not None and post.attribute_name:
        props["attribute-name"] = post.attribute_name
    if post is not None and post.layer_name:
        props["layer-name"] = post.layer_name
    if post is not None and post.compound_threshold is not None:
        props["compound-threshold"] = float(post.compound_threshold)
    if if_scores:
        props["if-scores"] = True
    if threshold is not None and threshold >= 0:
        props["threshold"] = float(threshold)
    elif post is not None and post.threshold is not None:
        props["threshold"] = float(post.threshold)
    return (Step("tensor_postproc_label", props, "postproc"),)
