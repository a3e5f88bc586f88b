"""The one model loader: torchvision factories, state dicts and model files, on a device.

Model files are code: a whole pickled ``nn.Module`` executes code from the file when loaded.
Such files are refused when the environment variable ``TORCHSTREAM_REFUSE_PICKLE`` is set to
``1``; state dicts are always read with ``weights_only=True``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
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

TORCHVISION_PREFIX = "torchvision.models."
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
    categories: tuple[str, ...] = field(default=())  # of published weights only
    weights: str = ""  # the published torchvision weights, e.g. MobileNet_V2_Weights.IMAGENET1K_V1
    # what it was loaded from (names, files with size and mtime, device): equal identities
    # hold equal weights; None for a model made by hand
    identity: tuple | None = None
    input_size: tuple[int, int] | None = None  # (height, width) fixed by the model file

    def preferred_input_size(self) -> tuple[int, int] | None:
        """(height, width) the model file fixes, else the one the weights' preprocessing
        resizes to, when the weights name one."""
        return self.input_size or preferred_input_size(self.preprocess)


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


def weights_categories(model: str, weights_file: str | None = None) -> tuple[str, ...]:
    """The category names of the published weights the model runs with (() when none)."""
    if not is_torchvision_name(model):
        return ()
    try:
        entry = published_weights(model, weights_file)
    except Exception:  # noqa: BLE001 - a bad name is reported when the model loads
        return ()
    return tuple(entry.meta.get("categories") or ()) if entry is not None else ()


def weights_cache_path(weights) -> Path:
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def check_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} '{path}' does not exist", )
    if p.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} '{path}' is not readable (permissions)")
    return p


def load_state_dict_file(path: str) -> dict:
    """Read a state dict with ``weights_only=True`` (never runs code from the file)."""
    import torch

    p = check_file(path, "model-weights file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"model-weights file '{path}' is not a readable weights-only state dict: "
            f"{exception_summary(exc)}",
            detail=str(exc),
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConfigError(f"model-weights file '{path}' does not hold a state dict of tensors")
    return state


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
    """The module holding ``state``'s tensors, built without allocating and initialising
    weights that the file replaces at once (which doubled the peak memory of loading: 200 MB
    for resnet50); built the usual way when the meta build leaves a tensor unfilled."""
    import torch

    with torch.device("meta"):
        module = builder(weights=None, **kwargs)
    apply_state_dict(module, state, model, path, assign=True)
    if not _meta_tensors(module):
        return module
    module = builder(weights=None, **kwargs)
    apply_state_dict(module, state, model, path)
    return module


def _build_torchvision(model: str, weights_file: str | None):
    builder, name = _torchvision_builder(model)
    params = inspect.signature(builder).parameters
    kwargs: dict[str, Any] = {}
    if "weights_backbone" in params:
        kwargs["weights_backbone"] = None
    default = torchvision_default_weights(model)
    if weights_file:
        state = load_state_dict_file(weights_file)
        module = _module_with_state(builder, kwargs, state, model, weights_file)
        return module, torchvision_weights_for(model, weights_file)
    if default is None:
        raise ConfigError(
            f"model '{model}' has no pretrained weights in torchvision; pass model-weights=<file>"
        )
    cached = weights_cache_path(default)
    try:
        module = builder(weights=default, **kwargs)
    except Exception as exc:
        raise ConfigError(
            f"the DEFAULT weights of {model} ({default}) could not be obtained "
            f"({type(exc).__name__}: {exception_summary(exc)}). "
            f"Place the file '{cached.name}' (from "
            f"{default.url}) at '{cached}' (the folder follows $TORCH_HOME), "
            "or pass model-weights=<state dict file>",
            detail=str(exc),
        ) from exc
    return module, default


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
        if not names and not _looks_like_pickle(p):
            raise ConfigError(
                f"{not_model}: {exception_summary(safe_exc)}", detail=str(safe_exc)
            ) from safe_exc
        if _refusing_pickle():
            raise _pickle_refused(path) from safe_exc
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ConfigError(f"{not_model}: {exception_summary(exc)}", detail=str(exc)) from exc
    if isinstance(obj, dict):
        raise ConfigError(
            f"model file '{path}' holds only a state dict (weights, no architecture): pass it as "
            "model-weights=<file> together with model=torchvision.models.<name>"
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


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


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
# graph in torchstream.graph's cache): a pipeline started again, or a second element naming
# the same model, shares its weights instead of holding and loading another copy.
_loaded: weakref.WeakValueDictionary[tuple, LoadedModel] = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


def _identity(model: str, weights_file: str | None, device) -> tuple | None:
    """What a load reads: names, and the files with their size and mtime (None when a file
    cannot be read: the load itself says why)."""
    files = (model,) if not is_torchvision_name(model) else ()
    files += (weights_file,) if weights_file else ()
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
    categories: tuple[str, ...] = ()
    published = ""
    if is_torchvision_name(model):
        module, weights = _build_torchvision(model, weights_file)
        source = "torchvision"
        if weights is not None:
            preprocess = classifier_preprocess(weights)
        entry = published_weights(model, weights_file)
        if entry is not None:
            published = str(entry)
            categories = tuple(entry.meta.get("categories") or ())
    else:
        if weights_file:
            raise ConfigError(
                "model-weights applies to torchvision factories (model=torchvision.models.<name>);"
                f" '{model}' is a model file that carries its own weights"
            )
        module, source = _load_model_file(model)
    try:
        module = module.to(dev)
    except Exception as exc:
        raise TorchstreamError(f"could not move {model} to {dev}: {exc}", Domain.RESOURCE) from exc
    try:
        module.eval()
    except Exception:
        pass  # exported programs manage their own mode
    return LoadedModel(
        module=module,
        name=model,
        device=dev,
        source=source,
        preprocess=preprocess,
        takes_image_list=_takes_image_list(module),
        categories=categories,
        weights=published,
    )
