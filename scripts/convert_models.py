"""Fetch the TF.js graph models (if needed) and convert them to TorchScript and torch.export.

    .venv/bin/python -m scripts.convert_models [--out-dir models] [--force]

Writes, each as ``.ts`` (traced TorchScript) and ``.pt2`` (``torch.export``):

- ``models/centernet/centernet``: input ``[1, 3, 512, 512]`` float RGB 0..255 (NCHW,
  letterboxed), output ``[1, 100, 6]`` = x1, y1, x2, y2, score, class (0..79,
  ``labels/coco_80.txt``) in input pixels, best first (docs/centernet.md);
- ``models/movenet/movenet``: MoveNet Lightning, one person's 17 COCO keypoints; input
  ``[1, 3, 192, 192]`` float RGB 0..255 (letterboxed), output ``[1, 1, 17, 3]`` = y, x, score
  with y and x in [0, 1] of the input.

Idempotent: files newer than their graph are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.fetch_human import CACHE_DIR, ROOT, FetchError, fetch

OUT_DIR = ROOT / "models"
# file stem -> (graph in @vladmandic/human, output nodes)
MODELS = {
    "centernet": ("centernet", ["tower_0/detections"]),
    "movenet": ("movenet-lightning", None),  # the signature's one output
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    p.add_argument("--force", action="store_true", help="rewrite even when up to date")
    args = p.parse_args(argv)
    from scripts.tfjs import TFJSError, convert

    for name, (graph, outputs) in MODELS.items():
        try:
            src = fetch(args.cache_dir, graph)
            written = convert(src.model_json, args.out_dir / name, name=name, outputs=outputs,
                              channels_first=True, force=args.force)
        except FetchError as e:
            print(f"convert_models: {e}", file=sys.stderr)
            return 2 if e.unavailable else 1
        except TFJSError as e:
            print(f"convert_models: {name}: {e}", file=sys.stderr)
            return 1
        for path in written:
            print(f"convert_models: wrote {path}")
        if not written:
            print(f"convert_models: {args.out_dir / name} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
