"""``make serve``: the service on two looped videos played as cameras would send them:
bikes.mp4 through the pretrained CenterNet detector with tracking, cockatoo.mp4 through the
pretrained mobilenet_v2 classifier. The streams file is written to out/serve/demo.toml;
the stream list is kept in out/serve/serve-state.json (remove it to start from the file
again). Extra arguments go to ``torchstream serve`` (e.g. --port 9000, --host 0.0.0.0)."""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.demo import DETECTOR, DETECTOR_PROC, VIDEO, street_video, weights_file
from torchstream.command.cli import main as torchstream

OUT = Path("out/serve")


def streams_file() -> Path:
    bikes = street_video()
    detect = (f'filesrc location="{bikes}" ! decodebin ! object_detect model="{DETECTOR}" '
              f'model-proc="{DETECTOR_PROC}" threshold=0.35 ! object_track ! {{publish}} ! '
              "fakesink sync=true")
    text = f"""# written by `make serve` (scripts/serve_demo.py)
[run]
stall-timeout = 30

[[stream]]
name = "street"
source = "{bikes}"
pipeline = '{detect}'
loop = true

[[stream]]
name = "cockatoo"
source = "{VIDEO}"
element = "video_inference"
properties = {{ model = "torchvision.models.mobilenet_v2", model-weights = "{weights_file()}" }}
loop = true
sync = true
"""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "demo.toml"
    path.write_text(text)
    return path


def main() -> int:
    path = streams_file()
    media = sorted({str(street_video().parent), str(VIDEO.parent)})
    arguments = ["serve", str(path), "--out-dir", str(OUT)]
    for folder in media:
        arguments += ["--media-dir", folder]
    arguments += ["--models-dir", str(DETECTOR.parents[1]),
                  "--models-dir", str(weights_file().parent)]
    return torchstream([*arguments, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
