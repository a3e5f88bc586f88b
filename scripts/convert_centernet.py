"""Fetch the CenterNet TF.js graph (if needed) and convert it to TorchScript and torch.export.

    .venv/bin/python -m scripts.convert_centernet [--out-dir models/centernet] [--force]

Writes ``centernet.ts`` (traced TorchScript) and ``centernet.pt2`` (``torch.export``): input
``[1, 3, 512, 512]`` float RGB 0..255 (NCHW, letterboxed), output ``[1, 100, 6]`` =
x1, y1, x2, y2, score, class (0..79, ``labels/coco_80.txt``) in input pixels, best first.
Idempotent: files newer than the graph are kept. See docs/centernet.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.fetch_centernet import CACHE_DIR, ROOT, FetchError, fetch

OUT_DIR = ROOT / "models" / "centernet"
OUTPUT = "tower_0/detections"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    p.add_argument("--force", action="store_true", help="rewrite even when up to date")
    args = p.parse_args(argv)
    try:
        src = fetch(args.cache_dir)
    except FetchError as e:
        print(f"convert_centernet: {e}", file=sys.stderr)
        return 2 if e.unavailable else 1

    from scripts.tfjs import TFJSError, convert

    try:
        written = convert(src.model_json, args.out_dir, name="centernet", outputs=[OUTPUT],
                          channels_first=True, force=args.force)
    except TFJSError as e:
        print(f"convert_centernet: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"convert_centernet: wrote {path}")
    if not written:
        print(f"convert_centernet: {args.out_dir} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
