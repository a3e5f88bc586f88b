"""tensor_postproc_label: class scores (or indices) -> a Classification on the buffer.

The tensors pass through untouched (in place: the buffer is made writable for its metadata,
which copies no tensor memory); each buffer gains a frame-level classification in its results
metadata (``torchstream.gst.meta.read_results``). A region batch (a buffer with a region batch
record, from tensor_roi_crop) instead gets row i's classification on region ids[i]. The methods
are defined in :mod:`torchstream.decode.classify`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.caps import MEDIA_TYPE, TensorsConfig, config_from_fields
from torchstream.decode.classify import LabelParams, classify, classify_rows, num_classes
from torchstream.decode.labels import LabelsFromWeights, check_covers, load_labels
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    bool_prop,
    double_prop,
    gproperties,
    guarded,
    pad_templates,
    string_prop,
)
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.gst import Gst, GstBase
from torchstream.gst.buffers import MappedTensors, numpy_values
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import (
    add_classification,
    read_results,
    read_roi_batch,
    read_tensors_record,
    write_results,
)
from torchstream.results.data import ModelRecord

CAT = DebugCategory("torchstream-postproc-label",
                    "tensor_postproc_label: labels and classifications")


@dataclass
class _Run:
    """What one run (start to stop) keeps: the settings' parameters and their labelling, the
    negotiated tensors, and why the output is left unlabelled (if-scores, said once)."""

    params: LabelParams
    labelling: LabelsFromWeights
    config: TensorsConfig | None = None
    not_scores: str | None = None


class TensorPostprocLabel(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "tensor_postproc_label"
    __gstmetadata__ = (
        "Tensor to label",
        "Filter/Tensor",
        "Turns a classifier's output tensor into a label, label id and confidence attached to "
        "the buffer as a classification (tensors pass through unchanged)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(MEDIA_TYPE)
    PROPERTIES = {
        "method": string_prop(
            "Method", "How scores become a label: max (argmax, raw value as confidence), "
            "softmax (argmax, softmax probability as confidence), compound (every class with "
            "sigmoid >= compound-threshold, labels joined by spaces), index (the tensor holds "
            "the class index)", "max"),
        "labels": string_prop("Labels", "Label names by class id, <a,b,c> (or use labels-file)",
                              None,
            doc=(
                'label names by class id; a name cannot hold a comma (use a file)'),
        ),
        "labels-file": string_prop(
            "Labels file", "Text file with one label per line, line index = class id; it must "
            "have a line for every class the model outputs", None),
        "attribute-name": string_prop(
            "Attribute name", "Attribute of the classification attached to the buffer",
            "classification",
            doc=(
                'attribute of the attached classification; a second classification of the same '
                'attribute replaces the first'),
        ),
        "layer-name": string_prop(
            "Layer name", "Output tensor to read, by name, when the model has several outputs",
            None,
            doc=(
                'the output to read, by name (the output names in the tensors record: `output` '
                'for a single tensor, the keys of a dict, `output0`, `output1`... of a tuple); '
                'needed when the model has several outputs'),
        ),
        "threshold": double_prop(
            "Threshold", "A result whose confidence is below it is not attached "
            "(0 attaches every result)", 0.0, 1.0, 0.0),
        "compound-threshold": double_prop(
            "Compound threshold", "Sigmoid value from which a class joins the label "
            "of method=compound", 0.0, 1.0, 0.5),
        "if-scores": bool_prop(
            "If scores", "Label only an output that is one set of class scores per buffer "
            "(a float [C] or [1, C] tensor, C > 1); any other output passes unlabelled, said "
            "once in the log (the bins set it for model files whose outputs they cannot "
            "know)", False,
            doc=(
                'label only an output that is one set of class scores per buffer (one float `[C]`'
                ' or `[1, C]` tensor, C > 1); any other output passes unlabelled, said once in '
                'the log at WARNING (the bins set it for a model file in `video_inference`, whose'
                ' output they cannot know before it runs)'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_metadata_writer()
        self.run: _Run | None = None

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        s = self.settings
        params = LabelParams(
            method=(s.method or "").strip().lower(),
            attribute=s.attribute_name or "",
            threshold=s.threshold,
            compound_threshold=s.compound_threshold,
            labels=load_labels(s.labels, s.labels_file),
        )
        self.run = _Run(params, LabelsFromWeights(params))
        CAT.info(self, f"{params}")
        return True

    def do_stop(self):
        self.run = None
        return True

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        config = config_from_fields(incaps.get_structure(0))
        self.run.config = config
        params = self.run.params
        # with a single output of a fixed class count (a region batch's R may be 0) the label
        # coverage is known now: refuse at once
        shape = config.tensors[0].shape if len(config) == 1 else ()
        if params.labels is not None and shape and shape[-1] > 0 and all(
                d > 0 for d in shape[1:]):
            classes = num_classes(shape, params.method)
            if classes is not None:
                check_covers(params.labels, classes)
        return True

    def _select(self, record) -> tuple[int, str]:
        """The index and name of the tensor to read."""
        outputs = len(self.run.config)
        layer = (self.settings.layer_name or "").strip()
        names = list(record.names) if record is not None else []
        if layer:
            if record is None:
                raise TorchstreamError(
                    f"layer-name '{layer}' needs the output names that pytorch_tensor_inference "
                    "attaches to its buffers; this buffer carries none"
                )
            if layer not in names:
                raise ConfigError(
                    f"layer-name '{layer}' is not an output of {record.model or 'the model'}; "
                    f"its outputs are: {', '.join(names)}"
                )
            index = names.index(layer)
            if index >= outputs:
                raise TorchstreamError(
                    f"layer-name '{layer}' is output {index} but the caps describe only "
                    f"{outputs} tensors"
                )
            return index, layer
        if outputs != 1:
            known = f": {', '.join(names)}" if names else ""
            raise ConfigError(
                f"the model has {outputs} outputs; set layer-name to the one holding "
                f"the class scores{known}"
            )
        return 0, names[0] if names else ""

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        record, config = read_tensors_record(buf), self.run.config
        if_scores = self.settings.if_scores and not (self.settings.layer_name or "").strip()
        # several outputs are no set of class scores: said below, not an error with if-scores
        index, layer = (0, "") if if_scores and len(config) != 1 else self._select(record)
        info = config.tensors[index]
        ids = read_roi_batch(buf)
        with MappedTensors(buf, config) as arrays:
            array = numpy_values(arrays[index], info.dtype)
            if if_scores:
                if not self._are_scores(array, ids, record):
                    return Gst.FlowReturn.OK
            params = self._params_for(record, array.shape)
            if ids is not None:
                rows = classify_rows(array, params)
            else:
                result = classify(array, params)
        model = ModelRecord(record.model, (layer,) if layer else ()) if record else None
        CAT.log(self, lambda: f"{len(ids)} region rows" if ids is not None else f"{result}")
        if ids is not None:
            self._label_regions(buf, ids, rows, model)
        elif result is not None:
            add_classification(buf, result, model)
        return Gst.FlowReturn.OK

    def _are_scores(self, array, ids, record) -> bool:
        """Whether ``array`` is one set of class scores per buffer (per region of a region
        batch); the first time it is not, say why in the log."""
        run, shape = self.run, array.shape[1:] if ids is not None else array.shape
        scores = (array.dtype.kind == "f" and len(run.config) == 1 and len(shape) >= 1
                  and shape[-1] > 1 and all(d == 1 for d in shape[:-1]))
        if not scores and run.not_scores is None:
            model = record.model if record is not None and record.model else "the model"
            run.not_scores = (f"the output of {model} ({len(run.config)} tensors, the first "
                              f"{array.dtype} {list(array.shape)}) is not one set of class "
                              "scores: no classification, the raw tensors stay on the buffer "
                              "(a model-proc file says how to decode it)")
            CAT.warning(self, run.not_scores)
        return scores

    def _params_for(self, record, shape: tuple[int, ...]) -> LabelParams:
        """The settings, labelled by the model's published weights when given no labels."""
        weights = record.weights if record is not None else ""
        params, found = self.run.labelling(weights, num_classes(shape, self.run.params.method))
        if found is not None:
            CAT.info(self, found)
        return params

    @staticmethod
    def _label_regions(buf, ids: tuple[int, ...], rows: list, model) -> None:
        """Row i of a region batch (tensor_roi_crop) is region ids[i]: its classification goes
        to that region, not to the frame."""
        if len(rows) != len(ids):
            raise TorchstreamError(
                f"the region batch names {len(ids)} regions but the output has {len(rows)} rows"
            )
        if not any(c is not None for c in rows):
            return  # nothing to attach (also a frame with no selected region)
        results = read_results(buf)
        for region_id, c in zip(ids, rows, strict=True):
            region = results.region(region_id)
            if region is None:
                raise TorchstreamError(
                    f"row of region {region_id} has no such region in the buffer's results"
                )
            if c is not None:
                region.set_classification(c)
        if model is not None:
            results.add_model(model)
        write_results(buf, results)
