"""Soak: object_detect on 10,000 frames (marked ``soak``: about a minute, part of
``make test``; ``-m 'not soak'`` leaves it out, and a 300-frame run of the same checks stays).
Memory stays flat after warm-up, every frame comes out once, in order, with the detections of
its own pixels, and no thread outlives the pipeline."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

import tests.helpers  # noqa: F401 - initialises GStreamer and registers the elements
from tests.helpers import on_samples
from torchstream.gst import Gst
from torchstream.gst.meta import read_results
from torchstream.gst.pipeline import run_to_end

WIDTH, HEIGHT = 160, 120
WARM_UP = 2_000
RSS_GROWTH_LIMIT = 20 * 2**20
CHECK_EVERY = 500  # frames whose detections are recomputed with torchvision directly


def small_ssd(seed: int = 0) -> SSD:
    """A torchvision SSD (its head, anchors, decoding and NMS) on a two-layer backbone at
    64x64, five classes, at most 8 detections: the detection bin's whole path in a few ms."""
    torch.manual_seed(seed)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=4, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU())
    backbone.out_channels = [32]
    anchors = DefaultBoxGenerator([[2]])
    head = SSDHead([32], anchors.num_anchors_per_location(), num_classes=5)
    model = SSD(backbone, anchors, (64, 64), num_classes=5, head=head,
                score_thresh=0.0, detections_per_img=8, topk_candidates=32)
    return model.eval()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_names() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # ended meanwhile
            pass
    return sorted(names)


def _expected_boxes(model: SSD, pixels: np.ndarray) -> np.ndarray:
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    with torch.inference_mode():
        out = model([image])[0]
    boxes = out["boxes"].numpy() / np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
    return np.clip(boxes, 0.0, 1.0)


def soak(tmp_path: Path, frames: int) -> dict:
    model = small_ssd()
    path = tmp_path / "small_ssd.pt"
    torch.save(model, path)
    description = (
        "videotestsrc num-buffers={} pattern=ball ! "
        f"video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate=30/1 ! "
        f"object_detect model={path} threshold=0.0 ! appsink name=sink sync=false")
    # a first short run starts what lives as long as the process (GStreamer's task pool keeps
    # idle threads for reuse, "pool-python"); the soak must not add to it
    warm_up = description.format(10).replace("appsink name=sink", "fakesink")
    assert run_to_end(Gst.parse_launch(warm_up), 30).ok
    gc.collect()
    threads_before = _threads()
    pipeline = Gst.parse_launch(description.format(frames))
    pts: list[int] = []
    regions: list[int] = []
    rss: dict[int, int] = {}
    mismatches: list[str] = []

    def receive(buf, caps):
        results = read_results(buf)
        index = len(pts)
        pts.append(buf.pts)
        regions.append(len(results.regions))
        if index % CHECK_EVERY == 0:
            rss[index] = _rss()
            ok, info = buf.map(Gst.MapFlags.READ)
            pixels = np.frombuffer(info.data, np.uint8).reshape(HEIGHT, WIDTH, 3).copy()
            buf.unmap(info)
            got = np.array([[r.x_min, r.y_min, r.x_max, r.y_max] for r in results.regions],
                           np.float32).reshape(-1, 4)
            want = _expected_boxes(model, pixels)
            if got.shape != want.shape or np.abs(got - want).max(initial=0) > 1e-4:
                mismatches.append(f"frame {index}: {got.shape} vs {want.shape}")

    on_samples(pipeline, "sink", receive, sync=None)
    start = time.monotonic()
    result = run_to_end(pipeline, timeout=max(60.0, frames * 0.1))
    wall = time.monotonic() - start
    rss[len(pts)] = _rss()
    del pipeline
    gc.collect()
    deadline = time.monotonic() + 5
    while _threads() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"result": result, "pts": pts, "regions": regions, "rss": rss, "wall": wall,
            "mismatches": mismatches, "threads_before": threads_before,
            "threads_after": _threads(), "thread_names": thread_names()}


def check(run: dict, frames: int) -> None:
    assert run["result"].ok, run["result"].error
    expected = [i * Gst.SECOND // 30 for i in range(frames)]
    assert run["pts"] == expected, "frames lost, repeated or out of order"
    assert all(n == 8 for n in run["regions"]), "a frame came out without its detections"
    assert not run["mismatches"], run["mismatches"][:5]
    assert run["threads_after"] <= run["threads_before"], \
        f"{run['threads_after'] - run['threads_before']} threads left after NULL: " \
        f"{run['thread_names']}"


def test_detection_bin_short_soak(tmp_path):
    """The soak's checks on 300 frames, in every test run."""
    run = soak(tmp_path, 300)
    check(run, 300)


@pytest.mark.soak
@pytest.mark.e2e
def test_detection_bin_soak_10000_frames(tmp_path, record_property):
    frames = 10_000
    run = soak(tmp_path, frames)
    rss = run["rss"]
    growth = rss[max(rss)] - rss[WARM_UP]
    record_property("wall_s", round(run["wall"], 1))
    record_property("rss_growth_mb", round(growth / 2**20, 2))
    print(f"\nsoak: {frames} frames in {run['wall']:.1f} s ({frames / run['wall']:.0f} fps), "
          f"RSS at warm-up {rss[WARM_UP] / 2**20:.1f} MB, at the end "
          f"{rss[max(rss)] / 2**20:.1f} MB (growth {growth / 2**20:+.2f} MB), "
          f"threads {run['threads_before']} -> {run['threads_after']}, "
          f"torch threads {torch.get_num_threads()}")
    check(run, frames)
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MB after warm-up"


def test_small_ssd_is_a_torchvision_detector():
    """The soak's model really goes through torchvision's detection code."""
    model = small_ssd()
    out = model([torch.rand(3, HEIGHT, WIDTH)])
    assert isinstance(model, torchvision.models.detection.ssd.SSD)
    assert list(out[0]) == ["boxes", "scores", "labels"] and out[0]["boxes"].shape == (8, 4)
