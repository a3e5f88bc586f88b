"""Seeded random-weight models whose outputs vary like real ones, for plumbing tests.

A detector with untrained weights outputs features that vanish through its depth, so every
frame gives the same 300 near-equal scores. Calibrating the BatchNorm statistics on a few real
frames restores varied activations; raising the background logit then makes the number of
detections differ from frame to frame, as with a trained model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision


def frames_to_tensors(frames: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(f).permute(2, 0, 1).float() / 255.0 for f in frames]


def seeded_detector(name: str, calibration_frames: list[np.ndarray], background_bias: float,
                    seed: int = 0, **arguments) -> torch.nn.Module:
    """``arguments`` go to the factory (``num_classes=3`` for a fine-tuned head)."""
    torch.manual_seed(seed)
    builder = getattr(torchvision.models.detection, name)
    model = builder(weights=None, weights_backbone=None, **arguments)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batch
            module.reset_running_stats()
    images = frames_to_tensors(calibration_frames)
    model.train()
    with torch.no_grad():
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        if hasattr(model, "head"):
            model.head(list(features.values()))
    model.eval()
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    num_classes = predictor.cls_score.out_features if predictor is not None else 91
    state = model.state_dict()
    for key, value in state.items():
        if ("classification_head" in key or "cls_score" in key) and key.endswith("bias") \
                and value.numel() % num_classes == 0 and value.numel() >= num_classes:
            value.view(-1, num_classes)[:, 0] += background_bias
    model.load_state_dict(state)
    return model


def save_state_dict(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path
