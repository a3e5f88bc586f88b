"""Class labels: the ``labels`` property string, label files, and their fit to a model.

A label list maps a class id (an index into a model's class scores, or a label id a model
outputs) to a name. It comes either from a ``labels`` property written like the other list
properties (``<cat,dog,bird>``; gst-launch hands it over literally) or from a label file: UTF-8
text, one label per line, line index = class id. The package ships ``imagenet_2012.txt``,
``coco_91cl_bkgr.txt`` and ``coco_80.txt`` (``LABELS_DIR``); a bare file name that is not in
the current folder names one of them.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torchstream.environment import LABELS_DIR, shipped_or_given
from torchstream.errors import ConfigError
from torchstream.props import split_list


@dataclass(frozen=True, repr=False)
class Labels:
    """Label names by class id, and where they came from (for error messages)."""

    names: tuple[str, ...]
    source: str  # "property 'labels'" or "labels-file '/path/file.txt'"
    from_file: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:  # short: it appears in the debug log
        return f"Labels({len(self.names)} names from {self.source})"

    def name(self, label_id: int) -> str:
        """The name of ``label_id``; a ConfigError when the list has no such id."""
        if not 0 <= label_id < len(self.names):
            raise ConfigError(
                f"label id {label_id} is outside the {len(self.names)} labels of {self.source}"
            )
        return self.names[label_id]


def parse_labels(text: str, prop: str = "labels") -> tuple[str, ...]:
    """``<a,b,c>`` (or ``[a,b,c]``, ``a,b,c``) -> label names; an error names ``prop``.

    Items are stripped of surrounding spaces and may be double-quoted; a label cannot hold a
    comma (use a label file for such names). Empty items are refused.
    """
    names = []
    for index, part in enumerate(split_list(text, prop, "<cat,dog>")):
        name = part.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        if not name.strip():
            raise ConfigError(f"property '{prop}' has an empty label at position {index} "
                              f"in {text!r}")
        names.append(name)
    return tuple(names)


def read_labels_file(path: str | Path, prop: str = "labels-file") -> tuple[str, ...]:
    """The labels of a UTF-8 text file, one per line, line index = class id.

    Line ends (``\\n`` or ``\\r\\n``) and surrounding spaces are stripped; blank lines inside
    the file are kept as empty labels (they hold a class id's place), blank lines at its end are
    not labels. An empty, missing, unreadable, binary or JSON file is a ConfigError naming
    ``prop`` and the file.
    """
    where = f"{prop} '{path}'"
    p = shipped_or_given(path, LABELS_DIR)
    if not str(path).strip():
        raise ConfigError(f"property '{prop}' is empty; expected the path of a label file")
    if not p.exists():
        raise ConfigError(f"{where}: no such file")
    if p.is_dir():
        raise ConfigError(f"{where} is a directory, not a label file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if b"\0" in raw:
        raise ConfigError(f"{where} is a binary file, not a text file with one label per line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {exc.start}); expected one label per line"
        ) from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"{where} is empty; expected one label per line")
    if lines[0][:1] in ("{", "[") and _is_json_container(text):
        raise ConfigError(
            f"{where} looks like JSON; a label file is plain text with one label per line"
        )
    return tuple(lines)


def _is_json_container(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def load_labels(labels: str | None, labels_file: str | None,
                labels_prop: str = "labels", file_prop: str = "labels-file") -> Labels | None:
    """The labels given by a ``labels`` property or a ``labels-file`` property, or None.

    Setting both is a ConfigError (it would be unclear which one wins).
    """
    has_list = bool(labels and labels.strip())
    has_file = bool(labels_file and labels_file.strip())
    if has_list and has_file:
        raise ConfigError(f"set '{labels_prop}' or '{file_prop}', not both")
    if has_list:
        return Labels(parse_labels(labels, labels_prop), f"property '{labels_prop}'")
    if has_file:
        return Labels(read_labels_file(labels_file, file_prop), f"{file_prop} '{labels_file}'",
                      from_file=True)
    return None


def label_name(labels: Labels | None, label_id: int) -> str:
    """The label of ``label_id``: its name, or the id as text without labels."""
    return str(label_id) if labels is None else labels.name(label_id)


# Class names a loaded model of one's own brought (from its checkpoint, a labels.txt beside
# it, ...), by the key its tensors record names them with; filled by torchstream.model.loading.
_registered: dict[str, Labels] = {}
_registered_lock = threading.Lock()


def register_class_names(source: str, names: Sequence[str]) -> str:
    """Keep ``names`` for post-processing under the key returned (``source``, which says
    where they came from)."""
    with _registered_lock:
        _registered[source] = Labels(tuple(names), f"the class names of {source}")
    return source


def weights_labels(weights: str) -> Labels | None:
    """The class names a tensors record's ``weights`` key names: the category names of
    published torchvision weights (``MobileNet_V2_Weights.IMAGENET1K_V1``) or the names a
    loaded model of one's own brought; None when the key is unknown or carries no names."""
    if not weights:
        return None
    with _registered_lock:
        registered = _registered.get(weights)
    return registered if registered is not None else _published_labels(weights)


@functools.lru_cache(maxsize=32)
def _published_labels(weights: str) -> Labels | None:
    import torchvision.models as tvm

    try:
        categories = tvm.get_weight(weights).meta.get("categories")
    except Exception:  # noqa: BLE001 - a name from another torchvision: no labels
        return None
    return Labels(tuple(categories), f"the categories of {weights}") if categories else None


class LabelsFromWeights:
    """Post-processing settings per model: ``params`` as given, or, when they have no labels,
    with the class names the model's tensors record names (published weights' categories, or
    the names a model of one's own brought) as labels, when those name ``classes`` classes
    (None: any count). Worked out once per weights and class count."""

    def __init__(self, params) -> None:
        self.params = params  # a settings dataclass with a ``labels`` field
        self._known: dict[tuple[str, int | None], object] = {}

    def __call__(self, weights: str, classes: int | None = None):
        """(the settings, a line for the log the first time a key is met, else None)."""
        key = (weights, classes)
        if self.params.labels is not None or not weights:
            return self.params, None
        if key in self._known:
            return self._known[key], None
        labels = weights_labels(weights)
        message = f"labels: {labels!r}" if labels is not None else None
        if labels is not None and classes is not None and classes != len(labels):
            message = (f"{labels.source} are {len(labels)} but the output has {classes} "
                       "classes: labelled by class id instead")
            labels = None
        params = self.params if labels is None else replace(self.params, labels=labels)
        self._known[key] = params
        return params, message


def check_covers(labels: Labels | Sequence[str], num_classes: int, source: str = "") -> None:
    """A ConfigError unless there is a label for each of a model's ``num_classes`` classes.

    More labels than classes is accepted (a model may use the first classes of a list).
    """
    count = len(labels)
    if count >= num_classes:
        return
    where = source or getattr(labels, "source", "the labels")
    unit = "lines" if getattr(labels, "from_file", False) else "labels"
    raise ConfigError(
        f"{where} has {count} {unit} but the model outputs {num_classes} classes; "
        f"every class id needs a label (line index = class id)"
    )
