"""Write the label files the package ships (``src/torchstream/data/labels/``) from torchvision's
weight metadata.

    .venv/bin/python scripts/make_labels.py [output-dir]

- ``imagenet_2012.txt``: the 1000 ImageNet category names of torchvision's classifiers, line
  index = class index.
- ``coco_91cl_bkgr.txt``: the 91 entries of torchvision's COCO detectors, ``__background__``
  first and ``N/A`` for the unused ids, so line index = torchvision label id.

The names come from the weights' metadata, which torchvision holds without any download.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torchstream.environment import LABELS_DIR


def label_sets() -> dict[str, list[str]]:
    import torchvision

    models = torchvision.models
    return {
        "imagenet_2012.txt": list(models.MobileNet_V2_Weights.DEFAULT.meta["categories"]),
        "coco_91cl_bkgr.txt": list(
            models.detection.SSDLite320_MobileNet_V3_Large_Weights.DEFAULT.meta["categories"]
        ),
    }


def write_labels(directory: Path) -> dict[Path, int]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, labels in label_sets().items():
        if any("\n" in label or not label.strip() for label in labels):
            raise ValueError(f"{name}: a label is empty or spans lines")
        path = directory / name
        path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        written[path] = len(labels)
    return written


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else LABELS_DIR
    for path, count in write_labels(directory).items():
        print(f"{path}: {count} labels")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
