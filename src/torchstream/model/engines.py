"""Engines: the ways one loaded model's forward pass can run, and the measured choice among them.

An engine is a callable on the forward pass's arguments that returns what the module returns
(the same nesting of tuples, lists and dicts of tensors). There are three:

- ``torch``: the module as loaded, eager PyTorch (for a TorchScript file: the file's graph).
- ``torchscript``: a TorchScript graph of the module (torchstream.model.graph): the whole forward
  pass in C++ with Python's GIL released.
- ``openvino``: the module converted by ``openvino.convert_model`` and compiled for the CPU in
  f32 (``INFERENCE_PRECISION_HINT=f32``): measured on 2 cores 1.5-4x faster than eager torch
  on torchvision classifiers, with outputs within 3e-5 of torch's.

No engine wins everywhere (CenterNet ran at 9.3 fps in torch and 4.4 in OpenVINO), so
``auto`` measures: it builds every candidate, checks each against torch on two inputs (floats
within ``atol + rtol * |torch|``, integers exact, the same shapes, so also the same row counts
where the number of rows varies), times a few interleaved calls of each and keeps the fastest
that passed. The choice is made once per model file, input signature, device and thread count
(:func:`cached_choice`) and reused by later pipelines.
"""

from __future__ import annotations

import copy
import os
import queue
import statistics
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torchstream.errors import ConfigError, TorchstreamError, exception_summary
from torchstream.model.choice_store import StoredChoice, openvino_cache_dir
from torchstream.model.graph import build_graph, unwrap_scripted

ENGINES = ("auto", "torch", "torchscript", "openvino")
ENGINE_BLURB = (
    "How the forward pass runs: auto (build torch, torchscript and openvino, keep the fastest "
    "whose outputs equal torch's on two inputs), torch (eager PyTorch, the module as loaded), "
    "torchscript (a TorchScript graph: trace for torchvision classifiers, script for "
    "detectors), openvino (converted by OpenVINO, f32 on the CPU). An engine that "
    "cannot run the model falls back to torch with a warning"
)
THREADS_BLURB = (
    "Threads of the forward pass; 0: chosen from the CPUs this process may use (for torch one "
    "left to the pipeline's other threads unless its forward pass is slow and faster on all "
    "of them; for OpenVINO all of them unless its forward pass is short)"
)
RTOL, ATOL = 1e-5, 1e-4  # an engine's outputs against torch's: |a - b| <= ATOL + RTOL * |b|


def parse_engine(text: str | None) -> str:
    name = (text or "auto").strip().lower()
    if name not in ENGINES:
        raise ConfigError(f"property 'engine' must be one of {', '.join(ENGINES)}, got {text!r}")
    return name


def openvino_available() -> bool:
    """Whether OpenVINO imports (not merely whether a package of that name is installed)."""
    _without_telemetry()
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


_cpu_share: int | None = None  # set_cpu_share(): this process's part of a shared machine


def set_cpu_share(cpus: int | None) -> None:
    """Count only ``cpus`` CPUs in this process (None: every one it may use): a process that
    runs beside others of its kind on one machine (a Ray actor per stream) then sizes its
    engines' threads to its share instead of each one claiming every core."""
    global _cpu_share
    _cpu_share = None if cpus is None else max(1, int(cpus))


def usable_cpus() -> int:
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = max(1, os.cpu_count() or 1)
    return min(cpus, _cpu_share) if _cpu_share else cpus


def resolve_threads(threads: int, engine: str) -> int:
    """``threads`` or, for 0, the default: eager torch with as many threads as cores slows a
    pipeline down (measured on 2 cores, mobilenet_v2: 29 fps with 2 torch threads, 45-50 fps
    with 1), because its threads spin while the pipeline's decoder and Python elements want
    the same cores; OpenVINO's pool yields them and gains from every core, unless its pass is
    short (:func:`one_core_free_if_light`)."""
    if threads > 0:
        return threads
    cpus = usable_cpus()
    return cpus if engine == "openvino" else max(1, cpus - 1)


# -- the engines ------------------------------------------------------------------------------


def _s(count: int) -> str:
    return "s" if count != 1 else ""


class Engine:
    """Calls the forward pass; ``name`` says which engine, ``detail`` how it was built."""

    name = "torch"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail

    def __call__(self, args: Sequence[Any]) -> Any:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} ({self.detail})" if self.detail else self.name

    def in_parallel(self, passes: int, threads: int) -> Engine:
        """The same model for ``passes`` forward passes at once, ``threads`` threads each."""
        raise NotImplementedError


class TorchEngine(Engine):
    """A module (eager, or a TorchScript graph) run by PyTorch with ``threads`` intra-op
    threads. The thread count is an OpenMP setting of the calling thread, so it is set in the
    thread that runs the model (a streaming thread), not where the engine was made."""

    def __init__(self, module: Any, threads: int, name: str = "torch", detail: str = "") -> None:
        super().__init__(detail)
        self.module = module
        self.threads = threads
        self.name = name

    def __call__(self, args: Sequence[Any]) -> Any:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(*args)

    def in_parallel(self, passes: int, threads: int) -> TorchEngine:
        """Torch runs a module from several threads at once as it is; each calling thread
        sets its own thread count."""
        detail = ", ".join(filter(None, [self.detail, f"{threads} thread{_s(threads)}"]))
        return TorchEngine(self.module, threads, self.name, detail)


_ov_core = None
_ov_lock = threading.Lock()


def _core():
    global _ov_core
    with _ov_lock:
        if _ov_core is None:
            _without_telemetry()
            import openvino

            _ov_core = openvino.Core()
        return _ov_core


def _without_telemetry() -> None:
    """Importing ``openvino.tools.ovc`` (``openvino.convert_model``) reports to OpenVINO's
    telemetry service unless the user opted out, from a thread that forks a sender process.
    A library converting a model for a video pipeline has no business phoning home, and a
    fork beside GStreamer's streaming threads is unsafe. With ``openvino_telemetry`` marked
    absent, OpenVINO uses its own no-op stand-in, as it does when the package is not
    installed."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def _leaves(output: Any, out: list) -> Any:
    """The tensors of a nested output in order, and its shape with leaf indices in their place."""
    import torch

    if isinstance(output, torch.Tensor):
        out.append(output)
        return len(out) - 1
    if isinstance(output, dict):
        return {k: _leaves(v, out) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output)(_leaves(v, out) for v in output)
    raise TorchstreamError(f"the model returns a {type(output).__name__}, not tensors")


def _rebuild(template: Any, tensors: list) -> Any:
    if isinstance(template, int):
        return tensors[template]
    if isinstance(template, dict):
        return {k: _rebuild(v, tensors) for k, v in template.items()}
    return type(template)(_rebuild(v, tensors) for v in template)


class _Compiled(Engine):
    """What both OpenVINO engines share: the compiled model and its infer requests, one per
    forward pass that may run at once (a request is not safe to use from two threads at
    once), each taken from a pool for a call. Pipelines that reuse a cached engine share the
    pool. A threading.local request would die with the thread state PyGObject makes and drops
    around every callback from a GStreamer thread, and freeing a request there crashed the
    process (measured)."""

    name = "openvino"
    cache: str | None = None  # the cache-dir setting (choice_store): where compiled models go

    def _start(self, core: Any, model: Any, threads: int, passes: int = 1) -> None:
        self.source = model  # for with_threads(), until forget_source()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads * passes}
        cache = openvino_cache_dir(self.cache)
        if cache is not None:  # a later start loads the compiled model instead of compiling
            config["CACHE_DIR"] = cache
        if passes == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        else:  # OpenVINO's streams: each runs its requests on its own threads
            config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": passes})
        self.compiled = core.compile_model(model, "CPU", config)
        self.threads = threads
        self.passes = passes
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(passes):
            self._requests.put(self.compiled.create_infer_request())
        at_once = f", {passes} passes at once" if passes > 1 else ""
        Engine.__init__(self, f"f32, {threads} thread{_s(threads)}{at_once}")

    def with_threads(self, threads: int, passes: int = 1) -> _Compiled:
        """The same model compiled again for ``threads`` threads (OpenVINO fixes the count at
        compilation), for ``passes`` forward passes at once."""
        if self.source is None:
            raise TorchstreamError("the OpenVINO model was compiled and its source dropped")
        other = copy.copy(self)
        other._start(_core(), self.source, threads, passes)
        return other

    def in_parallel(self, passes: int, threads: int) -> _Compiled:
        return self.with_threads(threads, passes)

    def forget_source(self) -> None:
        """Drop the model compiled from, once the thread count is settled."""
        self.source = None

    def _infer(self, args: Sequence[Any]) -> list:
        """The outputs, as torch tensors that own their memory."""
        import torch

        arrays = [a.detach().contiguous().numpy() for a in args]
        request = self._requests.get()
        try:
            results = request.infer(arrays, share_inputs=True, share_outputs=False)
        finally:
            self._requests.put(request)
        return [torch.from_numpy(r) for r in results.to_tuple()]


class OpenVINOEngine(_Compiled):
    """The model compiled by OpenVINO for the CPU. The first dim of every input is dynamic
    (batches, region rows and EOS's partial batch reuse one compiled model; measured no slower
    than a static shape). Outputs come back in the structure the module returns."""

    def __init__(self, source: Any, example: Sequence[Any], reference: Any, threads: int,
                 cache: str | None = None) -> None:
        import openvino
        import torch

        self.cache = cache
        leaves: list = []
        self.template = _leaves(reference, leaves)
        inputs = []
        for a in example:
            if not isinstance(a, torch.Tensor):
                raise TorchstreamError("the model takes a list of images (a detector); "
                                       "OpenVINO runs models that take tensors")
            inputs.append(openvino.PartialShape([-1, *a.shape[1:]]))
        core = _core()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notices
            converted = openvino.convert_model(source, example_input=tuple(example),
                                               input=inputs)
        self._adopt(core, converted, len(leaves), threads)

    def _adopt(self, core: Any, model: Any, outputs: int, threads: int) -> None:
        """Compile ``model`` (converted now or read back) once its outputs are the module's."""
        if len(model.outputs) != outputs:
            raise TorchstreamError(f"the OpenVINO model has {len(model.outputs)} outputs, the "
                                   f"module {outputs}")
        self._start(core, model, threads)

    @classmethod
    def from_stored(cls, xml: Path, reference: Any, threads: int,
                    cache: str | None = None) -> OpenVINOEngine:
        """The model converted in an earlier run (choice_store), read back instead of
        converted again."""
        engine = cls.__new__(cls)
        engine.cache = cache
        leaves: list = []
        engine.template = _leaves(reference, leaves)
        core = _core()
        engine._adopt(core, core.read_model(str(xml)), len(leaves), threads)
        return engine

    def __call__(self, args: Sequence[Any]) -> Any:
        return _rebuild(self.template, self._infer(args))


OPENVINO_MODEL_SUFFIXES = (".xml", ".onnx")


class OpenVINOFileEngine(_Compiled):
    """An OpenVINO IR (.xml with its .bin) or ONNX file compiled for the CPU in f32, called on
    torch tensors; returns ``{output name: tensor}`` (the model's own output names, so
    model-proc's ``layer_name`` finds them). A static first dim is made dynamic where the
    model allows, so that batch-size and region batches work."""

    def __init__(self, path: str, threads: int, cache: str | None = None) -> None:
        self.cache = cache
        core = _core()
        try:
            model = core.read_model(path)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's reader errors, summarised
            raise ConfigError(f"property 'model': OpenVINO cannot read {path}: "
                              f"{exception_summary(exc)}", detail=str(exc)) from exc
        self.input_shapes = [_static_dims(i.get_partial_shape()) for i in model.inputs]
        try:
            import openvino

            model.reshape({i.get_any_name() if i.get_names() else n:
                           openvino.PartialShape([-1, *i.get_partial_shape()[1:]])
                           for n, i in enumerate(model.inputs)
                           if i.get_partial_shape().rank.is_static
                           and len(i.get_partial_shape()) > 0})
        except Exception:  # noqa: BLE001,S110 - a model that cannot take other batch sizes
            pass  # runs at its own batch size; another one fails with the model's message
        self.names = tuple(o.get_any_name() if o.get_names() else f"output{k}"
                           for k, o in enumerate(model.outputs))
        self._start(core, model, threads)

    def __call__(self, args: Sequence[Any]) -> Any:
        return dict(zip(self.names, self._infer(args), strict=True))

    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of a first input shaped [N, C, H, W] with H and W fixed."""
        dims = self.input_shapes[0] if self.input_shapes else None
        if dims and len(dims) == 4 and dims[2] and dims[3]:
            return dims[2], dims[3]
        return None


def _static_dims(shape: Any) -> list[int] | None:
    if shape.rank.is_dynamic:
        return None
    return [d.get_length() if d.is_static else 0 for d in shape]


def load_openvino_model(path: str, threads: int = 0, cache: str | None = None):
    """A LoadedModel (torchstream.model.loading) whose module is ``path`` compiled by OpenVINO
    (``cache``: the cache-dir setting, choice_store)."""
    import torch

    from torchstream.model.loading import LoadedModel, check_file

    if not path:
        raise ConfigError("property 'model' is not set (an OpenVINO .xml or .onnx file)")
    if os.path.splitext(path)[1].lower() not in OPENVINO_MODEL_SUFFIXES:
        raise ConfigError(f"property 'model': {path} is not an OpenVINO model file "
                          f"({', '.join(OPENVINO_MODEL_SUFFIXES)}); PyTorch models go to "
                          "pytorch_tensor_inference")
    check_file(path, "property 'model': model file")
    if not openvino_available():
        raise ConfigError("openvino is not installed (pip install openvino): it is needed to "
                          f"run {path}")
    engine = OpenVINOFileEngine(path, resolve_threads(threads, "openvino"), cache)
    return LoadedModel(engine, path, torch.device("cpu"), "openvino",
                       input_size=engine.input_size())


# -- checking and choosing ----------------------------------------------------------------


def outputs_equal(a: Any, b: Any) -> bool:
    """Whether ``a`` (an engine's output) equals ``b`` (torch's): the same nesting, shapes
    and dtypes, integers exact, floats within ATOL + RTOL * |b|."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        return torch.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(outputs_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(outputs_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@dataclass
class Choice:
    """The engine a model runs with, and why: ``note`` for the log and the bus, ``fallback``
    set when an engine asked for (or tried by auto) could not run the model."""

    engine: Engine
    note: str
    fallback: str = ""
    warning: str = ""  # something else worth a warning (a damaged stored choice)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # for a shared instance: the engine its worker runs while several streams send buffers
    parallel: Engine | None = None


def time_engines(engines: Sequence[Engine], args: Sequence[Any], rounds: int = 3,
                 budget_s: float = 0.6, max_rounds: int = 9) -> list[float]:
    """Median milliseconds per call of each engine, calls interleaved round-robin (at least
    ``rounds``, more while ``budget_s`` lasts) after one warm-up call each."""
    for engine in engines:
        engine(args)
    samples: list[list[float]] = [[] for _ in engines]
    start = time.perf_counter()
    for r in range(max_rounds):
        if r >= rounds and time.perf_counter() - start > budget_s:
            break
        for i, engine in enumerate(engines):
            t0 = time.perf_counter()
            engine(args)
            samples[i].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(s) for s in samples]


def fastest(names: Sequence[str], times_ms: Sequence[float]) -> int:
    """Index of the fastest; torch (index 0) unless another is at least 3% faster, so timing
    noise does not swap engines that run alike."""
    best = min(range(len(times_ms)), key=times_ms.__getitem__)
    if best != 0 and times_ms[best] > 0.97 * times_ms[0]:
        return 0
    return best


@dataclass
class Candidate:
    """An engine to try: ``build()`` makes it (may raise), ``why_not`` says why it is not tried."""

    name: str
    build: Callable[[], Engine] | None
    why_not: str = ""


def choose(candidates: Sequence[Candidate], reference: Engine, outputs: Sequence[Any],
           inputs: Sequence[Sequence[Any]], asked: str, model_name: str) -> Choice:
    """Build the candidates, keep those whose outputs on ``inputs`` equal ``outputs`` (torch's
    on the same inputs), and return the fastest of torch and them (``asked`` != auto: the one
    asked for, when it passed). Failures become notes, never errors."""
    passed: list[Engine] = []
    notes: list[str] = []
    for candidate in candidates:
        if candidate.build is None:
            notes.append(f"{candidate.name}: {candidate.why_not}")
            continue
        try:
            engine = candidate.build()
            same = all(outputs_equal(engine(args), out)
                       for args, out in zip(inputs, outputs, strict=True))
        except TorchstreamError as exc:
            notes.append(f"{candidate.name}: {exc.message}")
            continue
        except Exception as exc:  # noqa: BLE001 - a converter's own errors, summarised
            notes.append(f"{candidate.name}: cannot convert model {model_name}: "
                         f"{type(exc).__name__}: {exception_summary(exc)}")
            continue
        if same:
            passed.append(engine)
        else:
            notes.append(f"{candidate.name}: outputs differ from torch's on the probe inputs "
                         f"(beyond {ATOL:g} abs + {RTOL:g} rel, or other shapes)")
    failed = "; ".join(notes)
    if asked != "auto":
        if passed:
            return Choice(passed[0], f"engine {passed[0].label}, as asked")
        return Choice(reference, f"engine {reference.label}: {failed}; running torch instead",
                      fallback=failed)
    engines = [reference, *passed]
    if len(engines) == 1:
        note = (f"engine {reference.label}, the only engine that passed ({failed})" if failed
                else f"engine {reference.label}, the only candidate")
        return Choice(reference, note)
    times = time_engines(engines, inputs[0])
    best = fastest([e.name for e in engines], times)
    timings = {e.label: round(t, 3) for e, t in zip(engines, times, strict=True)}
    measured = ", ".join(f"{label} {t:.2f} ms" for label, t in timings.items())
    note = f"engine {engines[best].label}, the fastest with torch's outputs: {measured}"
    if failed:
        note += f" (not used: {failed})"
    return Choice(engines[best], note, timings_ms=timings)


CHOICE_CACHE_SIZE = 8  # engines (and the weights they hold) kept for reuse, least recent dropped
_choices: OrderedDict[Hashable, tuple[Choice, Any]] = OrderedDict()
_choices_lock = threading.Lock()


def cached_choice(key: Hashable | None, make: Callable[[], Choice],
                  owner: Any = None) -> tuple[Choice, bool]:
    """The choice made earlier under ``key`` (and True), else ``make()`` (and False), kept
    with ``owner`` (the loaded
    model the engine is made from, which stays loaded for as long: a model loaded again then
    shares its weights instead of holding a second copy). ``key`` must name the weights too
    (``None``: nothing to name them by, always made afresh). TorchScript keeps every traced
    class's graphs for the life of the process (about 13 MB per trace of resnet50), so an
    engine is built once per key and reused."""
    if key is None:
        return make(), False
    with _choices_lock:
        entry = _choices.get(key)
        if entry is not None:
            _choices.move_to_end(key)
            return entry[0], True
    choice = make()
    with _choices_lock:
        _choices[key] = (choice, owner)
        while len(_choices) > CHOICE_CACHE_SIZE:
            _choices.popitem(last=False)
    return choice, False


def signature(args: Sequence[Any]) -> tuple:
    """Shapes, types and devices of a forward pass's arguments (tensors or lists of them)."""
    out = []
    for a in args:
        items = a if isinstance(a, (list, tuple)) else [a]
        out.append(tuple((tuple(t.shape), str(t.dtype), str(t.device)) for t in items))
    return tuple(out)


def refuse_graph_mode(value: str | None) -> None:
    """``graph-mode``, the older spelling of ``engine``, is gone: setting it says what to set
    instead rather than being ignored."""
    if value is None or not value.strip():
        return
    mode = value.strip().lower()
    instead = ("engine=torch" if mode == "eager" else "engine=torchscript"
               if mode in ("trace", "script", "freeze") else "engine=auto|torch|torchscript|"
               "openvino")
    raise ConfigError(f"property 'graph-mode' was removed; use {instead} (got "
                      f"graph-mode={value!r})")


def torchscript_mode(takes_image_list: bool) -> str:
    """How the torchscript engine makes its graph: trace, or script for detectors (whose
    post-processing branches on the data)."""
    return "script" if takes_image_list else "trace"


def choose_for_model(model: Any, engine: str, threads: int,
                     inputs: Sequence[Sequence[Any]], outputs: Sequence[Any],
                     shared: bool = False, store: StoredChoice | None = None,
                     cache: str | None = None, in_flight: bool = False) -> Choice:
    """The engine ``model`` (a LoadedModel) runs with, given torch's ``outputs`` on the two
    probe ``inputs`` (forward arguments). Candidates in auto: torch; a TorchScript graph for
    torchvision models (users' modules may branch on the data in ways two inputs cannot
    show, and a TorchScript file already is a graph); OpenVINO on the CPU for models that take
    tensors (tracing a detector that takes a list of images would freeze its number of
    detections), converted from the TorchScript graph when there is one (twice as fast to
    convert as the module). ``shared``: the instance is shared by streams (see
    :func:`side_by_side`). ``store``: where auto's choice is kept between processes
    (choice_store): an earlier run's choice is rebuilt and checked instead of made again;
    ``cache``: the cache-dir setting, for OpenVINO's compiled models; ``in_flight``: one
    stream that keeps several OpenVINO requests in flight (see :func:`settle_threads`)."""
    if model.source == "openvino":
        choice = settle_threads(Choice(model.module, f"engine {model.module.label}: the "
                                       "model file is OpenVINO's"), threads, inputs[0], shared,
                                in_flight)
        model.module = choice.engine  # a recompiled engine replaces the first one
        return choice
    asked = parse_engine(engine)
    reference = TorchEngine(model.module, resolve_threads(threads, "torch"))
    if asked == "torch":
        choice = Choice(reference, f"engine {reference.label}, as asked")
        return side_by_side(choice, threads, inputs[0]) if shared else choice
    mode = torchscript_mode(model.takes_image_list)
    built: dict[str, Engine] = {}

    def build_torchscript() -> Engine:
        graph = build_graph(model.module, mode, inputs[0])
        built["torchscript"] = TorchEngine(_Unwrapped(graph) if mode == "script" else graph,
                                           reference.threads, "torchscript", mode)
        return built["torchscript"]

    def build_openvino() -> Engine:
        script = built.get("torchscript")
        source = script.module if script is not None and mode != "script" else model.module
        return OpenVINOEngine(source, inputs[0], outputs[0], resolve_threads(threads, "openvino"),
                              cache)

    candidates = []
    if asked == "torchscript" or (asked == "auto" and model.source == "torchvision"):
        if model.source == "torchscript":
            candidates.append(Candidate("torchscript", None, "the model file is a TorchScript "
                                        "graph already: torch runs it"))
        else:
            candidates.append(Candidate("torchscript", build_torchscript))
    if asked in ("openvino", "auto"):
        why_not = ""
        if not openvino_available():
            why_not = "openvino is not installed (pip install openvino)"
        elif not str(model.device).startswith("cpu"):
            why_not = f"compiled for the CPU, and the model runs on {model.device}"
        elif model.takes_image_list:
            why_not = ("the model takes a list of images (a detector): tracing it would "
                       "freeze its number of detections")
        candidates.append(Candidate("openvino", None if why_not else build_openvino, why_not))
    with warnings.catch_warnings():  # a scripted detector says so once, on its first call
        warnings.filterwarnings("ignore", message=r".*always returns a \(Losses, Detections\)")
        damaged = ""
        if asked == "auto" and store is not None:
            recalled, damaged = _recall(store, reference, build_torchscript, inputs, outputs,
                                        threads, cache)
            if recalled is not None:
                return settle_threads(recalled, threads, inputs[0], shared, in_flight)
        choice = choose(candidates, reference, outputs, inputs, asked, model.name)
        if asked == "auto" and store is not None:
            winner = choice.engine
            unkept = store.save(winner.name, choice.timings_ms, choice.note,
                                winner.source if isinstance(winner, OpenVINOEngine) else None)
            if damaged or unkept:
                said = "; ".join(filter(None, [damaged, unkept]))
                choice = replace(choice, note=f"{choice.note}; {said}", warning=damaged)
        return settle_threads(choice, threads, inputs[0], shared, in_flight)


def _recall(store: StoredChoice, reference: TorchEngine, build_torchscript: Callable[[], Engine],
            inputs: Sequence[Sequence[Any]], outputs: Sequence[Any],
            threads: int, cache: str | None = None) -> tuple[Choice | None, str]:
    """(the choice an earlier run stored, rebuilt and checked against torch's outputs on
    the probe inputs, ""); (None, why) when it cannot be used, (None, "") when there is
    none."""
    record, why = store.load()
    if record is None:
        return None, why
    name = record["engine"]
    try:
        if name == "torch":
            engine: Engine = reference
        elif name == "torchscript":
            engine = build_torchscript()
        elif name == "openvino":
            engine = OpenVINOEngine.from_stored(store.ir, outputs[0],
                                                resolve_threads(threads, "openvino"), cache)
        else:
            raise TorchstreamError(f"an unknown engine {name!r}")
        same = all(outputs_equal(engine(args), out)
                   for args, out in zip(inputs, outputs, strict=True))
    except Exception as exc:  # noqa: BLE001 - any failure: the choice is made again
        store.remove()
        return None, (f"the stored engine choice {store.path} could not be rebuilt "
                      f"({type(exc).__name__}: {exception_summary(exc)}): removed")
    if not same:
        store.remove()
        return None, (f"the engine stored in {store.path} no longer gives torch's outputs: "
                      "removed")
    timings = {str(k): float(v) for k, v in record["timings_ms"].items()}
    note = (f"{record.get('note') or f'engine {engine.label}'}; as chosen by an earlier start "
            f"(kept in {store.path}), its outputs checked again")
    return Choice(engine, note, timings_ms=timings), ""


HEAVY_MS = 40.0  # a torch forward pass this long gets every core when that is faster ...
WIDER_GAIN = 0.85  # ... by at least this factor (15 %), so noise does not decide
LIGHT_MS = 4.5  # an OpenVINO forward pass shorter than this on every core leaves one free


def _pass_ms(choice: Choice, args: Sequence[Any]) -> float:
    """The chosen engine's forward pass in ms: as the choice timed it, else timed now."""
    current = choice.timings_ms.get(choice.engine.label)
    if current is None:
        (current,) = time_engines([choice.engine], args, rounds=1, budget_s=0.0, max_rounds=2)
    return current


def settle_threads(choice: Choice, threads: int, args: Sequence[Any],
                   shared: bool = False, in_flight: bool = False) -> Choice:
    """The choice with its final thread count when ``threads`` is 0 (the default): every
    core for a slow torch pass, one core free for a short OpenVINO pass; for an instance
    shared by streams (``shared``), also the engine for passes side by side, and likewise
    for one stream that keeps requests in flight (``in_flight``) when OpenVINO runs the
    model with the default threads: OpenVINO releases the GIL for the whole pass, so the
    requests truly run at once. An OpenVINO engine then drops the model it was compiled
    from."""
    passes_at_once = False  # the thread count is then the passes' (one thread each)
    if shared:
        choice = side_by_side(choice, threads, args)
    elif in_flight and threads == 0 and isinstance(choice.engine, _Compiled):
        choice = side_by_side(choice, threads, args, "with requests in flight")
        if choice.parallel is not None:  # it runs every pass: one compiled copy kept
            choice = replace(choice, engine=choice.parallel)
            passes_at_once = True
    if threads == 0 and not passes_at_once:
        choice = one_core_free_if_light(every_core_if_heavy(choice, args), args)
    for engine in (choice.engine, choice.parallel):
        if isinstance(engine, _Compiled):
            engine.forget_source()
    return choice


def parallel_passes(threads: int) -> tuple[int, int]:
    """(forward passes at once, threads each) for an instance shared by several streams on
    the CPU: one thread each by default, as many passes as the cores hold."""
    each = threads or 1
    return max(1, usable_cpus() // each), each


def side_by_side(choice: Choice, threads: int, args: Sequence[Any],
                 when: str = "while several streams share it") -> Choice:
    """Add the engine a shared instance runs while two or more streams send it buffers:
    several forward passes at once on a few threads each instead of one on every core. Its
    outputs on ``args`` must equal the chosen engine's, or it is left out (said in the note).

    On a CPU that the streams' decoding and preprocessing already fill, a pass on one thread
    costs less CPU than one spread over all cores (the threads wait on each other), so the
    cores do more frames. Measured on 2 cores, bare mobilenet_v2 in OpenVINO: one pass at a
    time on 2 threads 147-203 fps for 9.8-13.5 ms of CPU a frame; two passes at once on one
    thread each 228-239 fps for 8.2-8.5 ms."""
    passes, each = parallel_passes(threads)
    if passes < 2:
        return choice
    parallel = choice.engine.in_parallel(passes, each)
    if not outputs_equal(parallel(args), choice.engine(args)):
        return replace(choice, note=f"{choice.note}; {parallel.label} not used side by side: "
                                    "its outputs differ")
    note = f"{choice.note}; {when}: {passes} forward passes at once, {parallel.label}"
    return replace(choice, parallel=parallel, note=note)


def one_core_free_if_light(choice: Choice, args: Sequence[Any]) -> Choice:
    """A short OpenVINO forward pass runs on all the cores but one (compiled again).

    Spread over every core, a short pass costs more CPU than it saves time, and the pipeline's
    own work per frame (decode, convert, resize, Python elements: 3-7 ms here) is then as
    large as the model's. Measured on 2 cores in ``video_inference``: mobilenet_v3_small
    (1.8-3.7 ms on both cores, 2.3-4 ms on one) 7.1-7.6 ms of CPU a frame and 231-253 fps
    with 1 thread, 8.9-10.0 ms and 190-207 fps with 2. A longer pass keeps every core
    (mobilenet_v2, 5.5-7.6 ms on both: 1.3-1.8x faster than on one; resnet50 1.85x). The
    decision reads the one time the choice measured, so timing noise can at worst keep the
    old all-core count for a small model or free a core for a model near the bar."""
    engine = choice.engine
    cpus = usable_cpus()
    if not isinstance(engine, _Compiled) or cpus < 2 or engine.threads != cpus:
        return choice
    current = _pass_ms(choice, args)
    if current >= LIGHT_MS:
        return choice
    narrow = engine.with_threads(cpus - 1)
    (narrow_ms,) = time_engines([narrow], args)
    note = (f"{choice.note}; {cpus - 1} thread{_s(cpus - 1)}: its {current:.1f} ms "
            f"forward pass on every core is short, one core is left to the pipeline "
            f"({narrow_ms:.1f} ms)")
    return replace(choice, engine=narrow, note=note,
                   timings_ms={**choice.timings_ms, narrow.label: round(narrow_ms, 3)})


def every_core_if_heavy(choice: Choice, args: Sequence[Any]) -> Choice:
    """A slow torch forward pass gets all the cores, not one less (the default).

    The pipeline's own work per frame (decode, convert, resize, Python elements: 3-7 ms here)
    competes with torch's threads; for a small model that costs more than the second core
    gains (mobilenet_v2, eager: 45-50 fps with 1 thread, 29 with 2), for a model that takes
    100 ms it costs much less (CenterNet in ``object_detect``: 8.2-8.5 fps with 1 thread,
    10.7-11.3 with 2, measured with the bench). Timed here, both counts interleaved."""
    engine = choice.engine
    cpus = usable_cpus()
    if not isinstance(engine, TorchEngine) or engine.threads >= cpus:
        return choice
    current = _pass_ms(choice, args)
    if current < HEAVY_MS:
        return choice
    wide = TorchEngine(engine.module, cpus, engine.name,
                       ", ".join(filter(None, [engine.detail, f"{cpus} threads"])))
    narrow_ms, wide_ms = time_engines([engine, wide], args)
    if wide_ms > WIDER_GAIN * narrow_ms:
        return choice
    note = (f"{choice.note}; {cpus} threads: its {narrow_ms:.0f} ms forward pass with "
            f"{engine.threads} takes {wide_ms:.0f} ms with every core")
    return replace(choice, engine=wide, note=note)


class _Unwrapped:
    """A scripted torchvision detector, returning its detections as the module does (the
    graph returns ``(losses, detections)``)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def __call__(self, *args: Any) -> Any:
        return unwrap_scripted(self.graph(*args))
