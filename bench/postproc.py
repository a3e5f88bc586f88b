"""What post-processing costs per frame, outside any pipeline, median of repeated calls: the
YOLO decode + NMS of one 640x640 YOLOv8 output (8400 candidate boxes, 80 classes), and one
object_track update with 50 objects (short-term-imageless: Kalman filters, IoU, assignment),
and meta_overlay's drawing of the new result kinds on a 640x272 frame: 5 keypoint skeletons,
5 instance masks, one class map of 1223x520 cells (lraspp's output on that frame).

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
    from torchstream.decode.detection import DetectionParams, detect

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

    from torchstream.decode.tracking import Tracker

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


def overlay_results():
    """Named results as the three kinds of model give them on a 640x272 frame."""
    import numpy as np

    from torchstream.decode.keypoints import point_set
    from torchstream.results.data import FrameResults, Keypoints, Mask, Region, Segmentation

    rng = np.random.default_rng(0)
    coco = point_set(17)
    regions_k, regions_m = [], []
    for i in range(5):
        x0, y0 = 0.05 + 0.18 * i, 0.1
        points = tuple((x0 + 0.12 * rng.random(), y0 + 0.8 * rng.random(), 1.0)
                       for _ in range(17))
        regions_k.append(Region(x0, y0, x0 + 0.12, y0 + 0.8, "person", 1, 0.9, i,
                                keypoints=Keypoints(points, coco.names, coco.connections)))
        cells = np.zeros((218, 77), bool)
        cells[20:200, 10:70] = True
        regions_m.append(Region(x0, y0, x0 + 0.12, y0 + 0.8, "person", 1, 0.9, i,
                                mask=Mask.from_array(cells)))
    classes = np.zeros((520, 1223), np.int64)
    classes[100:400, 100:500] = 15
    classes[300:500, 700:1100] = 2
    classes[:80, :] = 7
    return {"5 keypoint skeletons": FrameResults(regions=regions_k),
            "5 instance masks": FrameResults(regions=regions_m),
            "class map 1223x520, 4 classes": FrameResults(
                segmentation=Segmentation.from_array(classes))}


def measure_overlays(calls: int = 200) -> list[dict]:
    import numpy as np

    from torchstream.results.overlay import draw_results

    out = []
    for what, results in overlay_results().items():
        frame = np.full((272, 640, 3), 90, np.uint8)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            draw_results(frame, results)
            times.append((time.perf_counter() - start) * 1000)
        out.append({"what": f"meta_overlay drawing, {what}, 640x272 BGR", "calls": calls,
                    "median_ms": statistics.median(times),
                    "p90_ms": sorted(times)[int(calls * 0.9)]})
    return out


def line(result: dict) -> str:
    if "detections" not in result and "ids" not in result:
        return (f"{result['what']}: {result['median_ms']:.2f} ms median, "
                f"{result['p90_ms']:.2f} ms p90")
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
    result["overlays"] = measure_overlays()
    for one in (result, result["tracker"], *result["overlays"]):
        print(line(one))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
