"""The process of one side: ``python -m bench.worker`` reads jobs (one JSON line each) on
stdin and answers each with one ``BENCH_RESULT {json}`` line on stdout.

Each side of a (model, batch) configuration has its own process, so the peak RSS is that
side's own and one side's allocations, threads and caches neither help nor hurt another; the
process stays up between repetitions (the parent runs the sides in turn), so torch, GStreamer
and the model are loaded once per side instead of once per run.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.measure import FrameClock, current_rss_mb, peak_rss_mb, start_memory_window
from bench.models import (
    CENTERNET_SIZE,
    CENTERNET_THRESHOLD,
    CLASSIFIER_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODELS,
    ModelSpec,
)

RESULT_PREFIX = "BENCH_RESULT "


_TORCH_DEFAULT_THREADS: list[int] = []


def _setup_torch(job: dict):
    """torch's thread count for this job: ``threads`` "default" keeps what torch chose at
    start-up (what a user gets), a number sets it."""
    import torch

    if not _TORCH_DEFAULT_THREADS:
        _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
    threads = job["threads"]
    torch.set_num_threads(_TORCH_DEFAULT_THREADS[0] if threads == "default" else int(threads))
    return torch


def engine_threads(job: dict) -> int:
    """The ``threads`` property the pipelines get (0: their own default)."""
    return 0 if job["threads"] == "default" else int(job["threads"])


def _untrained(spec: ModelSpec):
    import torchvision

    if spec.task == "detection":
        factory = getattr(torchvision.models.detection, spec.short_name)
        return factory(weights=None, weights_backbone=None)
    return getattr(torchvision.models, spec.short_name)(weights=None)


def ensure_weights(spec: ModelSpec, path: str) -> None:
    """Seeded random weights at ``path`` unless a file is there (written to a temporary name
    and renamed, so workers running side by side never read half a file). A model file
    holds its own weights."""
    if spec.model_file is not None or os.path.exists(path):
        return
    import torch

    torch.manual_seed(0)
    model = _untrained(spec)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


_BUILT: dict[tuple[str, str, str], object] = {}


def build_model(spec: ModelSpec, weights: str, device: str):
    """The model as a PyTorch user builds it: the torchvision factory, the state dict, eval
    (built once per process, reused by the next repetitions)."""
    import torch

    key = (spec.key, weights, device)
    if key not in _BUILT and spec.model_file is not None:
        from torchstream.model.loading import load_model  # as the pipelines load it (shared object)

        _BUILT[key] = load_model(str(spec.model_file), device=device).module
    if key not in _BUILT:
        model = _untrained(spec)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        _BUILT[key] = model.eval().to(device)
    return _BUILT[key]


def best_engine(spec: ModelSpec, model, device: str, shape: tuple, batch: int, job: dict):
    """The engine pytorch_tensor_inference's engine=auto chooses for the model, chosen the
    same way (torchstream.model.batching.BatchRunner's probe: checked against eager torch on two
    inputs, the fastest kept)."""
    import torch

    from torchstream.caps import TensorInfo, TensorsConfig
    from torchstream.model.batching import BatchRunner
    from torchstream.model.loading import LoadedModel

    if spec.model_file is not None:
        from torchstream.model.loading import load_model

        loaded = load_model(str(spec.model_file), device=device)
    else:
        loaded = LoadedModel(model, spec.short_name, torch.device(device), "torchvision",
                             takes_image_list=spec.task == "detection")
    runner = BatchRunner(loaded, TensorsConfig((TensorInfo("float32", shape),)),
                         threads=engine_threads(job))
    runner.probe(batch)
    return runner.choice


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_bare(job: dict) -> dict:
    """The limit: the model alone, on input tensors made once, of the size the other sides
    give it (224x224 for classifiers, the 640x272 frame for detectors), same batch. The
    ``bare-torch`` side runs the module in eager torch, ``bare-best`` the engine that
    engine=auto chooses for it."""
    torch = _setup_torch(job)
    spec, device, batch = MODELS[job["model"]], job["device"], int(job["batch"])
    model = build_model(spec, job["weights"], device)
    generator = torch.Generator().manual_seed(0)
    if spec.task == "detection":
        h, w = job["video_height"], job["video_width"]
        inputs = [[torch.rand(3, h, w, generator=generator).to(device) for _ in range(batch)]]
    elif spec.task == "centernet":
        size = CENTERNET_SIZE
        inputs = [torch.rand(batch, 3, size, size, generator=generator).mul_(255).to(device)]
    else:
        size = CLASSIFIER_SIZE
        inputs = [torch.rand(batch, 3, size, size, generator=generator).to(device)]
    forward, label = (lambda args: model(*args)), "torch"
    if job["side"] == "bare-best":
        key = ("bare-best", spec.key, device, job["threads"], batch)
        if key not in _BUILT:
            one = inputs[0][0]  # one image: the list's first, or the batch's first row
            _BUILT[key] = best_engine(spec, model, device, tuple(one.shape), batch, job)
        forward, label = _BUILT[key].engine, _BUILT[key].engine.label
    clock = FrameClock(job["warmup"], job["frames"])
    with torch.inference_mode():
        while len(clock.times) < job["frames"]:
            forward(inputs)
            _sync(torch, device)
            clock.done(batch)
    return {**clock.summary(), "threads": torch.get_num_threads(), "engine": label}


def _video_frames(path: str, count: int):
    """Decoded BGR frames from OpenCV, looping over the file until ``count`` are given."""
    import cv2

    given = 0
    while given < count:
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise RuntimeError(f"OpenCV cannot open {path}")
        got_any = False
        while given < count:
            ok, frame = capture.read()
            if not ok:
                break
            got_any = True
            given += 1
            yield frame
        capture.release()
        if not got_any:
            raise RuntimeError(f"OpenCV decoded no frame from {path}")


def _letterbox(cv2, np, frame, size: int):
    """The frame scaled to fit ``size`` x ``size``, centred on black (CenterNet's input)."""
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh),
                                                      interpolation=cv2.INTER_LINEAR)
    return canvas, scale, left, top


def run_plain(job: dict) -> dict:
    """What a PyTorch user writes without torchstream: cv2.VideoCapture decodes, cv2.resize
    to 224x224 (classifiers; CenterNet: letterbox to 512), RGB, normalise, forward, read the
    result (softmax + top-1, or the detections above the threshold, boxes on the frame)."""
    import cv2
    import numpy as np

    torch = _setup_torch(job)
    spec, device, batch = MODELS[job["model"]], job["device"], int(job["batch"])
    model = build_model(spec, job["weights"], device)
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    size = CLASSIFIER_SIZE
    clock = FrameClock(job["warmup"], job["frames"])
    pending: list = []
    placement: list = []  # CenterNet: (scale, left, top) of each pending frame's letterbox
    results: list = []

    def flush() -> None:
        with torch.inference_mode():
            if spec.task == "centernet":
                for x, (scale, left, top) in zip(pending, placement, strict=True):
                    rows = model(x[None].to(device))[0].cpu()
                    rows = rows[rows[:, 4] >= CENTERNET_THRESHOLD]
                    boxes = (rows[:, :4] - torch.tensor([left, top, left, top])) / scale
                    results.append((boxes, rows[:, 5].long()))
                placement.clear()
            elif spec.task == "detection":
                outputs = model([t.to(device) for t in pending])
                for out in outputs:
                    keep = out["scores"] >= 0.5
                    results.append((out["boxes"][keep].cpu(), out["labels"][keep].cpu()))
            else:
                probs = torch.softmax(model(torch.stack(pending).to(device)), dim=1)
                top = probs.max(dim=1)
                results.extend(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        clock.done(len(pending))
        pending.clear()
        results.clear()

    for frame in _video_frames(job["video"], job["frames"]):
        if spec.task == "centernet":
            boxed, scale, left, top = _letterbox(cv2, np, frame, CENTERNET_SIZE)
            rgb = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)
            pending.append(torch.from_numpy(rgb).permute(2, 0, 1).float())
            placement.append((scale, left, top))
        elif spec.task == "detection":
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            pending.append(torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255))
        else:
            rgb = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR),
                               cv2.COLOR_BGR2RGB)
            x = (rgb.astype(np.float32) / 255 - mean) / std
            pending.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return {**clock.summary(), "threads": torch.get_num_threads()}


def run_decode(job: dict) -> dict:
    """Decoding alone (OpenCV), the other half of the expert's loop: with the model alone
    it bounds what any loop sharing the cores can do, 1 / (1/decode + 1/model)."""
    clock = FrameClock(job["warmup"], job["frames"])
    for _frame in _video_frames(job["video"], job["frames"]):
        clock.done()
    return clock.summary()


_EXPERT: dict[tuple, object] = {}
RESIZE_SIZE = 256  # the classifiers' weights: shorter side to 256, centre crop 224


def _expert_crop(cv2, frame):
    """Shorter side to 256 (INTER_AREA, OpenCV's antialiased shrink), centre crop 224: the
    weights' own transform as an OpenCV user writes it."""
    h, w = frame.shape[:2]
    scale = RESIZE_SIZE / min(h, w)
    nw, nh = max(CLASSIFIER_SIZE, round(w * scale)), max(CLASSIFIER_SIZE, round(h * scale))
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    top, left = (nh - CLASSIFIER_SIZE) // 2, (nw - CLASSIFIER_SIZE) // 2
    return resized[top:top + CLASSIFIER_SIZE, left:left + CLASSIFIER_SIZE]


def _expert_model(job: dict, spec: ModelSpec, fused: bool):
    """The model compiled by OpenVINO as an expert does it: converted from torch; for the
    async loop with the preprocessing in the graph (uint8 BGR NHWC in: f32, BGR->RGB,
    mean/scale by PrePostProcessor) and the THROUGHPUT hint, else f32 NCHW and LATENCY.

    The precision is pinned to f32 as the pipelines' engine runs it: on a CPU with AVX512-BF16
    OpenVINO's default is bfloat16, which on mobilenet_v2 changed the top-1 class of 10-16 %
    of bikes.mp4's and cockatoo.mp4's frames (probabilities off by up to 0.26) and is ~1.5x
    cheaper; a loop that gives other answers is not the one to compare with."""
    key = (spec.key, job["weights"], fused)
    if key not in _EXPERT:
        import openvino as ov
        import torch
        from openvino.preprocess import ColorFormat, PrePostProcessor

        model = build_model(spec, job["weights"], "cpu")
        example = torch.zeros(1, 3, CLASSIFIER_SIZE, CLASSIFIER_SIZE)
        converted = ov.convert_model(model, example_input=example)
        if fused:
            ppp = PrePostProcessor(converted)
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
                .set_color_format(ColorFormat.BGR)
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            ppp.input().preprocess().convert_element_type(ov.Type.f32) \
                .convert_color(ColorFormat.RGB) \
                .mean([255 * m for m in IMAGENET_MEAN]).scale([255 * v for v in IMAGENET_STD])
            converted = ppp.build()
        hint = "THROUGHPUT" if fused else "LATENCY"
        _EXPERT[key] = ov.Core().compile_model(converted, "CPU", {
            "PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"})
    return _EXPERT[key]


def run_expert(job: dict) -> dict:
    """The loop an experienced engineer writes instead of a pipeline (classifiers):
    cv2.VideoCapture decodes, the weights' resize and crop in OpenCV, then

    - expert-sync: RGB and (x/255 - mean)/std in numpy, one OpenVINO request at a time;
    - expert-async: the uint8 BGR crop straight into the model with its preprocessing built
      in, through an AsyncInferQueue of 2 requests.

    Each result is read (softmax top-1) as the pipelines' are."""
    import cv2
    import numpy as np

    spec = MODELS[job["model"]]
    if spec.task != "classification":
        return {"error": "the expert loops are written for classifiers"}
    fused = job["side"] == "expert-async"
    compiled = _expert_model(job, spec, fused)
    clock = FrameClock(job["warmup"], job["frames"])
    results: list = []

    def top1(scores) -> None:
        scores = scores[0]
        e = np.exp(scores - scores.max())
        best = int(e.argmax())
        results.append((best, float(e[best] / e.sum())))
        clock.done()

    frames = _video_frames(job["video"], job["frames"])
    if fused:
        import openvino as ov

        queue = ov.AsyncInferQueue(compiled, 2)
        queue.set_callback(lambda request, _: top1(request.get_output_tensor(0).data))
        for frame in frames:
            queue.start_async({0: _expert_crop(cv2, frame)[None]})
        queue.wait_all()
    else:
        mean = np.array(IMAGENET_MEAN, np.float32)
        std = np.array(IMAGENET_STD, np.float32)
        request = compiled.create_infer_request()
        for frame in frames:
            rgb = cv2.cvtColor(_expert_crop(cv2, frame), cv2.COLOR_BGR2RGB)
            x = ((rgb.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
            request.infer({0: np.ascontiguousarray(x)})
            top1(request.get_output_tensor(0).data)
    return {**clock.summary(), "engine": "openvino"}


def run_pipeline(job: dict) -> dict:
    """A torchstream pipeline (processbin or bin form) from ``filesrc ! decodebin`` to a
    fakesink, in this process with the elements registered in-process."""
    torch = _setup_torch(job)
    from bench.profile import PipelineProfile
    from bench.runner_gst import play
    from torchstream.elements import register_all
    from torchstream.gst import Gst

    register_all()
    description = job["description"]
    pipeline = Gst.parse_launch(description)
    clock = FrameClock(job["warmup"], job["frames"])
    sink_pad = pipeline.get_by_name("sink").get_static_pad("sink")

    def on_sink_buffer(_pad, _info):
        clock.done()
        return Gst.PadProbeReturn.OK

    sink_pad.add_probe(Gst.PadProbeType.BUFFER, on_sink_buffer)
    profile = PipelineProfile() if job.get("profile") else None
    outcome = play(pipeline, job["frames"], job["video_frames"], job["video_fps"],
                   clock, profile, timeout=float(job.get("timeout", 900)))
    del pipeline, sink_pad
    gc.collect()  # the next repetition starts from a clean heap
    if outcome.get("error"):
        return {"error": outcome["error"]}
    result = {**clock.summary(), "threads": torch.get_num_threads(),
              "engines": outcome.get("engines", [])}
    if profile is not None:
        result["elements"] = profile.element_rows()
        result["thread_cpu"] = profile.thread_rows(max(1, len(clock.times)))
    return result


def run_sweep(job: dict) -> dict:
    """Bare-model fps at each candidate batch size, to pick the best batch for the run."""
    torch = _setup_torch(job)
    spec, device = MODELS[job["model"]], job["device"]
    model = build_model(spec, job["weights"], device)
    generator = torch.Generator().manual_seed(0)
    fps = {}
    with torch.inference_mode():
        for batch in job["candidates"]:
            if spec.task == "detection":
                h, w = job["video_height"], job["video_width"]
                args = [[torch.rand(3, h, w, generator=generator).to(device)
                         for _ in range(batch)]]
            else:
                args = [torch.rand(batch, 3, CLASSIFIER_SIZE, CLASSIFIER_SIZE,
                                   generator=generator).to(device)]
            model(*args)  # warm-up
            _sync(torch, device)
            calls = max(2, math.ceil(8 / batch))
            start = time.perf_counter()
            for _ in range(calls):
                model(*args)
            _sync(torch, device)
            fps[str(batch)] = calls * batch / (time.perf_counter() - start)
    return {"sweep_fps": fps, "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
            "rss_mb": current_rss_mb()}


def run_job(job: dict) -> dict:
    try:
        ensure_weights(MODELS[job["model"]], job["weights"])
        start_memory_window()
        return RUNNERS[job["side"]](job)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this run's result
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def warm(job: dict) -> dict:
    """Everything a side needs before its first timed run: the weights file, the imports,
    the model (bare, plain) or the elements (pipelines)."""
    spec = MODELS[job["model"]]
    ensure_weights(spec, job["weights"])
    torch = _setup_torch(job)
    if job["for_side"] in ("bare-torch", "bare-best", "plain", "sweep", "expert-sync",
                           "expert-async"):
        import cv2  # noqa: F401

        build_model(spec, job["weights"], job["device"])
        if job["for_side"] in ("expert-sync", "expert-async") \
                and spec.task == "classification":
            _expert_model(job, spec, job["for_side"] == "expert-async")
    elif job["for_side"] == "decode":
        import cv2  # noqa: F401
    else:
        from torchstream.elements import register_all

        register_all()
    return {"threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb()}


RUNNERS = {"warm": warm, "bare-torch": run_bare, "bare-best": run_bare, "plain": run_plain,
           "decode": run_decode, "expert-sync": run_expert, "expert-async": run_expert,
           "processbin": run_pipeline, "bin": run_pipeline, "sweep": run_sweep}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        result = run_job(json.loads(line))
        print(RESULT_PREFIX + json.dumps(result, default=_jsonable), flush=True)
        sys.stderr.flush()
    return 0


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
