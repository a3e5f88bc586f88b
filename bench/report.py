"""The printed report: fps and ratios, peak RSS, the targets, the per-element breakdown."""

from __future__ import annotations

import math
import re

from bench.models import PIPELINE_SIDES, SIDES
from bench.postproc import line as postproc_line

# pipeline fps / bare eager torch fps at batch 1 (docs/benchmarks.md); detectors must not lose
TORCH_TARGET = {"mobilenet_v2": 1.6, "resnet50": 1.3, "mobilenet_v3_small": 1.5}
DEFAULT_TORCH_TARGET = 0.95
BEST_TARGET = {"mobilenet_v2": 0.85}  # pipeline fps / the best engine's bare fps
RSS_MARGIN_MB = 400.0  # a pipeline's peak RSS over bare eager torch's
SHORT = {"bare-torch": "torch", "bare-best": "best", "decode": "decode", "plain": "plain",
         "expert-sync": "exp-sync", "expert-async": "exp-async", "processbin": "procbin",
         "bin": "bin"}
EXPERT_TARGET = 1.1  # video_inference / the expert's async loop (issue: faster than by hand)
BOUND_TARGET = 0.85  # video_inference / 1 / (1/decode + 1/model alone)
VERSUS = ("bare-torch", "bare-best", "plain")  # the ratio columns: pipeline / each of these


def _num(value, digits: int = 1, width: int = 8) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a".rjust(width)
    return f"{value:{width}.{digits}f}"


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def render(report: dict) -> str:
    out: list[str] = []
    m, v = report["machine"], report["video"]
    out.append(f"torchstream benchmark: {m['cpus']} CPUs ({m['cpu_model']}), device "
               f"{report['device']}")
    out.append(f"threads: {report['threads']} (default: torch's own on the bare-torch and "
               "plain sides, threads=0 in the pipelines; N: torch.set_num_threads(N) and "
               "threads=N); sides: torch = bare model in eager torch, best = bare model in "
               "the engine engine=auto chooses, plain = OpenCV + PyTorch loop")
    out.append(f"video: {v['video'].rsplit('/', 1)[-1]} {v['video_width']}x{v['video_height']}"
               f" ({v['video_frames']} frames, looped when more are asked); fps: median of "
               f"{report['repeats']} runs, steady state after the warm-up frames; sides "
               "interleaved, each run in its own process")
    if report["quick"]:
        out.append("QUICK RUN: a few frames, one repeat: the numbers mean nothing")
    out.append("")
    header = ["model", "batch", "threads", "frames"] + [f"{SHORT[s]} fps" for s in SIDES] + [
        f"{SHORT[p]}/{SHORT[q]}" for p in PIPELINE_SIDES for q in VERSUS]
    rows = []
    for r in report["rows"]:
        fps = {s: r["sides"][s]["fps"] for s in SIDES}
        batch = f"{r['batch']}" + (" (best)" if r["batch_label"] == "best" else "")
        ratios = [_ratio(fps[p], fps[q]) for p in PIPELINE_SIDES for q in VERSUS]
        rows.append([r["model"], batch, r["threads"], str(r["frames"])]
                    + [_num(fps[s]).strip() for s in SIDES]
                    + [_num(x, 2).strip() for x in ratios])
    out += ["Frames per second"] + _table(header, rows) + [""]

    rows = [[r["model"], str(r["batch"]), r["threads"]]
            + [", ".join(r["sides"][s]["engines"]) or "n/a" for s in ("bare-best", *PIPELINE_SIDES)]
            for r in report["rows"]]
    out += ["Engines chosen by engine=auto"] + _table(
        ["model", "batch", "threads", "best", "procbin", "bin"], rows) + [""]

    rows = []
    for r in report["rows"]:
        cells = []
        for side in SIDES:
            runs = [x for x in r["sides"][side]["fps_runs"]
                    if isinstance(x, (int, float)) and math.isfinite(x)]
            cells.append(f"{min(runs):.1f}-{max(runs):.1f}" if runs else "n/a")
        rows.append([r["model"], str(r["batch"]), r["threads"]] + cells)
    out += ["Spread: lowest-highest fps of the runs (the machine is shared: compare ratios)"]
    out += _table(["model", "batch", "threads"] + [f"{SHORT[s]} fps" for s in SIDES],
                  rows) + [""]

    header = ["model", "batch", "threads"] + [f"{SHORT[s]} MB" for s in SIDES] + [
        "procbin-torch", "bin-torch", "growth procbin", "growth bin"]
    rows = []
    for r in report["rows"]:
        rss = {s: r["sides"][s]["peak_rss_mb"] for s in SIDES}
        rows.append([r["model"], str(r["batch"]), r["threads"]]
                    + [_num(rss[s], 0).strip() for s in SIDES]
                    + [_num(rss[p] - rss["bare-torch"], 0).strip() for p in PIPELINE_SIDES]
                    + [_num(r["sides"][p]["rss_growth_mb"], 1).strip() for p in PIPELINE_SIDES])
    out += ["Peak RSS (MB, each side's own process; growth: RSS at the last frame minus RSS "
            "after the warm-up)"] + _table(header, rows) + [""]

    out += _expert(report)
    rows = [[r["model"], str(r["batch"]), r["threads"]]
            + [_num(r["sides"][s].get("cpu_ms_per_frame"), 1).strip() for s in SIDES]
            for r in report["rows"]]
    out += ["CPU milliseconds per frame (the side's whole process, every thread: getrusage; "
            "steadier than fps on a shared machine)"]
    out += _table(["model", "batch", "threads"] + [f"{SHORT[s]}" for s in SIDES], rows) + [""]

    out += ["Targets (batch 1, default threads; ratios from this run)"] + _targets(report)
    out += [""]

    for entry in report["breakdown"]:
        out += _breakdown(entry)
    errors = [(r["model"], f"{r['batch']} threads {r['threads']}", s, e)
              for r in report["rows"]
              for s in SIDES for e in r["sides"][s]["errors"]]
    errors += [(b["model"], 1, b["side"] + " profile", b["error"]) for b in report["breakdown"]
               if b.get("error")]
    if errors:
        out.append("ERRORS")
        out += [f"  {model} batch {batch} {side}: {error}" for model, batch, side, error in errors]
    post = report.get("postproc")
    if post:
        out.append("Post-processing (bench.postproc): " + (
            f"ERROR {post['error']}" if post.get("error") else postproc_line(post)))
        if post.get("tracker"):
            out.append("Post-processing (bench.postproc): " + postproc_line(post["tracker"]))
        for overlay in post.get("overlays", []):
            out.append("Post-processing (bench.postproc): " + postproc_line(overlay))
    out.append(f"total time: {report['seconds']:.0f} s")
    return "\n".join(out)


def bound(sides: dict) -> float:
    """What decode and the model alone allow when they share the cores:
    1 / (1/decode + 1/model in its best engine)."""
    decode, model = sides["decode"]["fps"], sides["bare-best"]["fps"]
    if not (math.isfinite(decode) and math.isfinite(model)) or decode <= 0 or model <= 0:
        return math.nan
    return 1 / (1 / decode + 1 / model)


def _expert(report: dict) -> list[str]:
    """The pipelines against the loop an expert writes (OpenCV decode + OpenVINO), and
    against the bound of decode and model sharing the cores."""
    rows = []
    for r in report["rows"]:
        s = r["sides"]
        if not math.isfinite(s["expert-async"]["fps"]):
            continue
        limit = bound(s)
        rows.append([r["model"], str(r["batch"]), r["threads"]]
                    + [_num(s[x]["fps"]).strip() for x in ("decode", "bare-best")]
                    + [_num(limit).strip()]
                    + [_num(s[x]["fps"]).strip() for x in ("expert-sync", "expert-async",
                                                            "processbin", "bin")]
                    + [_num(_ratio(s["bin"]["fps"], s["expert-async"]["fps"]), 2).strip(),
                       _num(_ratio(s["bin"]["fps"], s["expert-sync"]["fps"]), 2).strip(),
                       _num(_ratio(s["bin"]["fps"], limit), 2).strip(),
                       _num(_ratio(s["processbin"]["fps"], s["expert-async"]["fps"]),
                            2).strip()])
    if not rows:
        return []
    return (["Against the expert's loop (OpenCV decode + the weights' resize/crop + OpenVINO; "
             f"targets: bin/exp-async >= {EXPERT_TARGET:.2f}, bin/bound >= "
             f"{BOUND_TARGET:.2f})"]
            + _table(["model", "batch", "threads", "decode fps", "model fps", "bound fps",
                      "exp-sync fps", "exp-async fps", "procbin fps", "bin fps",
                      "bin/exp-async", "bin/exp-sync", "bin/bound", "procbin/exp-async"],
                     rows) + [""])


def _targets(report: dict) -> list[str]:
    lines = []
    for r in report["rows"]:
        if r["batch"] != 1 or r["threads"] != "default":
            continue
        s = r["sides"]
        goal = TORCH_TARGET.get(r["model"], DEFAULT_TORCH_TARGET)
        for side in PIPELINE_SIDES:
            vs_torch = _ratio(s[side]["fps"], s["bare-torch"]["fps"])
            vs_best = _ratio(s[side]["fps"], s["bare-best"]["fps"])
            vs_plain = _ratio(s[side]["fps"], s["plain"]["fps"])
            extra = s[side]["peak_rss_mb"] - s["bare-torch"]["peak_rss_mb"]
            checks = [(f"x torch {_num(vs_torch, 2).strip()} >= {goal:.2f}", vs_torch >= goal)]
            best_goal = BEST_TARGET.get(r["model"])
            if best_goal is not None:
                checks.append((f"x best {_num(vs_best, 2).strip()} >= {best_goal:.2f}",
                               vs_best >= best_goal))
            checks += [
                (f"x plain {_num(vs_plain, 2).strip()} >= 1.00", vs_plain >= 1.0),
                (f"RSS bare+{_num(extra, 0).strip()} MB <= +{RSS_MARGIN_MB:.0f}",
                 extra <= RSS_MARGIN_MB),
            ]
            text = "; ".join(f"{label} {'met' if ok else 'NOT met'}" for label, ok in checks)
            lines.append(f"  {r['model']:<20s} {SHORT[side]:<8s} {text}")
    return lines


def display_path(path: str) -> str:
    """``decodebin3/avdec_h264-3`` -> ``decodebin/avdec_h264``: GStreamer's instance numbers
    count the pipelines a side process has built, not the element's place; drop them."""
    parts = []
    for name in path.split("/"):
        stripped = re.sub(r"-\d+$", "", name)
        if stripped == name:
            stripped = re.sub(r"(?<=[a-z_])\d{1,2}$", "", name)
        parts.append(stripped)
    return "/".join(parts)


def _breakdown(entry: dict) -> list[str]:
    title = (f"Where the time goes: {entry['model']} batch 1, {entry['side']} form "
             f"({entry['frames']} frames, probes on: {_num(entry['fps_with_probes']).strip()} "
             "fps, not used above)")
    if entry.get("error"):
        return [title, f"  error: {entry['error']}", ""]
    rows = []
    for e in entry["elements"]:
        waits = e["kind"] in ("queue", "multiqueue", "meta_aggregate") or "dec" in e["kind"]
        rows.append([display_path(e["element"]), e["kind"] + (" (wait/latency)" if waits else ""),
                     str(e["frames"]), _num(e["median_ms"], 2).strip(),
                     _num(e["mean_ms"], 2).strip()])
    lines = [title]
    if rows:
        lines += ["  " + line for line in _table(
            ["element", "kind", "frames", "median ms", "mean ms"], rows)]
    cpu = ", ".join(f"{t['thread']} {t['cpu_ms_per_frame']:.1f}" for t in entry["thread_cpu"])
    lines.append(f"  CPU ms per frame by thread: {cpu or 'n/a'}")
    return lines + [""]
