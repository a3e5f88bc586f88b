"""opencv_tensor_normalize: uint8 tensors -> float32 ``((x/255)*(max-min)+min - mean)/std``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from torchstream.caps import MEDIA_TYPE, TensorsConfig, config_from_fields, parse_types
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    gproperties,
    guarded,
    pad_templates,
    restrict,
    string_prop,
)
from torchstream.errors import CapsError
from torchstream.gst import Gst, GstBase
from torchstream.gst.buffers import buffer_shapes, mapped
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import attach_tensors_record, read_tensors_record
from torchstream.preprocess.normalize import BatchNormalizer, NormalizeParams, Normalizer
from torchstream.preprocess.roi import is_region_batch
from torchstream.props import parse_float_list


def _retype(structure, new_type: str, expect: str):
    """Same tensor caps with every tensor's type changed from ``expect`` to ``new_type``."""
    s = structure.copy()
    if s.has_field("types"):
        try:
            types = parse_types(s.get_value("types"))
        except CapsError:
            return None
        if any(t != expect for t in types):
            return None
        s.set_value("types", ",".join([new_type] * len(types)))
    return s


CAT = DebugCategory("torchstream-normalize",
                    "opencv_tensor_normalize: normalisation tables per caps")


class OpenCVTensorNormalize(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "opencv_tensor_normalize"
    __gstmetadata__ = (
        "Tensor normalize",
        "Filter/Tensor",
        "uint8 tensors to float32: ((x/255)*(max-min)+min - mean[c]) / std[c], per channel, "
        "CHW or HWC as the caps say; one pass through a per-channel look-up table",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(f"{MEDIA_TYPE},types=uint8", f"{MEDIA_TYPE},types=float32")
    PROPERTIES = {
        "range": string_prop("Range", "Output range <min,max> that 0..255 maps to", "<0,1>"),
        "mean": string_prop("Mean", "Per-channel mean <a,b,c> (or one value) subtracted after "
                            "scaling to range", "<0>"),
        "std": string_prop("Std", "Per-channel standard deviation <a,b,c> (or one value) "
                           "divided by last", "<1>"),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.run: _Run | None = None

    @guarded(False)
    def do_start(self):
        # a bad value is a settings error (ConfigError), not a caps one
        self.run = _Run(NormalizeParams(
            range=parse_float_list(self.settings.range, "range"),
            mean=parse_float_list(self.settings.mean, "mean"),
            std=parse_float_list(self.settings.std, "std"),
        ))
        return True

    def do_stop(self):
        self.run = None
        return True

    @guarded(None)
    def do_transform_caps(self, direction, caps, filter_):
        to_src = direction == Gst.PadDirection.SINK
        result = Gst.Caps.new_empty()
        for i in range(caps.get_size()):
            s = _retype(caps.get_structure(i), "float32" if to_src else "uint8",
                        "uint8" if to_src else "float32")
            if s is not None:
                result.append_structure(s)
        return restrict(result, filter_)

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        config, run = config_from_fields(incaps.get_structure(0)), self.run
        run.region_batch = len(config) == 1 and is_region_batch(config)
        if run.region_batch:
            # [0,C,h,w] (tensor_roi_crop): R rows per buffer, each buffer's R in its record
            run.normalizers = []
            run.batch_normalizer = BatchNormalizer(run.params, config.tensors[0].shape)
        elif not all(t.is_fixed for t in config.tensors):
            raise CapsError(
                "opencv_tensor_normalize needs fixed tensor dimensions, or one tensor whose "
                f"first dim only is 0 (a region batch); got {config.dimensions_string}"
            )
        else:
            run.normalizers = [Normalizer(run.params, t.shape) for t in config.tensors]
        run.in_config = config
        CAT.info(self, f"{config.dimensions_string}: {run.params}"
                       + (" (region batch)" if run.region_batch else ""))
        return True

    def do_transform_size(self, direction, caps, size, othercaps):
        factor = 4 if direction == Gst.PadDirection.SINK else 0.25
        return True, int(size * factor)

    @guarded(FLOW_ERROR)
    def do_transform(self, inbuf, outbuf):
        record = read_tensors_record(inbuf)
        if record is not None:  # same shapes, new types: the record must say so
            attach_tensors_record(outbuf, replace(
                record, types=tuple("float32" for _ in record.types)))
        run = self.run
        if run.region_batch:
            return self._transform_rows(run, inbuf, outbuf)
        if len(run.normalizers) != 1:
            return self._transform_multi(run, inbuf, outbuf)
        shape = run.normalizers[0].shape
        n = int(np.prod(shape))
        with mapped(inbuf, Gst.MapFlags.READ) as src, mapped(outbuf, Gst.MapFlags.WRITE) as dst:
            run.normalizers[0](
                np.frombuffer(src, np.uint8, count=n).reshape(shape),
                np.frombuffer(dst, np.float32, count=n).reshape(shape),
            )
        return Gst.FlowReturn.OK

    def _transform_rows(self, run: _Run, inbuf, outbuf):
        [shape] = buffer_shapes(inbuf, run.in_config)
        n = int(np.prod(shape))
        if n == 0:
            return Gst.FlowReturn.OK  # a frame without regions: an empty buffer flows on
        normalizer = run.batch_normalizer.for_shape(shape)
        with mapped(inbuf, Gst.MapFlags.READ) as src, mapped(outbuf, Gst.MapFlags.WRITE) as dst:
            normalizer(
                np.frombuffer(src, np.uint8, count=n).reshape(shape),
                np.frombuffer(dst, np.float32, count=n).reshape(shape),
            )
        return Gst.FlowReturn.OK

    def _transform_multi(self, run: _Run, inbuf, outbuf):
        from torchstream.gst.buffers import MappedTensors, buffer_from_tensors

        with MappedTensors(inbuf, run.in_config) as arrays:
            outs = []
            for normalizer, array in zip(run.normalizers, arrays, strict=True):
                out = np.empty(array.shape, np.float32)
                normalizer(array, out)
                outs.append(out)
        fresh = buffer_from_tensors(outs)
        outbuf.remove_all_memory()
        for i in range(fresh.n_memory()):
            outbuf.append_memory(fresh.get_memory(i))
        return Gst.FlowReturn.OK


@dataclass
class _Run:
    """The parsed settings of one run, and the normalizers of its negotiated caps."""

    params: NormalizeParams
    in_config: TensorsConfig | None = None
    normalizers: list[Normalizer] = field(default_factory=list)
    region_batch: bool = False  # [0,C,h,w]: a frame's regions, R rows per buffer
    batch_normalizer: BatchNormalizer | None = None
