"""The one model loader: torchvision and timm factories, weights files and model files.

A factory name with a weights file of one's own is built with what the file says (the class
count of a fine-tuned head, auxiliary heads: :mod:`torchstream.model.checkpoints`); the class names
come from the published weights, the checkpoint, or a ``labels.txt`` beside the file.

Model files are code: a whole pickled ``nn.Module`` executes code from the file when loaded.
Such files are refused when the environment variable ``TORCHSTREAM_REFUSE_PICKLE`` is set to
``1``; state dicts are always read with ``weights_only=True``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import os
import threading
import warnings
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torchstream.errors import ConfigError, Domain, TorchstreamError, exception_summary
from torchstream.model.checkpoints import (
    Checkpoint,
    check_file,
    fit_builder,
    fit_keys,
    looks_like_pickle,
    pickle_names_ultralytics,
    read_checkpoint,
    shapes_of,
    ultralytics_refusal,
)

TORCHVISION_PREFIX = "torchvision.models."
TIMM_PREFIX = "timm."
LABELS_BESIDE = "labels.txt"  # class names next to a model or weights file, one per line
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".torchscript")


@dataclass(frozen=True)
class ClassifierPreprocess:
    """The preprocessing a torchvision classifier's weights were trained with."""

    resize_size: tuple[int, ...]
    crop_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    antialias: bool


@dataclass
class LoadedModel:
    """A model ready to run: the callable, where it runs, and what is known about it."""

    module: Any
    name: str
    device: Any  # torch.device
    source: str  # "torchvision", "torchscript", "export" or "pickle"
    preprocess: ClassifierPreprocess | None = None
    takes_image_list: bool = False
    categories: tuple[str, ...] = field(default=())  # class names by class id, when known
    # the key post-processing finds the class names by (torchstream.decode.labels.weights_labels):
    # the published torchvision weights (MobileNet_V2_Weights.IMAGENET1K_V1) or the file the
    # names came from; "" when the names are unknown
    weights: str = ""
    # what it was loaded from (names, files with size and mtime, device): equal identities
    # hold equal weights; None for a model made by hand
    identity: tuple | None = None
    input_size: tuple[int, int] | None = None  # (height, width) fixed by the model file
    # what the load worked out by itself, for the log ("5 classes from the weights")
    notes: tuple[str, ...] = field(default=())
    _weights_key: tuple | None = field(default=None, repr=False, compare=False)

    def weights_key(self) -> tuple | None:
        """What an engine choice is kept under, so any load of the same model reuses it: for
        a factory, its name and a hash of every tensor of the module's state (another copy of
        the weights file, another checkpoint layout: the same key); for a model file, a hash
        of its bytes (its code, constants and weights); None for a model made by hand (not
        loaded from a name or a file: it chooses afresh every time)."""
        if self.identity is None:
            return None
        if self._weights_key is None:
            if is_factory_name(self.name):
                self._weights_key = ("factory", self.name, _state_digest(self.module))
            else:
                self._weights_key = ("file", _files_digest(self.name))
        return self._weights_key

    def preferred_input_size(self) -> tuple[int, int] | None:
        """(height, width) the model file fixes, else the one the weights' preprocessing
        resizes to, when the weights name one."""
        return self.input_size or preferred_input_size(self.preprocess)


def _state_digest(module) -> str:
    """A hash of a torch module's class and of the names, dtypes, shapes and bytes of every
    tensor of its state."""
    import hashlib

    import torch

    digest = hashlib.blake2b(type(module).__qualname__.encode(), digest_size=20)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.device};".encode())
        data = tensor.detach().contiguous().cpu()
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


def _files_digest(path: str) -> str:
    """A hash of a model file's bytes (and of the weights file beside an OpenVINO IR)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    p = Path(path)
    for part in (p, p.with_suffix(".bin")) if p.suffix.lower() == ".xml" else (p,):
        if part.is_file():
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest()


def preferred_input_size(preprocess: ClassifierPreprocess | None) -> tuple[int, int] | None:
    if preprocess is None or not preprocess.resize_size:
        return None
    size = preprocess.resize_size
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def parse_device(text: str):
    """``cpu``, ``cuda``, ``cuda:N`` in any case -> torch.device, checked for availability."""
    import torch

    value = (text or "cpu").strip().lower()
    kind, _, index = value.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"device '{text}' is not one of cpu, cuda, cuda:N")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device '{text}' asked for, but CUDA is not available here "
            f"(torch {torch.__version__}, {torch.cuda.device_count()} CUDA devices)"
        )
    n = int(index) if index else 0
    if n >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{text}' asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", n)


def is_torchvision_name(model: str) -> bool:
    return model.startswith(TORCHVISION_PREFIX)


def _torchvision_builder(model: str):
    """Resolve ``torchvision.models[.sub].name`` to (builder, short name)."""
    import torchvision.models as tvm

    module_name, _, name = model.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model '{model}': no such torchvision module '{module_name}'") from exc
    known = tvm.list_models(module=module)
    if name not in known:
        close = difflib.get_close_matches(name, tvm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"model '{model}': torchvision has no model '{name}' in {module_name}{hint}"
        )
    return tvm.get_model_builder(name), name


def classifier_preprocess(weights) -> ClassifierPreprocess | None:
    """Read resize/crop/mean/std off a torchvision weights entry: a classifier's
    (``ImageClassification``), a segmentation model's (``SemanticSegmentation``: a resize,
    no crop) or a clip model's per frame (``VideoClassification``: an exact resize to
    ``resize_size`` (h, w), a crop); None for the others (detectors take the frame as it is)."""
    try:
        transform = weights.transforms()
    except Exception:
        return None
    if not hasattr(transform, "resize_size") or not hasattr(transform, "mean") \
            or transform.resize_size is None:
        return None
    interpolation = getattr(transform, "interpolation", "bilinear")
    return ClassifierPreprocess(
        resize_size=tuple(int(s) for s in transform.resize_size),
        crop_size=tuple(int(s) for s in getattr(transform, "crop_size", ())),
        mean=tuple(float(m) for m in transform.mean),
        std=tuple(float(s) for s in transform.std),
        interpolation=str(getattr(interpolation, "value", interpolation)),
        # VideoClassification resizes without antialiasing, and says so only in its code
        antialias=bool(getattr(transform, "antialias",
                               type(transform).__name__ != "VideoClassification")),
    )


def torchvision_default_weights(model: str):
    """The ``<Name>_Weights.DEFAULT`` entry of a torchvision factory path (None if it has none)."""
    import torchvision.models as tvm

    _, name = _torchvision_builder(model)
    try:
        return tvm.get_model_weights(name).DEFAULT
    except Exception:
        return None


def published_weights(model: str, weights_file: str | None = None):
    """The torchvision weights entry the model's weights *are*: DEFAULT without a file, the
    entry of a published file of the same name; None for a file of one's own (its classes may
    not be the published ones) or a model with no weights. Its ``meta["categories"]`` are the
    labels of the model's outputs."""
    import torchvision.models as tvm

    default = torchvision_default_weights(model)
    if default is None or not weights_file:
        return default
    _, name = _torchvision_builder(model)
    wanted = os.path.basename(weights_file)
    for entry in tvm.get_model_weights(name):
        if os.path.basename(urlparse(entry.url).path) == wanted:
            return entry
    return None


def torchvision_weights_for(model: str, weights_file: str | None = None):
    """The torchvision weights entry whose preprocessing a model runs with: the published one
    (``mobilenet_v2-b0353104.pth`` is IMAGENET1K_V1, whose preprocessing differs from
    DEFAULT's), otherwise DEFAULT (None if the model has none)."""
    entry = published_weights(model, weights_file)
    return entry if entry is not None else torchvision_default_weights(model)


def weights_cache_path(weights) -> Path:
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_state_dict_file(path: str) -> dict:
    """The state dict of a weights file in any layout :func:`read_checkpoint` reads (never
    runs code from the file)."""
    return read_checkpoint(path).state


def apply_state_dict(module, state: dict, model: str, path: str, assign: bool = False) -> None:
    """Load ``state`` into ``module``; a mismatch names the first offending keys. ``assign``
    makes the file's tensors the module's (converted to the module's dtypes), for a module
    built on the meta device."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + ", ".join(mismatched[:3]))
        if missing:
            parts.append(f"{len(missing)} missing keys, first: " + ", ".join(missing[:3]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: " + ", ".join(unexpected[:3]))
        raise ConfigError(
            f"model-weights '{path}' do not fit {model} (weights of another architecture?): "
            + "; ".join(parts)
        )
    if assign:
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)


def _meta_tensors(module) -> list[str]:
    """Names of the tensors of ``module`` left on the meta device: parameters, buffers and the
    tensors its code keeps in plain attributes (or lists of them), which no state dict fills."""
    import torch

    left = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr in ("_parameters", "_buffers"):
                items = list(value.items())
            elif isinstance(value, torch.Tensor):
                items = [(attr, value)]
            elif isinstance(value, (list, tuple)):
                items = [(f"{attr}[{i}]", v) for i, v in enumerate(value)]
            else:
                continue
            left += [f"{prefix}.{name}".lstrip(".") for name, t in items
                     if isinstance(t, torch.Tensor) and t.is_meta]
    return left


def _module_with_state(builder, kwargs: dict, state: dict, model: str, path: str):
    """The module ``builder(**kwargs)`` holding ``state``'s tensors, built without allocating
    and initialising weights that the file replaces at once (which doubled the peak memory of
    loading: 200 MB for resnet50); built the usual way when the meta build leaves a tensor
    unfilled."""
    import torch

    with torch.device("meta"):
        module = builder(**kwargs)
    apply_state_dict(module, state, model, path, assign=True)
    if not _meta_tensors(module):
        return module
    module = builder(**kwargs)
    apply_state_dict(module, state, model, path)
    return module


@dataclass(frozen=True)
class _Fitted:
    """A factory's module holding a weights file's tensors, and what the load worked out."""

    module: Any
    checkpoint: Checkpoint
    arguments: dict
    notes: tuple[str, ...]


def _fit_and_build(builder, kwargs: dict, model: str, weights_file: str) -> _Fitted:
    """Read ``weights_file`` in any usual layout and build ``builder``'s module for it: key
    prefixes stripped, constructor arguments (class count, auxiliary heads) from the
    tensors' shapes when the factory's defaults do not fit."""
    import torch

    checkpoint = read_checkpoint(weights_file)
    with torch.device("meta"):
        expected = shapes_of(builder(**kwargs))
    state, prefix = fit_keys(checkpoint.state, expected)
    notes = []
    if checkpoint.layout != "a bare state dict":
        notes.append(f"weights from {checkpoint.layout}")
    if prefix:
        notes.append(f"key prefix '{prefix}' stripped")
    arguments: dict = {}
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        def build(**extra):
            with torch.device("meta"):
                return builder(**kwargs, **extra)

        arguments = fit_builder(build, state)
        for name, value in arguments.items():
            if name == "num_classes":
                notes.append(f"{value} classes from the weights")
            elif name == "num_keypoints":
                notes.append(f"{value} keypoints from the weights")
            elif value:
                notes.append(f"{name}=True (the weights hold its head)")
    module = _module_with_state(builder, {**kwargs, **arguments}, state, model, weights_file)
    return _Fitted(module, checkpoint, arguments, tuple(notes))


def _build_torchvision(model: str, weights_file: str | None):
    """-> (module, the fitted weights file or None)."""
    builder, name = _torchvision_builder(model)
    params = inspect.signature(builder).parameters
    kwargs: dict[str, Any] = {"weights": None}
    if "weights_backbone" in params:
        kwargs["weights_backbone"] = None
    default = torchvision_default_weights(model)
    if weights_file:
        fitted = _fit_and_build(builder, kwargs, model, weights_file)
        return fitted.module, fitted
    if default is None:
        raise ConfigError(
            f"model '{model}' has no pretrained weights in torchvision; pass model-weights=<file>"
        )
    cached = weights_cache_path(default)
    try:
        module = builder(**{**kwargs, "weights": default})
    except Exception as exc:
        raise ConfigError(
            f"the DEFAULT weights of {model} ({default}) could not be obtained "
            f"({type(exc).__name__}: {exception_summary(exc)}). "
            f"Place the file '{cached.name}' (from "
            f"{default.url}) at '{cached}' (the folder follows $TORCH_HOME), "
            "or pass model-weights=<state dict file>",
            detail=str(exc),
        ) from exc
    return module, None


# -- timm --------------------------------------------------------------------------------


def is_timm_name(model: str) -> bool:
    return model.startswith(TIMM_PREFIX)


def is_factory_name(model: str) -> bool:
    """A model built by a library's factory (torchvision or timm) rather than read from a
    file."""
    return is_torchvision_name(model) or is_timm_name(model)


def _timm(model: str):
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            f"model '{model}' needs timm, an optional extra of torchstream: "
            "pip install 'torchstream[timm]' (or pip install timm)") from exc
    return timm


def timm_architecture(model: str) -> str:
    """The timm architecture ``timm.<name>`` names, checked against timm's list."""
    timm = _timm(model)
    name = model[len(TIMM_PREFIX):]
    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model '{model}': timm {timm.__version__} has no architecture "
                          f"'{name}'{hint}")
    return name


@functools.lru_cache(maxsize=16)
def timm_preprocess(model: str) -> ClassifierPreprocess:
    """The evaluation transform timm's data config gives ``model`` (as
    ``timm.data.create_transform(**resolve_model_data_config(m))``: shorter side to
    size / crop_pct, centre crop, the config's interpolation and mean/std)."""
    import torch

    timm = _timm(model)
    with torch.device("meta"):
        module = timm.create_model(timm_architecture(model), pretrained=False)
    config = timm.data.resolve_model_data_config(module)
    height, width = (int(v) for v in config["input_size"][1:])
    crop_pct = float(config.get("crop_pct") or 0.875)
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    mode = config.get("crop_mode") or "center"
    if mode == "squash":
        resize: tuple[int, ...] = scale  # the exact size, then the crop
    elif mode == "center" and scale[0] == scale[1]:
        resize = (scale[0],)  # the shorter side
    else:
        raise ConfigError(f"model '{model}': timm's crop_mode={mode!r} with input size "
                          f"{height}x{width} is not supported; give a model-proc file with "
                          "the preprocessing")
    return ClassifierPreprocess(
        resize_size=resize, crop_size=(height, width),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=str(config.get("interpolation") or "bilinear"), antialias=True)


def _build_timm(model: str, weights_file: str | None) -> _Fitted:
    timm = _timm(model)
    architecture = timm_architecture(model)
    if not weights_file:
        raise ConfigError(
            f"model '{model}': timm's pretrained weights come from the Hugging Face hub, which "
            "torchstream does not download from; pass model-weights=<file> (a state dict, "
            f"checkpoint or .safetensors file, e.g. the hub's timm/{architecture} "
            "model.safetensors)")
    return _fit_and_build(lambda **kw: timm.create_model(architecture, pretrained=False, **kw),
                          {}, model, weights_file)


def model_file_input_size(path: str) -> tuple[int, int] | None:
    """(height, width) of a model file's first input when the file fixes it (``.pt2``,
    OpenVINO ``.xml`` and ``.onnx``; [N, C, H, W] or [N, H, W, C] with C of 1 or 3), else
    None. Read without compiling; remembered while the file is unchanged."""
    try:
        return _input_size_of(path, _file_stamp(path))
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _input_size_of(path: str, stamp: tuple) -> tuple[int, int] | None:
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".xml", ".onnx"):
            import openvino

            shape = openvino.Core().read_model(path).inputs[0].get_partial_shape()
            if shape.rank.is_dynamic:
                return None
            dims = [d.get_length() if d.is_static else 0 for d in shape]
        elif suffix == ".pt2" or "archive_format" in "".join(_zip_names(Path(path))):
            import torch

            program = torch.export.load(path)
            first = program.graph_signature.user_inputs[0]
            node = next(n for n in program.graph.nodes if n.op == "placeholder"
                        and n.name == first)
            dims = [d if isinstance(d, int) else 0 for d in node.meta["val"].shape]
        else:
            return None  # TorchScript and pickles keep no input shape
    except Exception:  # noqa: BLE001 - the load itself reports an unreadable file
        return None
    if len(dims) != 4:
        return None
    height, width = (dims[2], dims[3]) if dims[1] in (1, 3) else (dims[1], dims[2]) \
        if dims[3] in (1, 3) else (0, 0)
    return (height, width) if height and width else None


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _load_model_file(path: str):
    """-> (module, source). Picks the loader by the archive's content, not only its name."""
    import torch

    p = check_file(path, "model file")
    names = _zip_names(p)
    is_export = p.suffix == ".pt2" or any(n.endswith("archive_format") for n in names)
    is_script = any("/code/" in n or n.endswith("constants.pkl") for n in names)
    not_model = (
        f"model file '{path}' is not a model torchstream can read "
        "(TorchScript archive, torch.export .pt2, or a torch.save'd nn.Module)"
    )
    try:
        if is_export:
            return torch.export.load(str(p)).module(), "export"
        if is_script:
            with warnings.catch_warnings():  # torch 2.14 deprecates torch.jit.load: a notice
                warnings.filterwarnings("ignore", r".*torch\.jit\.load.*", FutureWarning)
                return torch.jit.load(str(p), map_location="cpu"), "torchscript"
    except Exception as exc:
        raise ConfigError(f"{not_model}: {exception_summary(exc)}", detail=str(exc)) from exc
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as safe_exc:
        if not names and not looks_like_pickle(p):
            raise ConfigError(
                f"{not_model}: {exception_summary(safe_exc)}", detail=str(safe_exc)
            ) from safe_exc
        if pickle_names_ultralytics(p):
            raise ultralytics_refusal(path) from safe_exc
        if _refusing_pickle():
            raise _pickle_refused(path) from safe_exc
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ConfigError(f"{not_model}: {exception_summary(exc)}", detail=str(exc)) from exc
    if isinstance(obj, dict):
        raise ConfigError(
            f"model file '{path}' holds only a state dict (weights, no architecture): pass it as "
            "model-weights=<file> together with model=torchvision.models.<name> or "
            "timm.<name>"
        )
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(f"model file '{path}' holds a {type(obj).__name__}, not an nn.Module")
    return obj, "pickle"


def _refusing_pickle() -> bool:
    return os.environ.get("TORCHSTREAM_REFUSE_PICKLE") == "1"


def _pickle_refused(path: str) -> ConfigError:
    return ConfigError(
        f"model file '{path}' holds a pickled object, and loading it would run code "
        "from the file; refused because TORCHSTREAM_REFUSE_PICKLE=1"
    )


def _file_stamp(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _takes_image_list(module) -> bool:
    """torchvision detectors take a list of [C,H,W] images rather than one batched tensor."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        try:
            args = module.forward.schema.arguments
            return len(args) > 1 and str(args[1].type).startswith("List[Tensor]")
        except Exception:
            return False
    return type(module).__module__.startswith("torchvision.models.detection")


# The models loaded in this process, by identity, while anything holds them (an element, or a
# graph in torchstream.model.graph's cache): a pipeline started again, or a second element naming
# the same model, shares its weights instead of holding and loading another copy.
_loaded: weakref.WeakValueDictionary[tuple, LoadedModel] = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


def _identity(model: str, weights_file: str | None, device) -> tuple | None:
    """What a load reads: names, and the files with their size and mtime (None when a file
    cannot be read: the load itself says why)."""
    files = (model,) if not is_factory_name(model) else ()
    files += (weights_file,) if weights_file else ()
    files += tuple(str(beside) for f in files[-1:]  # class names beside the file
                   if (beside := Path(f).with_name(LABELS_BESIDE)).is_file())
    try:
        return (model, tuple(_file_stamp(f) for f in files), str(device))
    except OSError:
        return None


def load_model(model: str, weights_file: str | None = None, device: str = "cpu") -> LoadedModel:
    """Load ``model`` (torchvision factory path or model file) onto ``device``, in eval mode;
    the same model still loaded in this process (same files, unchanged) is shared."""
    if not model:
        raise ConfigError("property 'model' is not set")
    dev = parse_device(device)
    identity = _identity(model, weights_file, dev)
    if identity is not None:
        with _loaded_lock:
            shared = _loaded.get(identity)
        if shared is not None:
            if shared.source == "pickle" and _refusing_pickle():
                raise _pickle_refused(model)
            return shared
    loaded = _load(model, weights_file, dev)
    loaded.identity = identity
    if identity is not None:
        with _loaded_lock:
            _loaded[identity] = loaded
    return loaded


def _load(model: str, weights_file: str | None, dev) -> LoadedModel:
    preprocess = None
    names = _ClassNames()
    fitted: _Fitted | None = None
    if is_torchvision_name(model):
        module, fitted = _build_torchvision(model, weights_file)
        source = "torchvision"
        entry = published_weights(model, weights_file)  # what the file is, if published
        weights = entry if entry is not None else torchvision_default_weights(model)
        if weights is not None:
            preprocess = classifier_preprocess(weights)
        if entry is not None and entry.meta.get("categories"):
            names = _ClassNames(tuple(entry.meta["categories"]), str(entry))
    elif is_timm_name(model):
        fitted = _build_timm(model, weights_file)
        module, source, preprocess = fitted.module, "timm", timm_preprocess(model)
    else:
        if weights_file:
            raise ConfigError(
                "model-weights applies to torchvision and timm factories (model=torchvision."
                f"models.<name> or timm.<name>); '{model}' is a model file that carries its "
                "own weights"
            )
        module, source = _load_model_file(model)
    classes = _class_count(module, fitted)
    if not names.names:
        names = _own_class_names(model, weights_file, fitted, classes)
    try:
        module = module.to(dev)
    except Exception as exc:
        raise TorchstreamError(f"could not move {model} to {dev}: {exc}", Domain.RESOURCE) from exc
    try:
        module.eval()
    except Exception:
        pass  # exported programs manage their own mode
    notes = fitted.notes if fitted is not None else ()
    if names.source:  # names of one's own (published weights' go without saying)
        notes += (f"{len(names.names)} class names from {names.source}",)
    return LoadedModel(
        module=module,
        name=model,
        device=dev,
        source=source,
        preprocess=preprocess,
        takes_image_list=_takes_image_list(module),
        categories=names.names,
        weights=names.key,
        notes=notes,
    )


@dataclass(frozen=True)
class _ClassNames:
    names: tuple[str, ...] = ()
    key: str = ""  # what post-processing finds them by (the record's ``weights``)
    source: str = ""  # for the log, of names of one's own


def _class_count(module, fitted: _Fitted | None) -> int | None:
    """The classes a factory's module outputs, when the load knows them."""
    if fitted is not None and "num_classes" in fitted.arguments:
        return int(fitted.arguments["num_classes"])
    count = getattr(module, "num_classes", None)  # timm models say
    return int(count) if isinstance(count, int) else None


def _own_class_names(model: str, weights_file: str | None, fitted: _Fitted | None,
                     classes: int | None) -> _ClassNames:
    """Class names of a model of one's own: saved in its checkpoint, in a ``labels.txt`` beside
    the weights or model file, or ImageNet's for a timm head of 1000 classes; registered for
    post-processing under the file they came from."""
    from torchstream.decode.labels import read_labels_file, register_class_names
    from torchstream.environment import LABELS_DIR

    names: tuple[str, ...] = ()
    source = ""
    if fitted is not None and fitted.checkpoint.class_names:
        names = fitted.checkpoint.class_names
        source = f"the checkpoint '{fitted.checkpoint.path}'"
    else:
        owner = weights_file or (model if not is_factory_name(model) else "")
        beside = Path(owner).with_name(LABELS_BESIDE) if owner else None
        if beside is not None and beside.is_file():
            names = read_labels_file(beside)
            source = f"'{beside}'"
        elif is_timm_name(model) and classes == 1000:
            names = read_labels_file(LABELS_DIR / "imagenet_2012.txt")
            source = "ImageNet-1k (a timm head of 1000 classes)"
    if not names:
        return _ClassNames()
    if classes is not None and len(names) != classes:
        raise ConfigError(f"{source} names {len(names)} classes but {model} outputs {classes}; "
                          "every class id needs a name (line index = class id)")
    return _ClassNames(names, register_class_names(source, names), source)
