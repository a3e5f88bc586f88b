"""Running a loaded model on batches of buffers' tensors, GStreamer-free.

A model may return a tensor, a tuple/list of tensors, a dict of tensors, a list of dicts (one
per image, torchvision detection) or TorchScript detection's ``(losses, detections)``. All of
them are turned into the same thing: output names, and per input buffer a list of tensors
without the batch dim.

Region batches (input caps with a first dim of 0, e.g. tensor_roi_crop's crops) are the other
mode: each buffer already holds R rows, the rows of all buffers of a batch run in one forward
pass and each buffer gets its own R output rows back (:meth:`BatchRunner.run_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchstream.caps import TensorInfo, TensorsConfig, torch_dtype, type_name_of
from torchstream.errors import TorchstreamError
from torchstream.model.choice_store import stored_choice
from torchstream.model.engines import (
    Choice,
    Engine,
    TorchEngine,
    cached_choice,
    choose_for_model,
    openvino_available,
    parse_engine,
    resolve_threads,
    signature,
    usable_cpus,
)
from torchstream.model.graph import unwrap_scripted
from torchstream.model.loading import LoadedModel
from torchstream.preprocess.roi import is_region_batch


@dataclass(frozen=True)
class OutputSpec:
    """Names and per-buffer caps of a model's outputs (0 where a dim varies per buffer)."""

    names: tuple[str, ...]
    config: TensorsConfig


def split_outputs(output, batch: int) -> tuple[tuple[str, ...], list[list], bool]:
    """-> (names, per-buffer tensors, whether the first dim of every tensor varies)."""
    import torch

    def per_buffer(named: list[tuple[str, torch.Tensor]]):
        for name, t in named:
            if not isinstance(t, torch.Tensor):
                raise TorchstreamError(
                    f"model output '{name}' is a {type(t).__name__}, not a tensor"
                )
            if t.dim() == 0 or t.shape[0] != batch:
                raise TorchstreamError(
                    f"model output '{name}' has shape {tuple(t.shape)}: its first dim should be "
                    f"the batch ({batch})"
                )
        names = tuple(n for n, _ in named)
        return names, [[t[i] for _, t in named] for i in range(batch)], False

    if isinstance(output, torch.Tensor):
        return per_buffer([("output", output)])
    if isinstance(output, dict):
        return per_buffer([(str(k), v) for k, v in output.items()])
    output = unwrap_scripted(output)
    if isinstance(output, (tuple, list)) and output:
        if all(isinstance(o, dict) for o in output):
            if len(output) != batch:
                raise TorchstreamError(
                    f"model returned {len(output)} result dicts for a batch of {batch}"
                )
            names = tuple(str(k) for k in output[0])
            rows = []
            for d in output:
                if tuple(str(k) for k in d) != names:
                    raise TorchstreamError("model result dicts do not all have the same keys")
                for k, v in d.items():
                    if not isinstance(v, torch.Tensor):
                        raise TorchstreamError(
                            f"model output '{k}' is a {type(v).__name__}, not a tensor"
                        )
                rows.append(list(d.values()))
            return names, rows, True
        if all(isinstance(o, torch.Tensor) for o in output):
            return per_buffer([(f"output{i}", t) for i, t in enumerate(output)])
    raise TorchstreamError(
        f"model returned an unsupported type ({type(output).__name__}); supported: a tensor, "
        "a tuple/list of tensors, a dict of tensors, or a list of such dicts"
    )


class BatchRunner:
    """Runs ``model`` on batches whose per-buffer inputs match ``input_config``.

    :meth:`probe` runs torch on two random inputs, which gives the output caps, and chooses
    the engine (torchstream.model.engines) from ``engine`` and ``threads``, keeping auto's
    choice and OpenVINO's compiled models in the ``cache`` folder (choice_store's setting);
    ``choice.note`` says which and why, ``choice.fallback`` why an engine could not be used."""

    def __init__(self, model: LoadedModel, input_config: TensorsConfig,
                 engine: str = "auto", threads: int = 0, cache: str | None = None,
                 shared: bool = False, in_flight: bool = False) -> None:
        self.region_batch = is_region_batch(input_config)
        if not self.region_batch:
            for info in input_config.tensors:
                if not info.is_fixed:
                    raise TorchstreamError(
                        f"input tensor shape {info.shape} must be fixed, or have its first dim "
                        "only 0 in every tensor (a region batch)"
                    )
        elif model.takes_image_list:
            raise TorchstreamError(
                f"model {model.name} takes a list of images (detection); region batches need a "
                "model that takes one batched tensor"
            )
        self.model = model
        self.input_config = input_config
        self.asked = parse_engine(engine)
        self.settings = (engine, int(threads))
        self.cache = cache
        # a model instance shared by streams on the CPU also gets an engine for passes side by
        # side (engines.side_by_side), run while several streams send buffers
        self.shared = shared and str(model.device).startswith("cpu")
        # one stream may keep requests in flight instead (engines.settle_threads)
        self.in_flight = in_flight and not self.shared and str(model.device).startswith("cpu")
        # torch until probe() has chosen (a model file OpenVINO runs is its own engine)
        self.engine = model.module if isinstance(model.module, Engine) else TorchEngine(
            model.module, resolve_threads(int(threads), "torch"))
        self.choice: Choice | None = None
        self.choice_reused = False  # the choice came from an earlier runner of the same model
        self.spec: OutputSpec | None = None  # set by probe()

    def _args(self, inputs: Sequence[Sequence]) -> list:
        """The forward pass's arguments: one batched tensor per input, on the device (a list
        of images for detectors)."""
        import torch

        device = self.model.device
        if self.model.takes_image_list:
            return [[buffer_inputs[0].to(device) for buffer_inputs in inputs]]
        args = []
        for j in range(len(self.input_config)):
            if len(inputs) == 1:
                batch = inputs[0][j].unsqueeze(0)
            else:
                batch = torch.stack([buffer_inputs[j] for buffer_inputs in inputs])
            args.append(batch.to(device, non_blocking=True))
        return args

    def forward(self, inputs: Sequence[Sequence], parallel: bool = False):
        """``inputs[b][j]``: tensor j of buffer b. Returns the model's raw output;
        ``parallel``: other forward passes may run at the same time."""
        return self._engine(parallel)(self._args(inputs))

    def _engine(self, parallel: bool) -> Engine:
        side_by_side = self.choice.parallel if parallel and self.choice else None
        return side_by_side or self.engine

    def _choose_engine(self, args: list, outputs: list) -> None:
        """Choose the engine, given torch's ``outputs`` on the probe's two ``args``; the same
        model, input signature, device and settings reuse the choice made before."""
        engine, threads = self.settings
        key = None
        if self.model.weights_key() is not None:
            key = (self.model.weights_key(), self.model.source, self.asked, threads,
                   signature(args[0]),
                   str(self.model.device), self.shared, self.in_flight)
        # only auto's choice is kept on disk (and only auto imports OpenVINO for its key)
        store = (stored_choice((*key, openvino_available()), usable_cpus(), self.cache)
                 if key is not None and self.asked == "auto" else None)
        self.choice, self.choice_reused = cached_choice(key, lambda: choose_for_model(
            self.model, engine, threads, args, outputs, self.shared, store, self.cache,
            self.in_flight),
            owner=self.model)
        self.engine = self.choice.engine

    def run(self, inputs: Sequence[Sequence], parallel: bool = False
            ) -> tuple[tuple[str, ...], list[list]]:
        names, rows, _ = split_outputs(self.forward(inputs, parallel), len(inputs))
        return names, rows

    def run_buffers(self, inputs: Sequence[Sequence], shapes: Sequence[Sequence[tuple]],
                    parallel: bool = False) -> tuple[tuple[str, ...], list[list]]:
        """A batch of buffers' tensors (``shapes``: each buffer's tensor shapes), whichever
        the mode: region batches by their rows, others whole."""
        if self.region_batch:
            return self.run_rows(inputs, row_counts(shapes), parallel)
        return self.run(inputs, parallel)

    def probe(self, batch: int = 1) -> OutputSpec:
        """Run twice on random inputs; dims that differ between runs vary per buffer."""
        if self.region_batch:
            self.spec = self._probe_rows()
            return self.spec
        import torch

        generator = torch.Generator().manual_seed(0)
        shapes_seen, args, outputs = [], [], []
        for _ in range(2):
            inputs = [[self._random(info, generator) for info in self.input_config.tensors]
                      for _ in range(batch)]
            args.append(self._args(inputs))
            outputs.append(self.engine(args[-1]))
            names, rows, first_dim_varies = split_outputs(outputs[-1], batch)
            shapes_seen.append([tuple(t.shape) for t in rows[0]])
            types = [type_name_of(t.dtype) for t in rows[0]]
        self._choose_engine(args, outputs)
        infos = []
        for i, (a, b) in enumerate(zip(*shapes_seen, strict=True)):
            shape = [d if d == e and len(a) == len(b) else 0 for d, e in zip(a, b, strict=False)]
            if len(a) != len(b):
                raise TorchstreamError(f"model output '{names[i]}' changes rank between runs")
            if first_dim_varies and shape:
                shape[0] = 0
            infos.append(TensorInfo(types[i], tuple(shape)))
        self.spec = OutputSpec(names, TensorsConfig(tuple(infos)))
        return self.spec

    # -- region batches: every buffer holds R rows (its own R), the model runs on the rows ----

    def _probe_rows(self, rows: int = 2) -> OutputSpec:
        """Output caps of a region batch: one output row per input row, R written 0; a row dim
        that differs between two runs is 0 too."""
        import torch

        generator = torch.Generator().manual_seed(0)
        seen, args, outputs = [], [], []
        for n in (rows, rows + 1):  # engines are checked on another row count than built on
            inputs = [[self._random(TensorInfo(info.dtype, (n, *info.shape[1:])), generator)
                       for info in self.input_config.tensors]]
            args.append(self._row_args(inputs))
            outputs.append(self.engine(args[-1]))
            names, tensors = self._row_outputs(outputs[-1], n)
            seen.append([tuple(t.shape) for t in tensors])
            types = [type_name_of(t.dtype) for t in tensors]
        self._choose_engine(args, outputs)
        infos = []
        for i, (a, b) in enumerate(zip(*seen, strict=True)):
            if len(a) != len(b):
                raise TorchstreamError(f"model output '{names[i]}' changes rank between runs")
            shape = [0] + [d if d == e else 0 for d, e in zip(a[1:], b[1:], strict=True)]
            infos.append(TensorInfo(types[i], tuple(shape)))
        return OutputSpec(names, TensorsConfig(tuple(infos)))

    def forward_rows(self, inputs: Sequence[Sequence], parallel: bool = False):
        """``inputs[b][j]``: tensor j of buffer b, ``[R_b, ...]``; the rows of every buffer run
        in one forward pass. Returns the model's raw output."""
        return self._engine(parallel)(self._row_args(inputs))

    def _row_args(self, inputs: Sequence[Sequence]) -> list:
        import torch

        args = []
        for j in range(len(self.input_config)):
            parts = [buffer_inputs[j] for buffer_inputs in inputs]
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
            args.append(batch.to(self.model.device, non_blocking=True))
        return args

    @staticmethod
    def _row_outputs(output, rows: int) -> tuple[tuple[str, ...], list]:
        """The model's outputs as named ``[rows, ...]`` tensors (one output row per input
        row is what lets rows be split back to their buffers)."""
        names, _, per_image = split_outputs(output, rows)
        if per_image:
            raise TorchstreamError(
                "the model returns one result dict per image (detection); region batches need "
                "outputs with one row per input row"
            )
        if isinstance(output, dict):
            tensors = list(output.values())
        elif isinstance(output, (tuple, list)):
            tensors = list(output)
        else:
            tensors = [output]
        return names, tensors

    def run_rows(self, inputs: Sequence[Sequence], counts: Sequence[int],
                 parallel: bool = False) -> tuple[tuple[str, ...], list[list]]:
        """Region batches: buffer b holds ``counts[b]`` rows. Returns the output names and per
        buffer its output tensors of ``counts[b]`` rows; with no row at all the model is not
        called (zero-row outputs shaped by the probe)."""
        import torch

        if self.spec is None:
            raise TorchstreamError("run_rows before probe: the output spec is unknown")
        total = sum(counts)
        if total == 0:
            empty = [torch.empty(tuple(info.shape), dtype=torch_dtype(info.dtype))
                     for info in self.spec.config.tensors]
            return self.spec.names, [list(empty) for _ in counts]
        names, tensors = self._row_outputs(self.forward_rows(inputs, parallel), total)
        per_buffer, start = [], 0
        for n in counts:
            per_buffer.append([t[start:start + n] for t in tensors])
            start += n
        return names, per_buffer

    @staticmethod
    def _random(info: TensorInfo, generator):
        import torch

        if info.dtype in ("float16", "bfloat16", "float32", "float64"):
            dtype = getattr(torch, info.dtype)
            return torch.rand(info.shape, generator=generator).to(dtype)
        if info.dtype == "bool":
            return torch.randint(0, 2, info.shape, generator=generator).bool()
        dtype = getattr(torch, info.dtype)  # uint8, int8, int32, int64
        return torch.randint(0, 100, info.shape, generator=generator).to(dtype)


def row_counts(shapes: Sequence[Sequence[tuple]]) -> list[int]:
    """Rows per buffer of a region batch (every tensor of a buffer must have as many)."""
    counts = []
    for buffer_shapes in shapes:
        rows = {shape[0] for shape in buffer_shapes}
        if len(rows) != 1:
            raise TorchstreamError(
                f"the tensors of a region batch buffer have different row counts: {sorted(rows)}"
            )
        counts.append(rows.pop())
    return counts
