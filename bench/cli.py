"""Command line and orchestration: one process per side, the sides run in turn (round-robin)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import median, plan_frames
from bench.models import (
    BIKES,
    COCKATOO,
    MODELS,
    PIPELINE_SIDES,
    REPO,
    SIDES,
    ModelSpec,
    pipeline_description,
    resolve_models,
    sides_for,
)
from bench.report import render
from bench.worker import RESULT_PREFIX

SWEEP_CANDIDATES = (2, 4, 8)
QUICK_MODEL = "mobilenet_v3_small"


@dataclass
class Run:
    """One measurement: a side of a (model, batch) configuration, one repetition (-1: the
    profile run)."""

    side: str
    spec: ModelSpec
    batch: int
    repeat: int
    threads: str = "default"
    result: dict = field(default_factory=dict)
    seconds: float = 0.0


class SideProcess:
    """The process of one side (bench.worker), asked to run one job at a time."""

    def __init__(self, side: str, env: dict[str, str], log_dir: Path) -> None:
        self.side = side
        self.log = log_dir / f"{side}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker"], cwd=REPO, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)

    def send(self, payload: dict) -> None:
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return {"error": f"the {self.side} process ended (exit {self.proc.wait()})",
                        "stderr_tail": self.stderr_tail()}
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
                if result.get("error"):
                    result["stderr_tail"] = self.stderr_tail()
                return result

    def ask(self, payload: dict) -> dict:
        self.send(payload)
        return self.receive()

    def stderr_tail(self) -> str:
        text = self.log.read_text(errors="replace")
        return "\n".join(line for line in text.splitlines() if "CRITICAL" not in line)[-2000:]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="fps and peak RSS of the bare model, a plain OpenCV + PyTorch loop and the "
                    "torchstream pipelines (processbin and bin forms) on the same video, "
                    "interleaved; see docs/benchmarks.md")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma list of {', '.join(MODELS)} (default: all)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per run for every model (default: per model, "
                        + ", ".join(f"{s.key} {s.frames}" for s in MODELS.values())
                        + "); more than the file has loops it")
    p.add_argument("--repeats", type=int, default=3, help="runs per side; medians are shown")
    p.add_argument("--threads", default="default",
                   help="comma list of thread counts, each measured on every side (the "
                        "first at every batch size, the others at batch 1): 'default' (what a "
                        "user gets: torch's own default on the bare-torch and plain sides, "
                        "threads=0 in bare-best and the pipelines) or N "
                        "(torch.set_num_threads(N) and threads=N); default: default")
    p.add_argument("--batches", default="1,best",
                   help="comma list of batch sizes; 'best' is the bare model's best of "
                        f"{', '.join(map(str, SWEEP_CANDIDATES))} (default: 1,best)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--video", type=Path, action="append", default=None,
                   help="video file, repeatable: each is a run of its own (default: bikes.mp4 "
                        "640x272 and cockatoo.mp4 1280x720; --quick: bikes.mp4)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the per-element breakdown runs")
    p.add_argument("--quick", action="store_true",
                   help=f"a tiny run that checks the suite works ({QUICK_MODEL}, a few frames, "
                        "one repeat): its numbers mean nothing")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        if args.models == ",".join(MODELS):
            args.models = QUICK_MODEL
        args.frames = args.frames or 12
        args.repeats = 1
        if args.batches == "1,best":
            args.batches = "1"
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.videos = args.video or ([BIKES] if args.quick else [BIKES, COCKATOO])
    args.thread_list = [t.strip() for t in args.threads.split(",") if t.strip()]
    if not args.thread_list or any(t != "default" and (not t.isdigit() or int(t) < 1)
                                   for t in args.thread_list):
        p.error(f"--threads {args.threads!r}: 'default' or positive integers")
    if args.frames is not None and args.frames < 2:
        p.error("--frames must be at least 2")
    return args


def check_device(device: str) -> str | None:
    """None when usable, else the reason; CUDA is checked here, before any run starts."""
    value = device.strip().lower()
    kind, _, index = value.partition(":")
    if kind == "cpu" and not index:
        return None
    if kind != "cuda" or (index and not index.isdigit()):
        return f"--device {device!r}: use cpu, cuda or cuda:N"
    import torch

    if not torch.cuda.is_available():
        return (f"--device {device}: CUDA is not available on this machine (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}, "
                f"{torch.cuda.device_count()} CUDA devices); run on a machine with a GPU or "
                "use --device cpu")
    if int(index or 0) >= torch.cuda.device_count():
        return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
    return None


def video_info(path: Path) -> dict:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"bench: cannot open the video {path}")
    info = {"video": str(path), "video_frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            "video_fps": float(capture.get(cv2.CAP_PROP_FPS)) or 25.0,
            "video_width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "video_height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    capture.release()
    return info


def weights_paths(specs: list[ModelSpec], folder: Path) -> dict[str, str]:
    """Each model's state dict: the real file where there is one, else a file in ``folder``
    that the first worker needing it fills with seeded random weights (speed does not depend
    on the values; this keeps torch out of this process)."""
    paths: dict[str, str] = {}
    for spec in specs:
        if spec.real_weights is not None and spec.real_weights.exists():
            paths[spec.key] = str(spec.real_weights)
        else:
            paths[spec.key] = str(folder / f"{spec.key}-random.pth")
    return paths


def child_env() -> dict[str, str]:
    """The caller's environment without thread-count variables (each job sets its own), so
    that 'default' measures what a user gets."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(REPO / "src"),
                                                        env.get("PYTHONPATH", "")])))
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        specs = resolve_models(args.models)
        batches = [b.strip() for b in args.batches.split(",") if b.strip()]
        if not batches or any(b != "best" and (not b.isdigit() or int(b) < 1) for b in batches):
            raise ValueError(f"--batches {args.batches!r}: positive integers or 'best'")
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    problem = check_device(args.device)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    env = child_env()
    reports, failed = [], 0
    for path in args.videos:
        report, failures = run_video(args, specs, batches, path, env)
        print(render(report))
        reports.append(report)
        failed += failures
    if args.json:
        args.json.write_text(json.dumps(reports[0] if len(reports) == 1 else
                                        {"videos": reports}, indent=1, default=str))
    return 1 if failed else 0


def run_video(args, specs: list[ModelSpec], batches: list[str], path: Path,
              env: dict[str, str]) -> tuple[dict, int]:
    """Every side of every model on one video, interleaved; the report and its failures."""
    video = video_info(path)
    began = time.monotonic()
    runs: list[Run] = []
    profiles: list[Run] = []
    configs: list[tuple[ModelSpec, int, str]] = []
    sweeps: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="torchstream-bench-") as tmp:
        weights = weights_paths(specs, Path(tmp))

        def payload(side: str, spec: ModelSpec, batch: int, frames: int,
                    threads: str = args.thread_list[0], **extra) -> dict:
            frames, warmup = plan_frames(batch, frames, args.quick)
            data = {"side": side, "model": spec.key, "weights": weights[spec.key],
                    "batch": batch, "frames": frames, "warmup": warmup,
                    "threads": threads, "device": args.device, **video, **extra}
            if side in PIPELINE_SIDES:
                data["description"] = pipeline_description(
                    side, spec, weights[spec.key], batch, args.device, path,
                    0 if threads == "default" else int(threads))
            return data

        for spec in specs:
            if spec.missing():
                print(f"bench: {spec.key} skipped: {spec.missing()}", file=sys.stderr)
                continue
            frames = args.frames or spec.frames
            model_batches = ["1"] if spec.fixed_batch else batches
            sides = sides_for(spec)
            roles = list(sides) + (["sweep"] if "best" in model_batches else [])
            procs = start_sides(spec, roles, payload, env, Path(tmp))
            try:
                done: list[tuple[int, str]] = []
                for threads in args.thread_list:
                    # the first thread count at every batch size, the others at batch 1
                    for entry in model_batches if threads == args.thread_list[0] else ["1"]:
                        if entry == "best" and spec.key not in sweeps:
                            sweeps[spec.key] = sweep(procs.pop("sweep"), payload(
                                "sweep", spec, 1, 2, candidates=list(SWEEP_CANDIDATES)))
                        batch = sweeps[spec.key]["best"] if entry == "best" else int(entry)
                        if (batch, threads) in done:
                            continue
                        done.append((batch, threads))
                        configs.append((spec, batch, "best" if entry == "best" else "",
                                        threads))
                        for rep in range(args.repeats):
                            shift = (rep + len(configs)) % len(sides)  # each side each place
                            for side in sides[shift:] + sides[:shift]:
                                run = Run(side, spec, batch, rep, threads)
                                measure(run, procs[side], payload(
                                    side, spec, batch, frames, threads, profile=args.quick))
                                runs.append(run)
                        if (batch == 1 and threads == args.thread_list[0] and not args.quick
                                and not args.no_profile):
                            for side in PIPELINE_SIDES:
                                run = Run(side, spec, 1, -1, threads)
                                measure(run, procs[side], payload(
                                    side, spec, 1, min(frames, video["video_frames"]),
                                    threads, profile=True))
                                profiles.append(run)
            finally:
                for proc in procs.values():
                    proc.close()
        postproc = measure_postproc(env, Path(tmp))
    report = summarise(args, video, specs, configs, runs, profiles, sweeps,
                       time.monotonic() - began)
    report["postproc"] = postproc
    failed = [r for r in runs + profiles if r.result.get("error")]
    failed += [s for s in sweeps.values() if s.get("error")]
    failed += [postproc] if postproc.get("error") else []
    return report, len(failed)


def measure_postproc(env: dict[str, str], folder: Path) -> dict:
    """bench.postproc's figures, in a process of its own (as every measurement)."""
    out = folder / "postproc.json"
    done = subprocess.run([sys.executable, "-m", "bench.postproc", "--json", str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout).strip()[-500:]}
    return json.loads(out.read_text())


def start_sides(spec: ModelSpec, roles: list[str], payload, env: dict[str, str],
                log_dir: Path) -> dict[str, SideProcess]:
    """The processes of a model: one per side, kept for all its batch sizes (so a side's peak
    RSS at the best batch is the peak over its batch-1 and best-batch runs), plus one for the
    batch sweep, which thus never inflates a side's RSS. All are warm (imports done, model
    built, weights written by the first) before anything is timed."""
    procs: dict[str, SideProcess] = {}
    try:
        for role in roles:
            procs[role] = SideProcess(role, env, log_dir)
        first = procs[roles[0]].ask(payload("warm", spec, 1, 2, for_side=roles[0]))
        for role in roles[1:]:
            procs[role].send(payload("warm", spec, 1, 2, for_side=role))
        answers = [first] + [procs[role].receive() for role in roles[1:]]
    except BaseException:
        for proc in procs.values():
            proc.close()
        raise
    for role, answer in zip(roles, answers, strict=True):
        if answer.get("error"):
            print(f"bench: the {role} process of {spec.key} failed to start: "
                  f"{answer['error']}\n{answer.get('stderr_tail', '')}", file=sys.stderr)
    return procs


def sweep(proc: SideProcess, job: dict) -> dict:
    """The bare model's fps at each candidate batch; 'best' is the fastest."""
    try:
        result = proc.ask(job)
    finally:
        proc.close()
    fps = result.get("sweep_fps") or {}
    result["best"] = int(max(fps, key=fps.get)) if fps else SWEEP_CANDIDATES[-1]
    print(f"bench: {job['model']} bare fps by batch: "
          + ", ".join(f"{b}: {v:.1f}" for b, v in fps.items())
          + f" -> best batch {result['best']}", file=sys.stderr, flush=True)
    return result


def measure(run: Run, proc: SideProcess, job: dict) -> None:
    began = time.monotonic()
    run.result = proc.ask(job)
    run.seconds = time.monotonic() - began
    what = (f"{run.spec.key} batch {run.batch} threads {run.threads} {run.side}"
            + (f" run {run.repeat + 1}" if run.repeat >= 0 else " (profile)"))
    result = run.result
    figure = (f"error: {result['error']}" if result.get("error")
              else f"{result.get('fps', float('nan')):.1f} fps")
    print(f"bench: {what}: {figure} ({run.seconds:.1f} s)", file=sys.stderr, flush=True)


def summarise(args, video, specs, configs, runs, profiles, sweeps, seconds) -> dict:
    """Medians per (model, batch, side), the profiles and the raw runs, JSON-ready."""
    rows = []
    for spec, batch, label, threads in configs:
        row = {"model": spec.key, "batch": batch, "batch_label": label, "threads": threads,
               "sides": {}}
        for side in SIDES:
            results = [r.result for r in runs if r.spec is spec and r.batch == batch
                       and r.threads == threads and r.side == side]
            errors = [r["error"] for r in results if r.get("error")]
            row["frames"] = max((r.get("frames", 0) for r in results), default=0)
            row["sides"][side] = {
                "fps": median([r.get("fps", float("nan")) for r in results]),
                "fps_runs": [r.get("fps") for r in results],
                "cpu_ms_per_frame": median([r.get("cpu_ms_per_frame", float("nan"))
                                            for r in results]),
                "peak_rss_mb": median([r.get("peak_rss_mb", float("nan")) for r in results]),
                "rss_growth_mb": median([r.get("rss_growth_mb", float("nan"))
                                         for r in results]),
                "threads": sorted({r.get("threads") for r in results if r.get("threads")}),
                "engines": sorted({e for r in results
                                   for e in r.get("engines", [r.get("engine")]) if e}),
                "errors": errors,
            }
            if args.quick and side in PIPELINE_SIDES and results and not errors:
                row["sides"][side]["elements"] = results[0].get("elements", [])
                row["sides"][side]["thread_cpu"] = results[0].get("thread_cpu", [])
        rows.append(row)
    breakdown = [{"model": j.spec.key, "side": j.side, "frames": j.result.get("frames"),
                  "fps_with_probes": j.result.get("fps"), "error": j.result.get("error"),
                  "elements": j.result.get("elements", []),
                  "thread_cpu": j.result.get("thread_cpu", [])} for j in profiles]
    if args.quick:
        breakdown = [{"model": r["model"], "side": side, "frames": r["frames"],
                      "fps_with_probes": r["sides"][side]["fps"],
                      "error": "; ".join(r["sides"][side]["errors"]) or None,
                      "elements": r["sides"][side].get("elements", []),
                      "thread_cpu": r["sides"][side].get("thread_cpu", [])}
                     for r in rows if r["batch"] == 1 and r["threads"] == args.thread_list[0]
                     for side in PIPELINE_SIDES]
    return {
        "device": args.device, "threads": args.threads, "repeats": args.repeats,
        "quick": args.quick, "video": video, "seconds": seconds,
        "machine": machine(), "sweeps": sweeps, "rows": rows, "breakdown": breakdown,
        "command": " ".join(["python -m bench", *args.argv]),
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu}
