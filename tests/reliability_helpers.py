"""Shared by the reliability test modules: tiny TorchScript models whose outputs a test controls
(so a case runs in milliseconds, not a real network's forward) and one check for "this pipeline
fails with a clear error, quickly"."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tests.helpers import Run, run_pipeline

STOP_WITHIN_S = 10.0


class TinyClassifier(torch.nn.Module):
    """[B,3,H,W] float -> [B,classes] scores that depend on the image."""

    def __init__(self, classes: int = 10, fill: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, classes)
        self.fill = fill  # non-zero (NaN, inf): every score is this value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.linear(x.float().mean(dim=(2, 3)))
        if self.fill != 0.0:
            scores = torch.full_like(scores, self.fill)
        return scores


class TinyDetector(torch.nn.Module):
    """[B,3,H,W] -> one torchvision-style dict per image with ``count`` boxes.

    Box i lies inside the image; its score is ``score`` (NaN/inf allowed) and its label
    ``1 + i % 5``.
    """

    def __init__(self, count: int, score: float = 0.9, box_value: float = 0.0) -> None:
        super().__init__()
        self.count = count
        self.score = score
        self.box_value = box_value  # non-zero: every box coordinate is this value

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        h, w = x.shape[2], x.shape[3]
        out: list[dict[str, torch.Tensor]] = []
        for _ in range(x.shape[0]):
            i = torch.arange(self.count, dtype=torch.float32)
            frac = (i % 10) / 10.0
            boxes = torch.stack([frac * w, frac * h, frac * w + w / 10.0, frac * h + h / 10.0],
                                dim=1).reshape(-1, 4)
            if self.box_value != 0.0:
                boxes = torch.full_like(boxes, self.box_value)
            out.append({
                "boxes": boxes,
                "labels": (1 + torch.arange(self.count) % 5).to(torch.int64),
                "scores": torch.full((self.count,), self.score),
            })
        return out


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("deliberate failure in forward")
        return x


class TextOutput(torch.nn.Module):
    """Returns a dict holding a string: an output type no element can carry."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"text": "not a tensor"}


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def small_frames(count: int, width: int = 64, height: int = 48, seed: int = 0
                 ) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def expect_error(description: str, frames: list[np.ndarray], element: str,
                 *fragments: str, fmt: str = "RGB") -> Run:
    """Run ``description`` (appsrc "src" -> appsink "sink") and check it fails: an ERROR that
    names ``element`` and holds every fragment (case-insensitive), within STOP_WITHIN_S, with
    no frame reaching the sink."""
    run = run_pipeline(description, frames, fmt=fmt, timeout=30)
    assert not run.result.ok, f"the pipeline should have failed: {description}"
    assert not run.result.timed_out, f"hang: {description}"
    assert run.result.seconds < STOP_WITHIN_S, f"{run.result.seconds:.1f} s: {description}"
    error = run.error or ""
    dump = os.environ.get("RELIABILITY_DUMP")  # collects the messages for docs/errors.md
    if dump:
        with open(dump, "a", encoding="utf-8") as out:
            out.write(error + "\n")
    assert element in error, f"element {element!r} not named in {error!r}"
    for fragment in fragments:
        assert fragment.lower() in error.lower(), f"{fragment!r} not in {error!r}"
    assert not run.outputs, f"{len(run.outputs)} frames slipped through: {error}"
    return run


class RaisesLater(torch.nn.Module):
    """Scores like TinyClassifier for ``good`` calls (the two probe runs count), then raises:
    a failure in the middle of a stream rather than at negotiation."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good
        self.calls = 0
        self.linear = torch.nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("deliberate failure in the middle of the stream")
        return self.linear(x.float().mean(dim=(2, 3)))
