"""Buffer <-> array views: one GstMemory per tensor, mapped without copies.

Input side: a context manager maps every memory and gives numpy views over them (and torch
tensors over those views). Output side: arrays or torch tensors (any device) are copied exactly
once, straight into freshly allocated GstMemory.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from torchstream.caps import (
    TensorInfo,
    TensorsConfig,
    numpy_dtype,
    parse_dimensions,
    type_name_of,
)
from torchstream.errors import TorchstreamError
from torchstream.gst import Gst
from torchstream.gst.meta import read_tensors_record

# What an element's output buffer takes from its input buffer (its memory aside)
COPY_FLAGS = Gst.BufferCopyFlags.FLAGS | Gst.BufferCopyFlags.TIMESTAMPS | Gst.BufferCopyFlags.META


def numpy_values(array: np.ndarray, type_name: str) -> np.ndarray:
    """An array numpy can compute with: bfloat16 (viewed as uint16) as float32, else itself."""
    return to_torch(array, "bfloat16").float().numpy() if type_name == "bfloat16" else array


# Views over read-mapped memory are read-only; torch warns once per call about that. Inference
# never writes to its inputs, so the warning carries no information here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def buffer_shapes(buf: Gst.Buffer, config: TensorsConfig) -> list[tuple[int, ...]]:
    """The real torch-order shapes of ``buf``'s tensors.

    Fixed caps give them directly. Variable dims (0) come from the buffer's tensors record, or,
    without one, from the memory size when a tensor has a single variable dim.
    """
    if all(t.is_fixed for t in config.tensors):
        return [t.shape for t in config.tensors]
    record = read_tensors_record(buf)
    if record is not None and record.dimensions:
        shapes = parse_dimensions(record.dimensions)
        if len(shapes) == len(config):
            return shapes
    shapes = []
    for i, info in enumerate(config.tensors):
        shapes.append(_shape_from_size(info, _memory_size(buf, config, i)))
    return shapes


def _memory_size(buf: Gst.Buffer, config: TensorsConfig, index: int) -> int:
    if buf.n_memory() == len(config):
        return buf.peek_memory(index).get_sizes()[0]
    if len(config) == 1:
        return buf.get_size()
    raise TorchstreamError(
        f"buffer holds {buf.n_memory()} memories for {len(config)} tensors"
    )


def _shape_from_size(info: TensorInfo, size: int) -> tuple[int, ...]:
    if info.is_fixed:
        return info.shape
    variable = [i for i, d in enumerate(info.shape) if d == 0]
    if len(variable) != 1:
        raise TorchstreamError(
            f"cannot tell the shape of a {info.shape} tensor without its dimensions record"
        )
    known = info.nbytes([d for d in info.shape if d != 0])
    if known == 0 or size % known:
        raise TorchstreamError(f"memory of {size} bytes does not fit a {info.shape} tensor")
    shape = list(info.shape)
    shape[variable[0]] = size // known
    return tuple(shape)


class MappedTensors:
    """Maps a tensors buffer for reading; yields numpy views valid until exit."""

    def __init__(self, buf: Gst.Buffer, config: TensorsConfig,
                 shapes: Sequence[Sequence[int]] | None = None) -> None:
        self.buf = buf
        self.config = config
        self.shapes = list(shapes) if shapes is not None else buffer_shapes(buf, config)
        self._maps: list[tuple[object, object]] = []

    def __enter__(self) -> list[np.ndarray]:
        try:
            return self._map()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _map(self) -> list[np.ndarray]:
        arrays = []
        n_memory = self.buf.n_memory()
        single = len(self.config) == 1 and n_memory != 1
        needs = [info.nbytes(shape) for info, shape in
                 zip(self.config.tensors, self.shapes, strict=True)]
        # GStreamer drops zero-sized memories when it copies a buffer (gst_buffer_copy_into, as
        # make_writable does after a tee): the memories left are those of the non-empty tensors
        compact = (not single and n_memory != len(self.config)
                   and n_memory == sum(1 for need in needs if need))
        if n_memory != len(self.config) and not single and not compact:
            raise TorchstreamError(
                f"buffer holds {n_memory} memories for {len(self.config)} tensors"
            )
        memory_index = 0
        for i, (info, shape) in enumerate(zip(self.config.tensors, self.shapes, strict=True)):
            if compact and needs[i] == 0:
                arrays.append(np.empty(tuple(shape), dtype=numpy_dtype(info.dtype)))
                continue
            owner = self.buf if single else self.buf.peek_memory(memory_index if compact else i)
            memory_index += 1
            ok, mapinfo = owner.map(Gst.MapFlags.READ)
            if not ok:
                raise TorchstreamError(f"could not map the memory of tensor {i}")
            self._maps.append((owner, mapinfo))
            need = info.nbytes(shape)
            if mapinfo.size < need:
                raise TorchstreamError(
                    f"tensor {i} needs {need} bytes for shape {tuple(shape)} "
                    f"but its memory holds {mapinfo.size}"
                )
            count = need // info.itemsize
            array = np.frombuffer(mapinfo.data, dtype=numpy_dtype(info.dtype), count=count)
            arrays.append(array.reshape(shape))
        return arrays

    def __exit__(self, *exc) -> None:
        while self._maps:
            owner, mapinfo = self._maps.pop()
            owner.unmap(mapinfo)


@contextmanager
def mapped(buf: Gst.Buffer, flags: Gst.MapFlags):
    """A buffer's bytes as a memoryview, unmapped on exit (whatever happens inside)."""
    ok, info = buf.map(flags)
    if not ok:
        raise TorchstreamError(f"could not map a buffer ({flags})")
    try:
        yield info.data
    finally:
        buf.unmap(info)


def to_torch(array: np.ndarray, type_name: str):
    """A torch tensor sharing ``array``'s memory (bfloat16 reinterpreted from uint16)."""
    import torch

    tensor = torch.from_numpy(array)
    if type_name == "bfloat16":
        tensor = tensor.view(torch.bfloat16)
    return tensor


def one_torch_thread() -> None:
    """Run this thread's torch operations on one intra-op thread (an OpenMP setting of the
    calling thread). For the elements beside the model: a pipeline already runs them in
    parallel streaming threads, and a second torch thread for a resize and crop doubled its
    CPU for no gain in time (2.1 against 1.1 ms a 640x272 frame on 2 cores, 1.05 against 1.16
    ms wall), CPU the model then lacks."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _allocator():
    return Gst.Allocator.find(None)


def buffer_from_tensors(tensors: Sequence) -> Gst.Buffer:
    """A new buffer with one memory per tensor (numpy arrays or torch tensors, any device).

    Each tensor is copied exactly once, into the memory it will travel in.
    """
    import torch

    buf = Gst.Buffer.new()
    allocator = _allocator()
    for tensor in tensors:
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(tensor))
        name = type_name_of(tensor.dtype)
        nbytes = tensor.numel() * tensor.element_size()
        memory = allocator.alloc(max(nbytes, 1), None)
        if nbytes:
            ok, mapinfo = memory.map(Gst.MapFlags.WRITE)
            if not ok:
                raise TorchstreamError("could not map a new memory for writing")
            try:
                raw = np.frombuffer(mapinfo.data, dtype=numpy_dtype(name), count=tensor.numel())
                to_torch(raw, name).view(tensor.shape).copy_(tensor)
            finally:
                memory.unmap(mapinfo)
        if nbytes == 0:
            memory.resize(0, 0)
        buf.append_memory(memory)
    return buf
