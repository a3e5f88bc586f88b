"""video_inference, object_detect, object_classify: processbins that build their own stages.

The chain for the model comes from :func:`torchstream.plan.chain.plan_chain`; this shell makes the
elements, sets their properties and lets processbin's assembly wire them (tee, queues,
meta_aggregate). Everything is decided when the bin goes from NULL to READY, so a bad property
fails that state change with an error naming it.
"""

from __future__ import annotations

from pathlib import Path

from torchstream.elements._base import (
    FactoryMade,
    PropertyStore,
    bool_prop,
    double_prop,
    gproperties,
    pad_templates,
    string_prop,
    uint_prop,
)
from torchstream.elements.processbin import (
    QUEUED,
    StagedBin,
    frame_policy_prop,
    queue_prop,
    skipped_prop,
)
from torchstream.elements.tensor_inference import PytorchTensorInference
from torchstream.elements.tensor_postproc_detection import TensorPostprocDetection
from torchstream.elements.tensor_postproc_label import TensorPostprocLabel
from torchstream.errors import ConfigError
from torchstream.gst import Gst
from torchstream.gst.log import DebugCategory
from torchstream.model.engines import OPENVINO_MODEL_SUFFIXES
from torchstream.model.loading import MODEL_FILE_SUFFIXES, check_file, is_factory_name
from torchstream.plan.chain import Chain, Step, launch_text, plan_chain

# the inference element's declarations: a bin passes these properties on to it as they are
INFERENCE = PytorchTensorInference.PROPERTIES


def _common_properties(threshold_blurb: str, region: str) -> dict:
    return {
        "model": string_prop(
            "Model", "torchvision factory path (torchvision.models.resnet50, "
            "torchvision.models.detection.ssdlite320_mobilenet_v3_large...), timm architecture "
            "(timm.<name>, with model-weights) or a model file (.pt, .pth, .pt2, .ts, .xml, "
            ".onnx)", None),
        "model-weights": INFERENCE["model-weights"],
        "model-proc": string_prop(
            "Model-proc", "Model-proc JSON file: preprocessing and post-processing that "
            "override the defaults (docs/model-proc.md)", None),
        **{name: INFERENCE[name] for name in ("device", "batch-size", "engine", "threads",
                                              "cache-dir", "graph-mode", "model-instance-id",
                                              "batch-timeout")},
        **{name: TensorPostprocLabel.PROPERTIES[name] for name in ("labels", "labels-file")},
        "threshold": double_prop("Threshold", threshold_blurb, 0.0, 1.0, -1.0, also=(-1.0,)),
        "inference-interval": uint_prop(
            "Inference interval", "Run the model on one frame in N; the frames in between "
            "pass with no results, or the last ones (repeat-metadata)", 1, 1_000_000, 1),
        "repeat-metadata": bool_prop("Repeat metadata", "Put the last results on the frames "
                                     "inference-interval skips", False,
            doc=(
                "put the last results on the frames in between (`meta_aggregate`'s `repeat-"
                'metadata`)'),
        ),
        "inference-region": string_prop(
            "Inference region", "full-frame: the model sees the whole frame; roi-list: each "
            "region on the frame (object_classify)", region),
        "object-class": string_prop(
            "Object class", "With roi-list: region labels to run on, <car,person> or "
            "car,person; empty: all", ""),
        **{f"{stage}-queue-size": queue_prop(stage) for stage in QUEUED},
        "frame-policy": frame_policy_prop(),
        "inference-skipped": skipped_prop(),
    }


_DETECT_THRESHOLD = ("Detections below it are dropped; -1: the model-proc's threshold, "
                     "else 0.5")
_LABEL_THRESHOLD = ("A classification below it is not attached; -1: the model-proc's "
                    "threshold, else 0 (always attached)")


CAT = DebugCategory("torchstream-bins",
                    "video_inference, object_detect, object_classify: the planned chain")


class _InferenceBin(FactoryMade, PropertyStore, StagedBin, Gst.Bin):
    """Shared by the three bins; each subclass says its kind and its properties."""

    KIND = ""

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self._init_staged()
        self.chain: Chain | None = None

    def do_change_state(self, transition):
        return self._change_state(transition)

    def do_get_property(self, prop):
        return self._staged_property(prop)

    def _build(self) -> None:
        self._check_settings()
        chain = plan_chain(self.KIND, self.settings.by_name())
        pre = list(chain.preprocess)
        if chain.skip_interval > 1:
            pre.insert(0, Step("frame_skip", {"interval": chain.skip_interval}, "skip"))
        self.stages = {
            "preprocess": self._stage_element("preprocess", pre),
            "process": self._stage_element("process", chain.process),
            "postprocess": self._stage_element("postprocess", chain.postprocess),
            "aggregate": _make(Step("meta_aggregate", {"repeat-metadata": chain.repeat},
                                    "aggregate")),
        }
        self.chain = chain
        CAT.info(self, f"{self.KIND}: {_describe(chain)}")
        self._assemble()

    def _check_settings(self) -> None:
        """What the chain plan does not check before it uses it: the declared ranges (a
        threshold out of range would be taken as the default, or ignored without
        post-processing), and a model file that is not there (object_classify otherwise
        reports only that the input size of the model is unknown)."""
        self.check_ranges()
        model = (self.settings.model or "").strip()
        if model and Path(model).suffix.lower() in MODEL_FILE_SUFFIXES + OPENVINO_MODEL_SUFFIXES \
                and not is_factory_name(model):
            check_file(model, "property 'model': model file")

    def _stage_element(self, stage: str, steps) -> Gst.Element | None:
        """One element, or a bin of several linked in order, ghosted."""
        if not steps:
            return None
        if len(steps) == 1:
            return _make(steps[0])
        stage_bin = Gst.Bin.new(stage)
        elements = [_make(step) for step in steps]
        for element in elements:
            stage_bin.add(element)
        for upstream, downstream in zip(elements, elements[1:], strict=False):
            if not upstream.link(downstream):
                raise ConfigError(f"{self.get_name()}: cannot link '{upstream.get_name()}' to "
                                  f"'{downstream.get_name()}' in the {stage} stage")
        stage_bin.add_pad(Gst.GhostPad.new("sink", elements[0].get_static_pad("sink")))
        stage_bin.add_pad(Gst.GhostPad.new("src", elements[-1].get_static_pad("src")))
        return stage_bin


def _describe(chain: Chain) -> str:
    """The planned stages as gst-launch text (for the log)."""
    return (f"preprocess: {launch_text(chain.preprocess)}; process: "
            f"{launch_text(chain.process)}; postprocess: {launch_text(chain.postprocess)}")


def _make(step: Step) -> Gst.Element:
    element = Gst.ElementFactory.make(step.factory, step.name)
    if element is None:
        raise ConfigError(f"element '{step.factory}' is not available (is the plugin "
                          "registered? run `make setup`)")
    for name, value in step.props.items():
        if value is None:
            continue
        if name == "caps":
            value = Gst.Caps.from_string(value)
        element.set_property(name, value)
    return element


class VideoInference(_InferenceBin):
    __gtype_name__ = "video_inference"
    __gstmetadata__ = (
        "Video inference",
        "Filter/Video/Bin",
        "Runs a PyTorch model on every frame (or one in inference-interval) with the "
        "preprocessing its weights or model-proc give, and attaches the results to the frame "
        "(labels when labels are given, detections for detectors, else the raw tensors)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    KIND = "video_inference"
    PROPERTIES = {
        **_common_properties(_LABEL_THRESHOLD, "full-frame"),
        "clip-length": uint_prop(
            "Clip length", "A clip model (torchvision.models.video.*): frames per clip; 0: "
            "the clip length its weights were evaluated with (16 when they do not say)", 0,
            1024, 0),
        "clip-stride": uint_prop(
            "Clip stride", "A clip model: frames from one clip's last frame to the next "
            "one's; 0: the clip length (clips do not overlap)", 0, 1_000_000, 0),
    }
    __gproperties__ = gproperties(PROPERTIES)


class ObjectDetect(_InferenceBin):
    __gtype_name__ = "object_detect"
    __gstmetadata__ = (
        "Object detection",
        "Filter/Video/Bin",
        "Runs a PyTorch detector on the full frame and attaches one region per detection "
        "(box in frame coordinates, label, confidence)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    KIND = "object_detect"
    PROPERTIES = {
        **_common_properties(_DETECT_THRESHOLD, "full-frame"),
        # passed on to tensor_postproc_detection as they are
        **{name: TensorPostprocDetection.PROPERTIES[name]
           for name in ("point-names", "point-connections")},
    }
    __gproperties__ = gproperties(PROPERTIES)


class ObjectClassify(_InferenceBin):
    __gtype_name__ = "object_classify"
    __gstmetadata__ = (
        "Object classification",
        "Filter/Video/Bin",
        "Classifies the regions on each frame (cropped from the full-resolution frame, all "
        "regions of a frame in one batch) and attaches each label to its region",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    KIND = "object_classify"
    PROPERTIES = {
        **_common_properties(_LABEL_THRESHOLD, "roi-list"),
        "reclassify-interval": uint_prop(
            "Reclassify interval", "Classify the regions on one frame in N; on the frames in "
            "between, each region keeps the label of the region of the same label it overlaps "
            "most (IoU >= 0.5) on the last classified frame", 1, 1_000_000, 1,
            doc=(
                'classify the regions on one frame in N; on the frames in '
                'between each region keeps the label of the region of the same label it overlaps '
                'most (IoU >= 0.5) on the last classified frame'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

