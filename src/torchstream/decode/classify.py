"""Post-processing of model outputs into results (numpy only, no GStreamer).

Classification (``tensor_postproc_label``): one tensor of class scores, or of class indices, per
buffer becomes one :class:`~torchstream.gst.meta.Classification`. The methods:

- ``max``: label_id = argmax of the raw values (the first one on ties); confidence = that raw
  value (a logit for most classifiers, so not a probability).
- ``softmax``: label_id = argmax; confidence = its softmax probability,
  ``exp(v[id] - max(v)) / sum(exp(v - max(v)))``, computed in float64.
- ``compound`` (multi-label): the values are taken as independent logits; every class whose
  ``sigmoid(v) >= compound_threshold`` is selected, and the selected labels are joined, in
  class-id order, by one space (``"cat dog"``). label_id and confidence are those of the
  selected class with the highest sigmoid. No class selected: no result.
- ``index``: the tensor holds class indices (a model that does its own argmax); its first
  value is the label_id (a float value must be integral); confidence is 1.0.

``threshold`` (0..1): when above 0, a result whose confidence is below it is dropped (with
``max`` it is compared with the raw value). 0 keeps every result.

Without labels, a class id's label is its number as text (``"283"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from torchstream.decode.labels import Labels, check_covers, label_name
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.results.data import Classification

LABEL_METHODS = ("max", "softmax", "compound", "index")


def check_unit_interval(value: float, prop: str) -> float:
    """``value`` as a float in [0, 1]; a ConfigError naming ``prop`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"property '{prop}' must be a number in 0..1, got {value!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ConfigError(f"property '{prop}' must be in 0..1, got {value!r}")
    return number


@dataclass(frozen=True)
class LabelParams:
    """The settings of label post-processing, validated on creation."""

    method: str = "max"
    attribute: str = "classification"
    threshold: float = 0.0
    compound_threshold: float = 0.5
    labels: Labels | None = None

    def __post_init__(self) -> None:
        if self.method not in LABEL_METHODS:
            raise ConfigError(
                f"property 'method' is {self.method!r}; expected one of {', '.join(LABEL_METHODS)}"
            )
        if not self.attribute or not self.attribute.strip():
            raise ConfigError("property 'attribute-name' is empty")
        check_unit_interval(self.threshold, "threshold")
        check_unit_interval(self.compound_threshold, "compound-threshold")


def class_scores(array: np.ndarray) -> np.ndarray:
    """One buffer's class scores as a 1-D float64 array.

    The classes lie along the last axis; every other axis must have size 1 (the model's batch
    dim is already dropped by the inference element, a leading ``1`` is accepted too).
    """
    shape = array.shape
    if array.ndim == 0:
        return array.reshape(1).astype(np.float64)
    if any(d != 1 for d in shape[:-1]):
        raise TorchstreamError(
            f"expected one set of class scores per buffer (shape [classes] or [1, classes]), "
            f"got a tensor of shape {list(shape)}"
        )
    return array.reshape(-1).astype(np.float64, copy=False)


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))  # exact form that cannot overflow


def num_classes(array_shape: tuple[int, ...], method: str) -> int | None:
    """How many classes a score tensor of ``array_shape`` holds (None for ``index``)."""
    if method == "index":
        return None
    return int(array_shape[-1]) if array_shape else 1


def classify(array: np.ndarray, params: LabelParams) -> Classification | None:
    """The classification ``params.method`` makes of one buffer's tensor, or None when there
    is none (empty tensor, nothing above compound-threshold, confidence below threshold)."""
    if array.size == 0:
        return None
    method = params.method
    if method == "index":
        value = array.reshape(-1)[0]
        if array.dtype.kind == "f":
            if not (math.isfinite(float(value)) and float(value).is_integer()):
                raise TorchstreamError(
                    f"method 'index' expects class indices, got the value {float(value)!r}"
                )
        label_id, confidence = int(value), 1.0
        label = label_name(params.labels, label_id)
    else:
        scores = class_scores(array)
        if params.labels is not None:
            check_covers(params.labels, scores.size)
        if not np.isfinite(scores).all():
            raise TorchstreamError("class scores hold NaN or infinite values")
        if method == "max":
            label_id = int(np.argmax(scores))
            confidence = float(scores[label_id])
            label = label_name(params.labels, label_id)
        elif method == "softmax":
            label_id = int(np.argmax(scores))
            confidence = float(softmax(scores)[label_id])
            label = label_name(params.labels, label_id)
        else:  # compound
            probabilities = sigmoid(scores)
            selected = np.flatnonzero(probabilities >= params.compound_threshold)
            if selected.size == 0:
                return None
            label_id = int(selected[np.argmax(probabilities[selected])])
            confidence = float(probabilities[label_id])
            label = " ".join(label_name(params.labels, int(i)) for i in selected)
    if params.threshold > 0 and confidence < params.threshold:
        return None
    return Classification(params.attribute, label, label_id, confidence)


def classify_rows(array: np.ndarray, params: LabelParams) -> list[Classification | None]:
    """A region batch's output ``[R, ...]``: row i classified as :func:`classify` does one
    buffer's tensor (None where row i gives no result)."""
    if array.ndim == 0:
        raise TorchstreamError("a region batch's output needs a leading row dim, got a scalar")
    return [classify(array[i], params) for i in range(array.shape[0])]
