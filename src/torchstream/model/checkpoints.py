"""Weights files as training code writes them, read without running code from them.

A user's weights come as a bare state dict, a checkpoint dict holding one (``state_dict``,
``model_state_dict``, ``model``: what torchvision's references, Lightning and most training
loops save), with ``module.`` (DataParallel/DDP) or ``model.`` (a Lightning module's
attribute) before every key, or as ``.safetensors``. :func:`read_checkpoint` finds the tensors
and any class names saved beside them; :func:`fit_keys` strips the prefixes that keep the
keys from fitting a module; :func:`fit_builder` works out the constructor arguments (the class
count of a fine-tuned head, auxiliary heads) that make a factory's module take the tensors.

Every file is read with ``weights_only`` (or by safetensors): nothing in it runs. GStreamer-free;
imports torch lazily.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchstream.errors import ConfigError, exception_summary

# Where checkpoint dicts keep the model's tensors, in the order they are looked for.
STATE_KEYS = ("state_dict", "model_state_dict", "model")
# Where training code keeps the class names beside them: a list by class id, or a mapping
# (id -> name as ``idx_to_class``, name -> id as torchvision's ImageFolder ``class_to_idx``).
NAME_KEYS = ("categories", "classes", "class_names", "idx_to_class", "class_to_idx")
SAFETENSORS_SUFFIX = ".safetensors"
# Constructor arguments of torchvision and timm factories that change a module's tensors:
# counts found from the tensors' shapes, flags from which tensors the file has.
COUNT_ARGUMENTS = ("num_classes", "num_keypoints")
AUX_ARGUMENTS = ("aux_loss", "aux_logits")
_PROBES = (7, 13)  # two class counts whose shapes give each tensor's dims as a * n + b


def check_file(path: str | os.PathLike, what: str) -> Path:
    """The path of a readable file, else a ConfigError saying what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} '{path}' does not exist")
    if p.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} '{path}' is not readable (permissions)")
    return p


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a weights file, the class names saved with them, and where they were."""

    state: dict[str, Any]
    class_names: tuple[str, ...]
    layout: str  # e.g. "a bare state dict", "the 'model' entry of a checkpoint"
    path: str


def read_checkpoint(path: str, what: str = "model-weights file") -> Checkpoint:
    """The state dict and class names in ``path`` (any of the layouts above); a ConfigError
    that names the keys found when there is no state dict of tensors in it."""
    p = check_file(path, what)
    if p.suffix.lower() == SAFETENSORS_SUFFIX:
        return _read_safetensors(p, path, what)
    import torch

    if not zipfile.is_zipfile(p) and not looks_like_pickle(p):
        raise ConfigError(f"{what} '{path}' is not a weights file: expected what torch.save "
                          "writes (a state dict or a checkpoint dict) or a .safetensors file")
    try:
        # not mmap: training code often saves over the file while a pipeline runs
        with torch.serialization.safe_globals(_harmless_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        refusal = _refusal_for_pickle(p, path, what)
        if refusal is not None:
            raise refusal from exc
        raise ConfigError(
            f"{what} '{path}' is not a readable weights-only state dict: "
            f"{exception_summary(exc)}",
            detail=str(exc),
        ) from exc
    if _is_state(obj):
        return Checkpoint(dict(obj), (), "a bare state dict", path)
    if isinstance(obj, Mapping):
        names = class_names_in(obj, f"{what} '{path}'")
        for key in STATE_KEYS:
            if _is_state(obj.get(key)):
                return Checkpoint(dict(obj[key]), names,
                                  f"the '{key}' entry of a checkpoint", path)
        raise ConfigError(
            f"{what} '{path}' holds a dict whose entries are not a state dict of tensors "
            f"(keys: {_some(obj)}); expected a state dict, or one under "
            + ", ".join(f"'{k}'" for k in STATE_KEYS)
        )
    raise ConfigError(f"{what} '{path}' holds a {type(obj).__name__}, not a state dict of "
                      "tensors")


def looks_like_pickle(path: Path) -> bool:
    """Whether a file starts as a pickle does (torch.save's legacy format)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def _harmless_globals() -> list:
    """Plain data that training loops save beside the weights and that reads without running
    code: torchvision's reference scripts keep their ``argparse.Namespace`` (``args``), many
    loops a numpy scalar (``best_acc1``)."""
    import argparse

    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")]
    return [argparse.Namespace, scalar, np.dtype, *dtypes]


def _read_safetensors(p: Path, path: str, what: str) -> Checkpoint:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("reading .safetensors needs the safetensors package "
                          "(pip install safetensors)") from exc
    try:
        state = load_file(str(p), device="cpu")
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise ConfigError(f"{what} '{path}' is not a readable safetensors file: "
                          f"{exception_summary(exc)}", detail=str(exc)) from exc
    names: tuple[str, ...] = ()
    for key in NAME_KEYS:  # saved as JSON text in the file's string metadata
        if key in metadata:
            try:
                names = _names(json.loads(metadata[key]), f"{what} '{path}' metadata '{key}'")
            except ValueError as exc:
                raise ConfigError(f"{what} '{path}': metadata '{key}' is not JSON") from exc
            break
    return Checkpoint(state, names, "a safetensors file", path)


def class_names_in(obj: Mapping, where: str) -> tuple[str, ...]:
    """The class names saved in a checkpoint dict (() when none are)."""
    for key in NAME_KEYS:
        if key in obj:
            return _names(obj[key], f"{where}: '{key}'")
    return ()


def _names(value: Any, where: str) -> tuple[str, ...]:
    """Class names by id from a list, an id -> name mapping or a name -> id mapping."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, Mapping) and value:
        items = list(value.items())
        if all(isinstance(v, str) for _, v in items):  # id -> name
            by_id = {_as_id(k, where): v for k, v in items}
        elif all(isinstance(k, str) for k, _ in items):  # name -> id
            by_id = {_as_id(v, where): k for k, v in items}
        else:
            by_id = {}
        if by_id and sorted(by_id) == list(range(len(by_id))):
            return tuple(by_id[i] for i in range(len(by_id)))
    raise ConfigError(f"{where} is not a list of class names by class id (nor a mapping "
                      "between ids 0..N-1 and names)")


def _as_id(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a class id") from None


def _is_state(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _some(keys: Iterable, count: int = 8) -> str:
    keys = [str(k) for k in keys]
    more = f", ... ({len(keys)} in all)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def _pickled_modules(p: Path) -> set[str]:
    """The top-level Python packages a torch.save'd file's pickle names (a cheap scan of its
    GLOBAL opcodes, nothing is loaded)."""
    try:
        with zipfile.ZipFile(p) as archive:
            data = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    except (zipfile.BadZipFile, OSError):
        try:
            data = p.read_bytes()[:1 << 24]
        except OSError:
            return set()
    import pickletools

    found: set[str] = set()
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.add(str(arg).split(" ", 1)[0].split(".", 1)[0])
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings = (strings + [str(arg)])[-2:]
            elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                found.add(strings[0].split(".", 1)[0])
    except Exception:  # noqa: BLE001 - several pickles back to back, or a damaged one
        pass
    return found


def _refusal_for_pickle(p: Path, path: str, what: str) -> ConfigError | None:
    """A clear refusal for files that hold pickled objects of other packages (an Ultralytics
    checkpoint, a whole pickled model), or None to report the load's own error."""
    modules = _pickled_modules(p) - {"torch", "collections", "builtins", "_codecs", "numpy"}
    if "ultralytics" in modules:
        return ultralytics_refusal(path)
    if modules:
        return ConfigError(
            f"{what} '{path}' holds pickled Python objects of {', '.join(sorted(modules))} "
            "(a whole model or training state?), which cannot be read without running code "
            "from the file; save model.state_dict() (torch.save or safetensors) instead")
    return None


def ultralytics_refusal(path: str) -> ConfigError:
    return ConfigError(
        f"'{path}' is an Ultralytics checkpoint: a pickle that only the ultralytics package "
        "can read. Export it where ultralytics is installed, e.g. "
        "`yolo export model=yolov8n.pt format=torchscript` (or format=onnx, or "
        "torch.export to .pt2), then run the exported file with the shipped model-proc of "
        "its family: model-proc=yolo-v8.json (yolo-v5.json, yolo-v10.json)")


def pickle_names_ultralytics(path: str | os.PathLike) -> bool:
    """Whether a torch.save'd file's pickle refers to the ultralytics package."""
    return "ultralytics" in _pickled_modules(Path(path))


# -- fitting a module ----------------------------------------------------------------------


def fit_keys(state: dict[str, Any], expected: Iterable[str]) -> tuple[dict[str, Any], str]:
    """``state`` with the key prefix stripped that makes it fit the ``expected`` keys best
    (``module.``, ``model.``, ``model.module.``, ...), and the prefix ("" when none helps).
    Entries outside the prefix (a Lightning module's loss or metrics) are left out."""
    expected = set(expected)
    best, best_prefix = state, ""
    best_score = len(expected & state.keys())
    if best_score == len(expected):
        return state, ""  # the usual case: the keys fit as they are
    frontier = [("", state)]
    for _ in range(3):  # prefixes of up to three parts
        deeper = []
        for prefix, current in frontier:
            counts = Counter(k.split(".", 1)[0] for k in current if "." in k)
            for first, count in counts.items():
                if count * 2 < len(current):  # a prefix of most keys only
                    continue
                head = first + "."
                sub = {k[len(head):]: v for k, v in current.items() if k.startswith(head)}
                deeper.append((prefix + head, sub))
                score = len(expected & sub.keys())
                if score > best_score:
                    best, best_prefix, best_score = sub, prefix + head, score
        frontier = deeper
    return best, best_prefix


def shapes_of(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def fit_builder(build: Callable[..., Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments (of ``COUNT_ARGUMENTS`` and ``AUX_ARGUMENTS``, those ``build``
    takes) that make ``build(**arguments)`` (a module, on the meta device) hold tensors of
    ``state``'s keys and shapes; {} when nothing found fits (the load then names the
    mismatch)."""
    file_shapes = {k: tuple(v.shape) for k, v in state.items()}
    chosen: dict[str, Any] = {}
    has_aux = any(k.split(".", 1)[0].lower().startswith("aux") for k in file_shapes)
    for flag in AUX_ARGUMENTS:  # auxiliary heads: on when the file has them, off when not
        with_aux, without = _shapes_or_none(build, {flag: True}), \
            _shapes_or_none(build, {flag: False})
        if with_aux is not None and without is not None and with_aux != without:
            chosen[flag] = has_aux
    for name in COUNT_ARGUMENTS:
        try:
            low = shapes_of(build(**chosen, **{name: _PROBES[0]}))
            high = shapes_of(build(**chosen, **{name: _PROBES[1]}))
        except Exception:  # noqa: BLE001 - a factory that does not take this count
            continue
        votes = Counter(_solve(low, high, file_shapes))
        if votes:
            chosen[name] = votes.most_common(1)[0][0]
    if not chosen:
        return {}
    if _shapes_or_none(build, chosen) != file_shapes:
        return {}  # the load names the mismatch
    # keep only what the factory's defaults would not have given
    return {name: value for name, value in chosen.items()
            if _shapes_or_none(build, {k: v for k, v in chosen.items() if k != name})
            != file_shapes}


def _shapes_or_none(build: Callable[..., Any], arguments: dict) -> dict | None:
    try:
        return shapes_of(build(**arguments))
    except Exception:  # noqa: BLE001 - a factory that does not take these arguments
        return None


def _solve(low: Mapping[str, tuple], high: Mapping[str, tuple],
           file_shapes: Mapping[str, tuple]) -> list[int]:
    """For each tensor whose shape follows the count (dim = a * n + b), the n its shape in
    the file gives."""
    span = _PROBES[1] - _PROBES[0]
    found = []
    for key, a_shape in low.items():
        b_shape, f_shape = high.get(key), file_shapes.get(key)
        if b_shape is None or f_shape is None or a_shape == b_shape \
                or not len(a_shape) == len(b_shape) == len(f_shape):
            continue
        for x, y, f in zip(a_shape, b_shape, f_shape, strict=True):
            if x == y:
                continue
            if (y - x) % span:
                break
            slope = (y - x) // span
            offset = x - slope * _PROBES[0]
            if slope <= 0 or (f - offset) % slope or (f - offset) // slope < 1:
                break
            found.append((f - offset) // slope)
            break
    return found
