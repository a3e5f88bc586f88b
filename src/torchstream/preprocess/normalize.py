"""Normalisation maths: ``((x/255)*(max-min)+min - mean[c]) / std[c]`` on uint8 tensors.

A uint8 input has only 256 values per channel, so the whole formula is precomputed into a
float32 look-up table per channel (exact to float32 rounding) and applied in one pass by
``cv2.LUT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from torchstream.errors import CapsError, ConfigError


@dataclass(frozen=True)
class NormalizeParams:
    range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if len(self.range) != 2:
            raise ConfigError(f"property 'range' needs two values <min,max>, got {self.range}")
        if not self.range[0] < self.range[1]:  # as model-proc's range: min < max
            raise ConfigError(f"property 'range' needs min < max, got <{self.range[0]},"
                              f"{self.range[1]}>")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ConfigError(
                f"properties 'mean' ({len(self.mean)} values) and 'std' ({len(self.std)} values) "
                "must have the same length"
            )
        if any(s == 0 for s in self.std):
            raise ConfigError(f"property 'std' must not contain 0, got {self.std}")

    @property
    def channels(self) -> int:
        return max(len(self.mean), len(self.std))

    def lookup_tables(self, channels: int) -> np.ndarray:
        """``[channels, 256]`` float32: the formula evaluated in float64 for every byte value."""
        n = self.channels
        if n not in (1, channels):
            raise CapsError(
                f"properties 'mean'/'std' give {n} channel values but the tensor has "
                f"{channels} channels"
            )
        lo, hi = self.range
        x = np.arange(256, dtype=np.float64) / 255.0 * (hi - lo) + lo
        mean = np.broadcast_to(np.asarray(self.mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(self.std, np.float64), (channels,))
        return ((x[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)


def channel_axis(shape: Sequence[int], channels: int) -> int:
    """Axis holding the channels: CHW (or NCHW) unless only the last dim fits."""
    if len(shape) < 2:
        return 0
    lead = len(shape) - 3 if len(shape) >= 3 else 0
    first, last = shape[lead], shape[-1]
    fits = (channels,) if channels > 1 else (1, 3, 4)
    if first in fits:
        return lead
    if last in fits:
        return len(shape) - 1
    raise CapsError(
        f"properties 'mean'/'std' give {channels} channel values but tensor shape "
        f"{tuple(shape)} has no channel dim of that size (first or last)"
    )


class Normalizer:
    """Applies ``params`` to tensors of one shape, writing into a given float32 array."""

    def __init__(self, params: NormalizeParams, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)
        channels = params.channels
        if channels == 1:
            self.axis = None
            self.tables = params.lookup_tables(1)
        else:
            self.axis = channel_axis(self.shape, channels)
            self.tables = params.lookup_tables(self.shape[self.axis])
        self._packed_table = None
        if self.axis is not None and self.axis == len(self.shape) - 1 and self.shape[-1] <= 4:
            # cv2.LUT applies a multi-channel table to interleaved data in one call
            self._packed_table = np.ascontiguousarray(self.tables.T[None, :, :])

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        if src.shape != self.shape or dst.shape != self.shape:
            raise ValueError(f"expected arrays of shape {self.shape}, got {src.shape}, {dst.shape}")
        if src.dtype != np.uint8 or dst.dtype != np.float32:
            raise ValueError(f"expected uint8 -> float32 arrays, got {src.dtype} -> {dst.dtype}")
        if not dst.flags.c_contiguous:
            # the reshapes below would write into a copy of a strided dst and lose the result
            out = np.empty(self.shape, np.float32)
            self(src, out)
            dst[...] = out
            return
        src = np.ascontiguousarray(src)
        if self.axis is None:
            cv2.LUT(src.reshape(-1, 1), self.tables[0].reshape(1, 256), dst=dst.reshape(-1, 1))
        elif self._packed_table is not None:
            c = self.shape[-1]
            cv2.LUT(src.reshape(-1, 1, c), self._packed_table, dst=dst.reshape(-1, 1, c))
        else:
            s = np.moveaxis(src, self.axis, 0)
            d = np.moveaxis(dst, self.axis, 0)
            for c in range(s.shape[0]):
                table = self.tables[c].reshape(1, 256)
                if d[c].flags.c_contiguous and s[c].flags.c_contiguous:
                    cv2.LUT(s[c].reshape(-1, 1), table, dst=d[c].reshape(-1, 1))
                else:
                    d[c] = self.tables[c][s[c]]


class BatchNormalizer:
    """Normalizers for ``[R, ...]`` batches whose R changes per buffer (one per R seen, the
    channel axis and tables checked once, from the caps' ``[0, ...]`` shape)."""

    def __init__(self, params: NormalizeParams, shape: Sequence[int]) -> None:
        self.params = params
        self.row_shape = tuple(shape[1:])
        Normalizer(params, (1, *self.row_shape))  # refuse bad channel counts at caps time
        self._cache: dict[int, Normalizer] = {}

    def for_shape(self, shape: Sequence[int]) -> Normalizer:
        if tuple(shape[1:]) != self.row_shape:
            raise CapsError(f"a buffer's rows are {tuple(shape[1:])}, the caps say "
                            f"{self.row_shape}")
        rows = int(shape[0])
        if rows not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[rows] = Normalizer(self.params, (rows, *self.row_shape))
        return self._cache[rows]
