"""Named points of a region (a human pose): their names and the connections drawn between them.

A keypoint model (torchvision's ``keypointrcnn_resnet50_fpn``, or any detector that also gives
a ``keypoints`` output ``[N,K,2|3]``) gives K points per detection. Their names and skeleton are
settings, as in DL Streamer's human-pose post-processing: ``point-names`` (K names, in output
order) and ``point-connections`` (pairs of those names). A model of 17 points gets COCO's person
keypoints and skeleton unless told otherwise; other counts get names ``0`` .. ``K-1`` and no
connections.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.errors import ConfigError, TorchstreamError
from torchstream.props import split_list

# COCO's person keypoints, in the order of its annotations and of torchvision's models
COCO_POINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_SKELETON = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)


def _items(text: str | None, prop: str) -> list[str]:
    if not (text or "").strip():
        return []
    items = [t.strip() for t in split_list(text, prop)]
    if not all(items):
        raise ConfigError(f"property '{prop}' has an empty item in {text!r}")
    return items


def parse_point_names(text: str | None) -> tuple[str, ...]:
    """``<nose,left_eye,...>`` -> the names (empty: the default for the model's count)."""
    names = tuple(_items(text, "point-names"))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"property 'point-names' names {', '.join(repeated)} more than once")
    return names


def parse_point_connections(text: str | None) -> tuple[tuple[str, str], ...]:
    """``<a,b,b,c>`` (DL Streamer's flat list of pairs) or ``<a-b,b-c>`` -> the pairs."""
    items = _items(text, "point-connections")
    if items and all("-" in t for t in items):  # names holding "-" need the flat form
        pairs = [tuple(p.strip() for p in t.split("-", 1)) for t in items]
    else:
        if len(items) % 2:
            raise ConfigError(f"property 'point-connections' holds {len(items)} names: pairs "
                              "of point names need an even count")
        pairs = list(zip(items[::2], items[1::2], strict=True))
    return tuple((a, b) for a, b in pairs)


@dataclass(frozen=True)
class PointSet:
    """The names of a model's K points and its connections as index pairs."""

    names: tuple[str, ...]
    connections: tuple[tuple[int, int], ...]


def check_connections(names: tuple[str, ...], connections: tuple[tuple[str, str], ...]) -> None:
    """A ConfigError naming every connection point that ``names`` lacks."""
    missing = sorted({p for pair in connections for p in pair if p not in names})
    if missing:
        raise ConfigError(f"property 'point-connections' names {', '.join(missing)}, which "
                          f"'point-names' ({', '.join(names)}) does not hold")


def point_set(count: int, names: tuple[str, ...] = (),
              connections: tuple[tuple[str, str], ...] = ()) -> PointSet:
    """The names and connections of a model giving ``count`` points per detection."""
    if names and len(names) != count:
        raise TorchstreamError(f"property 'point-names' has {len(names)} names but the model "
                               f"gives {count} points per detection")
    if not names:
        names = COCO_POINTS if count == len(COCO_POINTS) else tuple(str(i) for i in range(count))
        if not connections and names == COCO_POINTS:
            connections = COCO_SKELETON
    check_connections(names, connections)
    index = {n: i for i, n in enumerate(names)}
    return PointSet(names, tuple((index[a], index[b]) for a, b in connections))
