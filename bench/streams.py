"""Many streams in one process: each stream with its own model instance, or all of them
sharing one (``model-instance-id``, frames of different streams batched together).

    .venv/bin/python -m bench.streams [--models centernet,mobilenet_v2] [--streams 1,2,4,8]
                                      [--repeats 3] [--frames N] [--device cpu|cuda]
                                      [--json FILE]

Every run is its own process: one pipeline of N ``filesrc ! decodebin ! <bin> ! fakesink``
branches over bikes.mp4, prerolled, then a seek that stops every branch after the same
number of frames. Total fps counts every stream's frames from the end of the warm-up (the
first 5 frames of each stream) to the last one. Runs are interleaved: for each repeat, each
stream count, own then shared. A shared instance on the CPU runs one forward pass per core
at once (one thread each) while several streams send frames. CenterNet's graph fixes batch 1,
so its shared instance runs each frame alone (batch-size 1); mobilenet_v2's batches up to
one frame of every stream (batch-size N), a pass taking its share of the streams.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.models import (
    BIKES,
    CENTERNET,
    CENTERNET_MODEL_PROC,
    IMAGENET_LABELS,
    MOBILENET_V2_WEIGHTS,
)

REPO = Path(__file__).resolve().parents[1]
WARMUP_PER_STREAM = 5
MODES = ("own", "shared")
MODELS = {
    # key: (bin element and its model properties, frames per stream, batches across streams)
    "centernet": (f"object_detect model={CENTERNET} model-proc={CENTERNET_MODEL_PROC}", 50,
                  False),
    "mobilenet_v2": ("video_inference model=torchvision.models.mobilenet_v2 "
                     f"model-weights={MOBILENET_V2_WEIGHTS} labels-file={IMAGENET_LABELS}", 120,
                     True),
}


def description(model: str, streams: int, mode: str, device: str = "cpu") -> str:
    element, _, batches = MODELS[model]
    if device != "cpu":
        element += f" device={device}"
    if mode == "shared":
        element += f" model-instance-id={model} batch-size={streams if batches else 1}"
    return " ".join(f'filesrc location="{BIKES}" ! decodebin ! {element} ! '
                    f"fakesink name=sink{i} sync=false" for i in range(streams))


def run_child(job: dict) -> dict:
    """In the child process: play the pipeline, time every stream's frames."""
    from bench.measure import FrameClock
    from torchstream.elements import register_all
    from torchstream.gst import Gst
    from torchstream.model import sharing

    register_all()
    streams, frames = job["streams"], job["frames"]
    pipeline = Gst.parse_launch(description(job["model"], streams, job["mode"],
                                            job.get("device", "cpu")))
    clock = FrameClock(WARMUP_PER_STREAM * streams, frames * streams)
    for i in range(streams):
        pad = pipeline.get_by_name(f"sink{i}").get_static_pad("sink")
        pad.add_probe(Gst.PadProbeType.BUFFER, lambda *_: (clock.done(),
                                                           Gst.PadProbeReturn.OK)[1])
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PAUSED)
    res, _, _ = pipeline.get_state(300 * Gst.SECOND)
    if res != Gst.StateChangeReturn.SUCCESS:
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        pipeline.set_state(Gst.State.NULL)
        return {"error": msg.parse_error()[0].message if msg else f"no preroll ({res})"}
    clock.reset()
    stop = int(frames * Gst.SECOND / 25) - Gst.SECOND // 50  # bikes.mp4 is 25 fps
    pipeline.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE,
                  Gst.SeekType.SET, 0, Gst.SeekType.SET, stop)
    pipeline.set_state(Gst.State.PLAYING)
    msg = bus.timed_pop_filtered(900 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    error = None
    if msg is None or msg.type == Gst.MessageType.ERROR:
        error = msg.parse_error()[0].message if msg else "timed out"
    pipeline.set_state(Gst.State.NULL)
    if error:
        return {"error": error}
    out = clock.summary()
    stats = sharing.finished_stats(job["model"])
    if stats is not None:
        out.update(calls=stats.calls, mean_batch=stats.mean_batch,
                   most_at_once=stats.most_at_once)
    return out


def measure(model: str, streams: int, mode: str, frames: int, device: str = "cpu") -> dict:
    job = {"model": model, "streams": streams, "mode": mode, "frames": frames,
           "device": device}
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "src"),
                                                      env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "bench.streams", "--child", json.dumps(job)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def table(results: dict) -> list[str]:
    lines = ["Many streams in one process (bench.streams): total fps, median of the runs",
             f"  {'model':<14}{'streams':>8}{'own fps':>10}{'shared fps':>12}"
             f"{'shared/own':>12}{'mean batch':>12}{'at once':>9}{'own MB':>9}"
             f"{'shared MB':>11}"]
    for (model, streams), runs in results.items():
        med = medians(runs, ("fps", "peak_rss_mb"))
        shared_ok = [r for r in runs["shared"] if "error" not in r]
        if shared_ok:
            med["shared"]["mean_batch"] = statistics.median(
                r.get("mean_batch", 1) for r in shared_ok)
            med["shared"]["most_at_once"] = max(r.get("most_at_once", 1) for r in shared_ok)
        ratio = med["shared"]["fps"] / med["own"]["fps"] if med["own"]["fps"] else float("nan")
        lines.append(f"  {model:<14}{streams:>8}{med['own']['fps']:>10.1f}"
                     f"{med['shared']['fps']:>12.1f}{ratio:>12.2f}"
                     f"{med['shared'].get('mean_batch', float('nan')):>12.2f}"
                     f"{med['shared'].get('most_at_once', 0):>9}"
                     f"{med['own']['peak_rss_mb']:>9.0f}{med['shared']['peak_rss_mb']:>11.0f}")
        lines += error_line(runs)
    return lines


def medians(runs: dict[str, list[dict]], keys: tuple[str, ...]) -> dict[str, dict]:
    """Per mode, the median of each key over the runs without an error (nan: none)."""
    out = {}
    for mode, results in runs.items():
        ok = [r for r in results if "error" not in r]
        out[mode] = {key: statistics.median(r[key] for r in ok) if ok else float("nan")
                     for key in keys}
    return out


def error_line(runs: dict[str, list[dict]]) -> list[str]:
    errors = [r["error"] for results in runs.values() for r in results if "error" in r]
    return [f"    errors: {errors[0]}"] if errors else []


def chosen_models(parser: argparse.ArgumentParser, names: str) -> list[str]:
    """The --models list, checked; CenterNet left out (saying so) when it is not built."""
    models = [m.strip() for m in names.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    if "centernet" in models and not CENTERNET.exists():
        print(f"{parser.prog}: centernet skipped (run `make models` to convert it)",
              file=sys.stderr)
        models.remove("centernet")
    return models


def report(lines: list[str], results: dict, started: float, json_path: Path | None) -> None:
    """The table, the bench's wall time, and the raw runs per (model, streams) if asked."""
    print("\n".join(lines))
    print(f"  ({time.monotonic() - started:.0f} s)")
    if json_path:
        json_path.write_text(json.dumps({f"{m} {n}": v for (m, n), v in results.items()},
                                        indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="centernet,mobilenet_v2")
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=0, help="frames per stream")
    parser.add_argument("--device", default="cpu",
                        help="the bins' device (cuda: batching across streams on a GPU)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    models = chosen_models(parser, args.models)
    counts = [int(n) for n in args.streams.split(",")]
    results: dict = {(m, n): {mode: [] for mode in MODES} for m in models for n in counts}
    started = time.monotonic()
    for repeat in range(args.repeats):
        for model in models:
            frames = args.frames or MODELS[model][1]
            for n in counts:
                for mode in MODES:
                    result = measure(model, n, mode, frames, args.device)
                    results[(model, n)][mode].append(result)
                    print(f"bench.streams: {model} {n} streams {mode} run {repeat + 1}: "
                          + (result["error"] if "error" in result else
                             f"{result['fps']:.1f} fps"), file=sys.stderr, flush=True)
    report(table(results), results, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
