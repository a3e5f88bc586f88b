"""pytorch_tensor_inference and openvino_tensor_inference: other/tensors in, a model's
outputs out, per buffer. One element body (:class:`TensorInference`); the two differ in their
properties and in how the model is loaded (a PyTorch model whose engine is chosen at
negotiation, or an OpenVINO IR / ONNX file compiled by OpenVINO).

A plain element with a chain function rather than a BaseTransform: with ``batch-size`` > 1 a
buffer's output leaves only when its batch is full (or at EOS / caps change), which does not
fit BaseTransform's one-in-one-out contract.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from torchstream.caps import MEDIA_TYPE, config_from_fields, format_dimensions
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    add_chain_pads,
    answer_src_caps_query,
    attempt,
    gproperties,
    guarded,
    pad_templates,
    post_engine_choice,
    restrict,
    string_prop,
    uint_prop,
)
from torchstream.errors import CapsError, TorchstreamError, exception_summary
from torchstream.gst import Gst
from torchstream.gst.buffers import COPY_FLAGS, MappedTensors, buffer_from_tensors, to_torch
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import attach_tensors_record
from torchstream.model.batching import BatchRunner, row_counts
from torchstream.model.engines import (
    ENGINE_BLURB,
    THREADS_BLURB,
    load_openvino_model,
    parse_engine,
    refuse_graph_mode,
)
from torchstream.model.loading import (
    LoadedModel,
    classifier_preprocess,
    is_torchvision_name,
    load_model,
    preferred_input_size,
    torchvision_default_weights,
)
from torchstream.model.sharing import (
    BATCH_TIMEOUT_BLURB,
    DEFAULT_TIMEOUT_MS,
    INSTANCE_BLURB,
    SharedInstance,
    join_instance,
    leave_instance,
)
from torchstream.model.timing import report_pass
from torchstream.preprocess.roi import is_region_batch
from torchstream.results.data import TensorsRecord

_TEMPLATE = Gst.Caps.from_string(MEDIA_TYPE)
CACHE_BLURB = ("Folder where engine=auto's choice and OpenVINO's compiled models are kept "
               "between starts, or off; none: $TORCHSTREAM_CACHE_DIR, else "
               "$XDG_CACHE_HOME/torchstream")
GRAPH_MODE_REMOVED = ("Removed: setting it is an error that names its replacement, engine "
                      "(graph-mode=eager is engine=torch; trace, script and freeze are "
                      "engine=torchscript)")


def instance_properties(properties: dict) -> tuple[str, ...]:
    """The properties that make a shared model instance: every one an inference element
    declares but the instance's name (elements naming one must agree on all of them)."""
    return tuple(name for name in properties if name not in ("model-instance-id", "graph-mode"))


RECENT_PASSES = 100  # the forward passes the reported latency follows
CAT = DebugCategory("torchstream-inference", "pytorch_tensor_inference and "
                    "openvino_tensor_inference: model loading, negotiation, engine, batches")


@dataclass
class _Stream:
    """What one negotiation sets up: made at caps, dropped at stop (or at new caps)."""

    in_config: object
    runner: BatchRunner
    output_spec: object
    src_caps: Gst.Caps
    pending: list[Gst.Buffer] = field(default_factory=list)  # the batch being filled
    latency: int = 0  # ns reported in latency queries: twice the slowest recent pass
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_PASSES))  # seconds
    # requests in flight: passes run on ``pool``; ``pusher`` (one thread) pushes each one's
    # outputs as soon as it is done, in order, so that no result waits for the next buffer
    # (a serialized query upstream can hold that buffer back until aggregate has the result)
    pool: ThreadPoolExecutor | None = None
    pusher: ThreadPoolExecutor | None = None
    depth: int = 1  # passes at once on the pool
    in_flight: deque = field(default_factory=deque)  # the pusher's futures, oldest first
    flushing: bool = False  # outputs of passes in flight are dropped, not pushed

    def close(self) -> None:
        """Wait for the passes in flight, dropping their outputs, and stop the threads (a
        stop, new caps)."""
        self.flushing = True
        self.settle()
        for executor in (self.pool, self.pusher):
            if executor is not None:
                executor.shutdown(wait=True)
        self.pool = self.pusher = None

    def settle(self) -> None:
        """Wait until nothing is in flight (the outputs pushed, or dropped when flushing)."""
        while self.in_flight:
            self.in_flight.popleft().exception()


@dataclass
class _Run:
    """What one run holds: the model loaded at start and the shared instance it joined, then
    the stream of the negotiated caps; all dropped at stop (PAUSED -> READY)."""

    model: LoadedModel
    instance: SharedInstance | None = None
    stream: _Stream | None = None


class TensorInference:
    """The body both inference elements share; a subclass gives ``PROPERTIES``,
    ``_load_model()`` and ``_runner_settings()`` (and assigns the ``do_`` methods, which
    PyGObject takes from a class's own namespace only)."""

    def _load_model(self):
        raise NotImplementedError

    def _runner_settings(self) -> tuple[str, int, str | None]:
        """(engine, threads, cache) for BatchRunner."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.sinkpad, self.srcpad = add_chain_pads(self)
        self.run: _Run | None = None
        self._proposed_size = None  # the input size last proposed (logged when it changes)

    # -- state ------------------------------------------------------------------------------

    def _start(self) -> None:
        self.check_ranges()
        started = time.perf_counter()
        model = self._load_model()
        notes = "".join(f"; {note}" for note in model.notes)
        CAT.info(self, f"loaded {model.name} on {model.device} in "
                       f"{time.perf_counter() - started:.2f} s{notes}")
        self.run = _Run(model, self._join_instance())

    def do_change_state(self, transition):
        if transition == Gst.StateChange.READY_TO_PAUSED and not attempt(self, self._start):
            return Gst.StateChangeReturn.FAILURE
        result = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY and self.run is not None:
            if self.run.stream is not None:
                self.run.stream.close()
            instance, self.run = self.run.instance, None
            if instance is not None:
                if leave_instance(instance, id(self)):
                    stats = instance.stats
                    CAT.info(self, f"model instance '{instance.name}' closed: {stats.buffers} "
                                   f"buffers in {stats.calls} forward passes (mean "
                                   f"{stats.mean_batch:.2f}, largest {stats.largest}, "
                                   f"{stats.most_at_once} at once at most)")
        return result

    def _join_instance(self) -> SharedInstance | None:
        name = (self.settings.model_instance_id or "").strip()
        if not name:
            return None
        instance = join_instance(name, {key: self.settings.get(key) for key in
                                        instance_properties(self.PROPERTIES)}, id(self))
        CAT.info(self, f"model instance '{name}': batches of up to "
                       f"{instance.batch_size} buffers across the elements sharing it, "
                       f"{instance.timeout * 1000:.0f} ms wait for more")
        return instance

    @property
    def _stream(self) -> _Stream | None:
        run = self.run  # read once: a query thread may see the run dropped at stop
        return run.stream if run is not None else None

    # -- latency ----------------------------------------------------------------------------

    def _answer_latency(self, query) -> bool:
        """Upstream's latency plus this element's: a live pipeline then waits for the model's
        results (meta_aggregate) and renders frames on time (sync sinks)."""
        if not self.sinkpad.peer_query(query):
            return False
        live, minimum, maximum = query.parse_latency()
        stream = self._stream
        own = stream.latency if stream is not None else 0
        if maximum != Gst.CLOCK_TIME_NONE:
            maximum += own
        query.set_latency(live, minimum + own, maximum)
        return True

    def _track_latency(self, stream: _Stream, seconds: float) -> None:
        """Report twice the slowest of the last RECENT_PASSES forward passes: raised as soon as
        a pass is slower than half of it (meta_aggregate in a live pipeline waits that long
        for results), lowered when the slow passes have left the window, so that a slow first
        pass or a busy moment does not delay the stream for good. A change is told to the
        pipeline (a LATENCY message makes it query and distribute the latency again)."""
        stream.recent.append(seconds)
        needed = int(2 * max(stream.recent) * Gst.SECOND)
        if needed > stream.latency * 1.25 or needed * 1.5 < stream.latency:
            stream.latency = needed
            CAT.debug(self, f"latency {needed / Gst.MSECOND:.1f} ms (twice the slowest of the "
                            f"last {len(stream.recent)} forward passes)")
            self.post_message(Gst.Message.new_latency(self))

    # -- negotiation ------------------------------------------------------------------------

    def _proposed_caps(self) -> Gst.Caps:
        """The weights' preprocessing size first (CHW, 3 channels), then anything."""
        caps = Gst.Caps.new_empty()
        size = None
        run = self.run
        if run is not None:
            size = run.model.preferred_input_size()
        elif self.settings.model and is_torchvision_name(self.settings.model):
            try:
                weights = torchvision_default_weights(self.settings.model)
                size = preferred_input_size(classifier_preprocess(weights)) if weights else None
            except Exception:  # noqa: BLE001 - a bad name is reported when the model loads
                size = None
        if size is not None:
            h, w = size
            if size != self._proposed_size:  # asked at every caps query: said once
                self._proposed_size = size
                CAT.debug(self, f"proposing input {w}x{h} (3 channels, CHW): the weights' "
                                "preprocessing size")
            caps.append(Gst.Caps.from_string(
                f'{MEDIA_TYPE},num_tensors=(uint)1,dimensions=(string)"{w}:{h}:3"'))
        caps.append(_TEMPLATE.copy())
        return caps

    def _sink_query(self, pad, parent, query):
        if Gst.QueryType.get_flags(query.type) & Gst.QueryTypeFlags.SERIALIZED:
            self._drain()  # it must come after the buffers before it (a drain query: their
            # outputs pushed)
        if query.type == Gst.QueryType.CAPS:
            caps = self._proposed_caps()
            query.set_caps_result(restrict(caps, query.parse_caps()))
            return True
        return pad.query_default(parent, query)

    def _src_query(self, pad, parent, query):
        if query.type == Gst.QueryType.LATENCY:
            return self._answer_latency(query)
        stream = self._stream
        caps = stream.src_caps if stream is not None else None
        return answer_src_caps_query(pad, parent, query, caps, _TEMPLATE)

    @guarded(False)
    def _set_caps(self, caps: Gst.Caps) -> bool:
        run = self.run
        if run is None:
            raise CapsError("caps arrived before the model was loaded")
        config = config_from_fields(caps.get_structure(0))
        if not is_region_batch(config):
            for info in config.tensors:
                if not info.is_fixed:
                    raise CapsError(
                        "input tensor dims must be fixed, or 0 in the first dim only of every "
                        f"tensor (a region batch), got {caps.get_structure(0).to_string()}"
                    )
        with run.instance.build_lock if run.instance is not None else ExitStack():
            runner, spec = self._make_runner(run, config)
        post_engine_choice(self, CAT, f"model {run.model.name}", runner.choice)
        if runner.choice_reused:
            CAT.debug(self, "engine reused from an earlier pipeline with the same model, input "
                            "and settings (not measured again)")
        src_caps = Gst.Caps.from_string(spec.config.to_caps_string())
        CAT.info(self, f"input {caps.to_string()} -> output {src_caps.to_string()}")
        if run.stream is not None:
            run.stream.close()
        run.stream = _Stream(config, runner, spec, src_caps)
        parallel = runner.choice.parallel if runner.choice and run.instance is None else None
        if parallel is not None:
            passes = getattr(parallel, "passes", 1)
            run.stream.pool = ThreadPoolExecutor(passes, thread_name_prefix="inference")
            run.stream.pusher = ThreadPoolExecutor(1, thread_name_prefix="inference-push")
            run.stream.depth = passes
            CAT.info(self, f"{passes} requests in flight ({parallel.label})")
        if run.instance is not None:
            run.instance.set_active(id(self), True)
        return self.srcpad.push_event(Gst.Event.new_caps(src_caps))

    def _live_upstream(self) -> bool:
        """Whether a live source feeds this element (asked at caps, when a live source
        answers): a live stream wants each frame's results soon, so it keeps one request on
        every core rather than requests in flight, which finish more frames a second but
        each one later (resnet50 on 1280x720 at 30 fps: 0.15-0.17 s from capture to output
        against 0.35-0.40 s)."""
        query = Gst.Query.new_latency()
        return bool(self.sinkpad.peer_query(query) and query.parse_latency()[0])

    def _make_runner(self, run: _Run, config) -> tuple[BatchRunner, object]:
        """The runner for ``config`` and its output spec; its engine chosen by the probe."""
        try:
            runner = BatchRunner(run.model, config, *self._runner_settings(),
                                 shared=run.instance is not None and run.instance.passes > 1,
                                 in_flight=run.instance is None and not self._live_upstream())
        except TorchstreamError as exc:
            raise CapsError(exc.message) from exc
        try:
            spec = runner.probe(int(self.settings.batch_size))
        except TorchstreamError:
            raise
        except Exception as exc:
            shapes = ", ".join(f"{t.dtype}{list(t.shape)}" for t in config.tensors)
            raise CapsError(
                f"model {run.model.name} fails on the negotiated input ({shapes}): "
                f"{type(exc).__name__}: {exception_summary(exc)}",
                detail=str(exc),
            ) from exc
        return runner, spec

    # -- data -------------------------------------------------------------------------------

    def _sink_event(self, pad, parent, event):
        kind = event.type
        if kind == Gst.EventType.CAPS:
            if self._flush_pending() != Gst.FlowReturn.OK or self._drain() != Gst.FlowReturn.OK:
                return False
            return self._set_caps(event.parse_caps())
        stream = self._stream
        if kind == Gst.EventType.FLUSH_START and stream is not None:
            stream.flushing = True  # the passes in flight push nothing more
        elif kind not in (Gst.EventType.FLUSH_STOP, Gst.EventType.EOS) \
                and Gst.EventType.get_flags(kind) & Gst.EventTypeFlags.SERIALIZED:
            self._drain()  # after the outputs of the buffers before it
        if kind == Gst.EventType.EOS:
            self._flush_pending()
            self._drain()
            run = self.run
            if run is not None and run.instance is not None:
                run.instance.set_active(id(self), False)
        elif kind == Gst.EventType.FLUSH_STOP and stream is not None:
            if stream.pending or stream.in_flight:
                CAT.debug(self, f"flush: {len(stream.pending)} buffers of a partial batch "
                                f"and {len(stream.in_flight)} passes in flight dropped")
            stream.pending.clear()
            stream.settle()
            stream.flushing = False
        return pad.event_default(parent, event)

    @guarded(FLOW_ERROR)
    def _chain(self, pad, parent, buf):
        stream = self._stream
        if stream is None:
            raise CapsError("buffers arrived before caps were negotiated")
        if self.run.instance is not None:
            return self._run_shared(buf)
        stream.pending.append(buf)
        if len(stream.pending) < int(self.settings.batch_size):
            return Gst.FlowReturn.OK
        return self._flush_pending()

    @guarded(FLOW_ERROR)
    def _flush_pending(self):
        stream = self._stream
        if stream is None or not stream.pending:
            return Gst.FlowReturn.OK
        batch, stream.pending = stream.pending, []
        started = time.perf_counter()
        if stream.pool is not None:
            result = self._settled(stream, stream.depth - 1)
            if result != Gst.FlowReturn.OK:
                return result
            future = stream.pool.submit(_forward, stream, batch)
            stream.in_flight.append(stream.pusher.submit(self._push_when_done, stream, batch,
                                                         future, started))
            return Gst.FlowReturn.OK
        names, rows, in_shapes, seconds = _forward(stream, batch)
        return self._finish(stream, batch, names, rows, in_shapes, seconds,
                            time.perf_counter() - started)

    def _push_when_done(self, stream: _Stream, batch, future, started: float):
        """On the pusher thread: the pass's outputs pushed once it is done (its errors go
        back to the streaming thread, which posts them)."""
        names, rows, in_shapes, seconds = future.result()
        if stream.flushing:
            return Gst.FlowReturn.FLUSHING
        return self._finish(stream, batch, names, rows, in_shapes, seconds,
                            time.perf_counter() - started)

    def _settled(self, stream: _Stream, keep: int) -> Gst.FlowReturn:
        """Wait until at most ``keep`` passes are in flight; the first flow return that is
        not OK (or the first error, raised) among those done."""
        result = Gst.FlowReturn.OK
        while stream.in_flight and (len(stream.in_flight) > keep
                                    or stream.in_flight[0].done()):
            done = stream.in_flight.popleft().result()
            if result == Gst.FlowReturn.OK:
                result = done
        return result

    @guarded(FLOW_ERROR)
    def _drain(self):
        """EOS, new caps, serialized events and queries: every pass in flight finished and
        its outputs pushed."""
        stream = self._stream
        if stream is None:
            return Gst.FlowReturn.OK
        return self._settled(stream, 0)

    def _finish(self, stream: _Stream, batch: list[Gst.Buffer], names, rows, in_shapes,
                seconds: float, waited: float) -> Gst.FlowReturn:
        """``seconds``: the forward pass; ``waited``: from the batch's submission to now (the
        latency a frame sees, which requests in flight make longer than its pass)."""
        CAT.log(self, lambda: f"ran {len(batch)} buffers (pts {_pts(batch[0])}) in "
                              f"{seconds * 1000:.1f} ms ({waited * 1000:.1f} ms with the wait)")
        self._track_latency(stream, waited)
        report_pass(self.run.model.name, seconds, len(batch))
        return self._push_outputs(stream, batch, names, rows, in_shapes)

    @guarded(FLOW_ERROR)
    def _run_shared(self, buf: Gst.Buffer):
        """model-instance-id: the buffer goes to the shared worker, which may run it with
        other streams' buffers; this thread waits for its own outputs."""
        stream, instance = self.run.stream, self.run.instance
        runner = stream.runner
        started = time.perf_counter()
        mapping = MappedTensors(buf, stream.in_config)
        with mapping as arrays:
            shapes = [tuple(shape) for shape in mapping.shapes]
            inputs = [to_torch(a, t.dtype)
                      for a, t in zip(arrays, stream.in_config.tensors, strict=True)]
            rows = row_counts([shapes])[0] if runner.region_batch else None
            future = instance.submit((id(runner.engine), stream.in_config),
                                     _shared_run(runner), inputs, rows)
            names, tensors = future.result()
        seconds = time.perf_counter() - started
        CAT.log(self, lambda: f"ran pts {_pts(buf)} on instance '{instance.name}' in "
                              f"{seconds * 1000:.1f} ms")
        self._track_latency(stream, seconds)
        return self._push_outputs(stream, [buf], names, [tensors], [shapes])

    def _push_outputs(self, stream: _Stream, batch: list[Gst.Buffer], names, rows,
                      in_shapes) -> Gst.FlowReturn:
        outputs, model = [], self.run.model
        for inbuf, tensors, shapes in zip(batch, rows, in_shapes, strict=True):
            out = buffer_from_tensors(tensors)
            out.copy_into(inbuf, COPY_FLAGS, 0, 0)
            attach_tensors_record(out, TensorsRecord(
                model=model.name,
                names=names,
                types=tuple(t.dtype for t in stream.output_spec.config.tensors),
                dimensions=format_dimensions([tuple(t.shape) for t in tensors]),
                input_types=tuple(t.dtype for t in stream.in_config.tensors),
                input_dimensions=format_dimensions(shapes),
                weights=model.weights,
            ))
            outputs.append(out)
        for out in outputs:
            result = self.srcpad.push(out)
            if result != Gst.FlowReturn.OK:
                return result
        return Gst.FlowReturn.OK


def _forward(stream: _Stream, batch: list[Gst.Buffer]):
    """(names, rows, input shapes, seconds) of one forward pass over ``batch``; on the
    pool's threads with requests in flight (the engine for passes at once), else on the
    streaming thread."""
    started = time.perf_counter()
    with ExitStack() as stack:  # inputs stay mapped until the forward pass is done
        inputs, in_shapes = [], []
        for buf in batch:
            mapping = MappedTensors(buf, stream.in_config)
            arrays = stack.enter_context(mapping)
            in_shapes.append([tuple(shape) for shape in mapping.shapes])
            inputs.append([to_torch(a, t.dtype)
                           for a, t in zip(arrays, stream.in_config.tensors, strict=True)])
        names, rows = stream.runner.run_buffers(inputs, in_shapes,
                                                parallel=stream.pool is not None)
    return names, rows, in_shapes, time.perf_counter() - started


def _shared_run(runner: BatchRunner):
    """What the shared worker calls for a batch of this runner's buffers (``counts``: the
    region batches' rows per buffer, None for whole frames)."""
    def run(inputs: list, counts: list[int] | None, side_by_side: bool):
        if counts is not None:
            return runner.run_rows(inputs, counts, side_by_side)
        return runner.run(inputs, side_by_side)
    return run


class PytorchTensorInference(FactoryMade, TensorInference, PropertyStore, Gst.Element):
    __gtype_name__ = "pytorch_tensor_inference"
    __gstmetadata__ = (
        "PyTorch tensor inference",
        "Filter/Tensor/Inference",
        "Runs a PyTorch model (torchvision factory, TorchScript, torch.export or pickled module) "
        "on other/tensors buffers, one output buffer per input buffer",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(MEDIA_TYPE)
    PROPERTIES = {
        "model": string_prop(
            "Model",
            "torchvision factory path (e.g. torchvision.models.resnet50), timm architecture "
            "(timm.<name>, with model-weights) or a model file: TorchScript archive, "
            "torch.export .pt2, or a pickled nn.Module .pt/.pth (loading a "
            "pickled module runs code from the file; TORCHSTREAM_REFUSE_PICKLE=1 refuses it)",
            None,
        ),
        "model-weights": string_prop(
            "Model weights",
            "Weights of a torchvision or timm model, read weights_only: a state dict, a "
            "checkpoint holding one (state_dict, model_state_dict, model; Lightning .ckpt; "
            "module. prefixes) or .safetensors; the class count comes from the weights; "
            "without it the torchvision DEFAULT weights are used",
            None,
            doc=(
                'the weights of a torchvision or timm model, read with `weights_only=True` (or by'
                ' safetensors): a state dict, a checkpoint holding one (`state_dict`, '
                '`model_state_dict`, `model`; a Lightning `.ckpt`; `module.` or `model.` prefixes'
                ' stripped) or a `.safetensors` file; the class count (and keypoint count, '
                "auxiliary heads) comes from the weights' shapes, the class names from the "
                'checkpoint (`categories`, `classes`, `class_names`, `idx_to_class`, '
                '`class_to_idx`) or a `labels.txt` beside the file; without it the torchvision '
                '`DEFAULT` weights are used'),
        ),
        "device": string_prop("Device", "Where the model runs: cpu, cuda or cuda:N (any case)",
                              "cpu",
            doc=(
                '`cpu`, `cuda` or `cuda:N`, any case; an unavailable device is an error at start'),
        ),
        "batch-size": uint_prop("Batch size", "Buffers run together in one forward pass", 1,
                                1024, 1,
            doc=(
                'buffers run in one forward pass; a partial batch runs at EOS and before new '
                'caps, and is dropped on flush'),
        ),
        "engine": string_prop("Engine", ENGINE_BLURB, "auto"),
        "threads": uint_prop("Threads", THREADS_BLURB, 0, 1024, 0,
            doc=(
                'threads of the forward pass; 0: chosen from the CPUs the process may use: all '
                'but one (at least 1) for torch and torchscript, all of them for a torch forward '
                'pass of 40 ms or more that is at least 15 % faster on all; all of them for '
                'OpenVINO, all but one for an OpenVINO pass under 4.5 ms (timed at the engine '
                'choice; see below); with `model-instance-id` on the CPU, threads of each pass '
                'side by side (0: one), and as many passes at once as the CPUs hold that many; '
                '0 with OpenVINO on a stream that is not live: one one-thread request in flight '
                'per core (see "Requests in flight")'),
        ),
        "cache-dir": string_prop("Cache folder", CACHE_BLURB, None,
            doc=(
                "where engine=auto's choice and OpenVINO's compiled models are kept, so that a "
                'later start skips choosing and compiling: a folder (made when missing), or '
                '`off` to keep nothing; none: `$TORCHSTREAM_CACHE_DIR`, else '
                '`$XDG_CACHE_HOME/torchstream` (`~/.cache/torchstream`); see "Engines"'),
        ),
        "graph-mode": string_prop("Graph mode", GRAPH_MODE_REMOVED, None,
            doc=(
                'removed (the older spelling of `engine`): setting it is an error at start that '
                'names its replacement (`eager`: `engine=torch`; `trace`, `script`, `freeze`: '
                '`engine=torchscript`, which traces classifiers and scripts detectors)'),
        ),
        "model-instance-id": string_prop("Model instance id", INSTANCE_BLURB, None,
            doc=(
                'elements of this process with the same id share one model and engine, and their '
                'buffers run together in one forward pass (up to `batch-size` buffers, one from '
                'each stream waiting at that moment); on the CPU one pass per core runs at once '
                'while several streams send buffers; elements naming one id must set the same '
                '`model`, `model-weights`, `device`, `engine`, `threads`, `batch-size` and '
                '`batch-timeout` (another value is an error at start naming it); empty: the '
                'element\'s own instance (see "Shared model instances")'),
        ),
        "batch-timeout": uint_prop("Batch timeout", BATCH_TIMEOUT_BLURB, 0, 10_000,
                                   DEFAULT_TIMEOUT_MS,
            doc=(
                'with `model-instance-id`: milliseconds the shared instance waits for other '
                "streams' buffers after the first buffer of a batch arrives (it never waits once "
                'every stream using the instance has sent one, or with passes side by side its '
                'share of them)'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)
    do_change_state = TensorInference.do_change_state

    def _load_model(self):
        refuse_graph_mode(self.settings.graph_mode)
        parse_engine(self.settings.engine)
        return load_model(self.settings.model, self.settings.model_weights,
                          self.settings.device)

    def _runner_settings(self) -> tuple[str, int, str | None]:
        return (self.settings.engine, int(self.settings.threads), self.settings.cache_dir)


class OpenvinoTensorInference(FactoryMade, TensorInference, PropertyStore, Gst.Element):
    __gtype_name__ = "openvino_tensor_inference"
    __gstmetadata__ = (
        "OpenVINO tensor inference",
        "Filter/Tensor/Inference",
        "Runs an OpenVINO IR (.xml + .bin) or ONNX model on the CPU on other/tensors buffers, "
        "one output buffer per input buffer; outputs named as in the model",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(MEDIA_TYPE)
    PROPERTIES = {
        "model": string_prop("Model", "OpenVINO IR (.xml, its weights in the .bin beside it) "
                             "or ONNX (.onnx) model file", None,
            doc=(
                '`.xml` (OpenVINO IR) or `.onnx` file; another kind, a missing file or one '
                'OpenVINO cannot read is an error at start naming it'),
        ),
        **{name: PytorchTensorInference.PROPERTIES[name] for name in (
            "batch-size", "threads", "cache-dir", "model-instance-id", "batch-timeout")},
    }
    __gproperties__ = gproperties(PROPERTIES)
    do_change_state = TensorInference.do_change_state

    def _load_model(self):
        return load_openvino_model(self.settings.model, int(self.settings.threads),
                                   self.settings.cache_dir)

    def _runner_settings(self) -> tuple[str, int, str | None]:
        return ("auto", int(self.settings.threads), self.settings.cache_dir)


def _pts(buf: Gst.Buffer) -> str:
    return "none" if buf.pts == Gst.CLOCK_TIME_NONE else f"{buf.pts / Gst.SECOND:.3f} s"
