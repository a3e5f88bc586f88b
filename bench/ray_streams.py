"""The same streams file run by ``torchstream run`` in one process and with ``--ray local``
(each stream in its own Ray actor process on this machine).

    .venv/bin/python -m bench.ray_streams [--models mobilenet_v2,centernet] [--streams 3]
                                          [--repeats 3] [--json FILE]

Each run is one ``torchstream run`` command over N streams of the whole of bikes.mp4 (250
frames each), one JSONL file per stream. Total fps is every stream's frames over the time from
the first frame out of any stream to the last one (the status file's wall-clock times), so
Ray's start-up and each process's model loading before its first frame are not counted; the
wall column is the whole command. Runs are interleaved: for each repeat, each model, one
process then Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.models import BIKES
from bench.streams import MODELS, chosen_models, error_line, medians, report

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = Path(sys.executable).with_name("torchstream")
MODES = ("process", "ray")
FRAMES_PER_STREAM = 250  # bikes.mp4


def streams_file(model: str, streams: int, out: Path) -> Path:
    element, *properties = MODELS[model][0].split()
    props = ", ".join(f'{key} = "{value}"' for key, value in
                      (p.split("=", 1) for p in properties))
    lines = [f'[run]\nstatus-file = "{out}/status.json"\nrestart = "never"\n',
             f'[defaults]\nelement = "{element}"\nproperties = {{ {props} }}\n']
    lines += [f'[[stream]]\nname = "s{i}"\nsource = "{BIKES}"\njsonl = "{out}/s{i}.jsonl"\n'
              for i in range(streams)]
    path = out / "streams.toml"
    path.write_text("\n".join(lines))
    return path


def measure(model: str, streams: int, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        out = Path(tmp)
        command = [str(TORCHSTREAM), "run", str(streams_file(model, streams, out))]
        if mode == "ray":
            command += ["--ray", "local"]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=1800)
        wall = time.monotonic() - started
        try:
            status = json.loads((out / "status.json").read_text())["streams"]
        except (OSError, ValueError):
            status = []
        if done.returncode != 0 or len(status) != streams:
            return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
        short = [s["name"] for s in status if s["frames"] != FRAMES_PER_STREAM]
        if short:
            return {"error": f"stream {short[0]} did not put out {FRAMES_PER_STREAM} frames"}
        frames = sum(s["frames"] for s in status)
        span = (max(s["last_frame_time"] for s in status)
                - min(s["first_frame_time"] for s in status))
        return {"fps": frames / span, "wall_s": wall}


def table(results: dict) -> list[str]:
    lines = ["The same streams in one process and on a local Ray cluster (bench.ray_streams): "
             "total fps, median of the runs",
             f"  {'model':<14}{'streams':>8}{'process fps':>13}{'ray fps':>9}{'ray/process':>13}"
             f"{'process wall s':>16}{'ray wall s':>12}"]
    for (model, streams), runs in results.items():
        med = medians(runs, ("fps", "wall_s"))
        ratio = med["ray"]["fps"] / med["process"]["fps"]
        lines.append(f"  {model:<14}{streams:>8}{med['process']['fps']:>13.1f}"
                     f"{med['ray']['fps']:>9.1f}{ratio:>13.2f}"
                     f"{med['process']['wall_s']:>16.0f}{med['ray']['wall_s']:>12.0f}")
        lines += error_line(runs)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_streams", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v2,centernet")
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    models = chosen_models(parser, args.models)
    results: dict = {(m, args.streams): {mode: [] for mode in MODES} for m in models}
    started = time.monotonic()
    for repeat in range(args.repeats):
        for model in models:
            for mode in MODES:
                result = measure(model, args.streams, mode)
                results[(model, args.streams)][mode].append(result)
                print(f"bench.ray_streams: {model} {args.streams} streams {mode} run "
                      f"{repeat + 1}: " + (result["error"] if "error" in result else
                                           f"{result['fps']:.1f} fps, {result['wall_s']:.0f} s"),
                      file=sys.stderr, flush=True)
    report(table(results), results, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
