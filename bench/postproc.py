"""What post-processing costs per frame, outside any pipeline, median of repeated calls: the
YOLO decode + NMS of one 640x640 YOLOv8 output (8400 candidate boxes, 80 classes), and one
object_track update with 50 objects (short-term-imageless: Kalman filters, IoU, assignment).

    .venv/bin/python -m bench.postproc [--json FILE]

The output is made once from a seeded generator, shaped as a detector's: centres over the
picture, sizes of 4-84 pixels, class scores the sigmoid of N(-7, 1.5) (about 30 boxes above
0.25 whose overlaps NMS resolves). The tracked objects move at constant speeds with 2 px of
noise. ``python -m bench`` runs it too and prints its lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

CANDIDATES, CLASSES, SIZE = 8400, 80, 640
THRESHOLD, IOU = 0.25, 0.45


def yolo_output():
    import numpy as np

    rng = np.random.default_rng(0)
    out = np.empty((1, 4 + CLASSES, CANDIDATES), np.float32)
    out[0, :2] = rng.random((2, CANDIDATES)) * SIZE
    out[0, 2:4] = rng.random((2, CANDIDATES)) * 80 + 4
    out[0, 4:] = 1 / (1 + np.exp(-rng.normal(-7, 1.5, (CLASSES, CANDIDATES))))
    return out


def measure(calls: int = 300) -> dict:
    from torchstream.detection import DetectionParams, detect

    output = yolo_output()
    params = DetectionParams(threshold=THRESHOLD, iou_threshold=IOU, converter="yolo_v8")
    detections, layout = detect([output], (), params, (SIZE, SIZE))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        detect([output], (), params, (SIZE, SIZE))
        times.append((time.perf_counter() - start) * 1000)
    return {"what": f"YOLO decode + NMS, {CANDIDATES} candidates x {CLASSES} classes",
            "layout": str(layout), "detections": len(detections), "calls": calls,
            "median_ms": statistics.median(times), "p90_ms": sorted(times)[int(calls * 0.9)]}


def measure_tracker(objects: int = 50, frames: int = 300) -> dict:
    import numpy as np

    from torchstream.tracking import Tracker

    rng = np.random.default_rng(0)
    start = rng.random((objects, 2)) * 1800
    size = rng.random((objects, 2)) * 60 + 30
    speed = rng.normal(0, 3, (objects, 2))
    tracker = Tracker()
    times, ids = [], set()
    for f in range(frames):
        corner = start + speed * f + rng.normal(0, 2, (objects, 2))
        boxes = np.concatenate([corner, corner + size], 1)
        t0 = time.perf_counter()
        reported = tracker.update(boxes, [0] * objects, [0.9] * objects)
        times.append((time.perf_counter() - t0) * 1000)
        ids.update(r.track_id for r in reported)
    return {"what": f"object_track update, {objects} objects", "calls": frames,
            "median_ms": statistics.median(times), "p90_ms": sorted(times)[int(frames * 0.9)],
            "ids": len(ids)}


def line(result: dict) -> str:
    kept = (f"{result['detections']} detections kept" if "detections" in result
            else f"{result['ids']} ids given")
    return (f"{result['what']}: {result['median_ms']:.2f} ms median, "
            f"{result['p90_ms']:.2f} ms p90 ({kept})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postproc", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    result = measure()
    result["tracker"] = measure_tracker()
    print(line(result))
    print(line(result["tracker"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
