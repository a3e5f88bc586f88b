"""A list of streams to run (``torchstream run streams.toml``): the file's settings, each
stream's pipeline description, and where a restarted file stream resumes. GStreamer-free.

    [run]                          # all optional
    status-file = "out/status.json"
    restart = "on-failure"         # never | on-failure | always
    max-restarts = 5

    [defaults]                     # what every stream starts from; a stream's own keys win
    element = "object_detect"
    properties = { model = "models/centernet/centernet.ts", model-proc = "centernet_coco.json" }

    [[stream]]
    name = "gate"
    source = "videos/gate.mp4"     # a file, file:// rtsp:// http(s):// v4l2:///dev/videoN
    jsonl = "out/gate.jsonl"

    [[stream]]
    name = "yard"
    source = "rtsp://10.0.0.5/stream"
    mqtt = { address = "localhost:1883", topic = "cameras/yard" }
    properties = { threshold = 0.6 }

    [[stream]]
    name = "lobby"
    source = "videos/lobby.mp4"
    loop = true                    # start the file again at its end, for ever
    sync = true                    # at the file's own frame rate, as a camera would send it

A stream whose source is a camera (rtsp://, http(s)://, v4l2://) that fails or ends is
reconnected, without limit, waiting ``restart-delay`` then twice as long each time up to
``reconnect-max-delay``; a stream's own ``restart`` key (never, on-failure, always) overrides
``[run]``'s.

A stream names an inference bin (``element`` and its ``properties``) or gives a whole
``pipeline`` template with ``{source}``, ``{name}`` and ``{publish}`` (the stream's outputs
as elements) in it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from torchstream.elements.tensor_inference import PytorchTensorInference, instance_properties
from torchstream.errors import ConfigError
from torchstream.props import launch_element

RESTART_POLICIES = ("never", "on-failure", "always")
RECORD_FORMATS = ("torchstream", "dlstreamer")
MAX_RESTART_DELAY = 30.0  # seconds: the doubling delay between restarts stops growing here


@dataclass(frozen=True)
class RunSettings:
    """The ``[run]`` table."""

    status_file: str = ""
    status_interval: float = 1.0  # seconds between status lines and status-file writes
    restart: str = "on-failure"  # always: a live stream that ended is restarted too
    max_restarts: int = 5  # per stream; then it is reported failed and left stopped
    restart_delay: float = 1.0  # seconds before the first restart, doubling after each
    stall_timeout: float = 120.0  # seconds without a frame out before a stream counts failed
    reconnect_max_delay: float = 5.0  # seconds at most between a camera's reconnection tries
    stop_timeout: float = 10.0  # seconds a stopped stream has to drain after EOS
    share_models: bool = True  # streams whose bins load the same model share one instance
    ray_cpus_per_stream: float = 0.0  # --ray: CPUs each stream's actor reserves (0: none)


@dataclass(frozen=True)
class StreamSpec:
    """One ``[[stream]]`` table, with ``[defaults]`` applied."""

    name: str
    source: str = ""
    element: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    pipeline: str = ""
    jsonl: str = ""
    mqtt: dict[str, str] = field(default_factory=dict)
    format: str = "torchstream"
    restart: str = ""  # the stream's own restart policy ('': the [run] table's)
    loop: bool = False  # a file source: started again from its start at its end
    sync: bool = False  # the sink syncs to the clock: a file plays at its own frame rate

    @property
    def file_path(self) -> str | None:
        """The local file the stream reads, when its source is one."""
        return source_file(self.source)

    @property
    def is_camera(self) -> bool:
        """Its source is a camera's URI: when it fails or ends it is reconnected."""
        return urlparse(self.source).scheme in CAMERA_SCHEMES

    def table(self) -> dict[str, Any]:
        """The ``[[stream]]`` table this spec reads back from (defaults left out)."""
        out: dict[str, Any] = {}
        for key in _STREAM_KEYS:
            value = getattr(self, key)
            if key == "name" or value != _SPEC_DEFAULTS[key]:
                out[key] = dict(value) if isinstance(value, dict) else value
        return out

    def publish(self, append: bool, first_frame: int = 0) -> str:
        """The stream's outputs as elements of a description ('' for none)."""
        parts = []
        numbering = {"first-frame": first_frame} if first_frame else {}
        if self.jsonl:
            parts.append(launch_element("meta_publish", {
                "file-path": self.jsonl, "format": self.format, "append": append,
                **numbering}))
        if self.mqtt:
            parts.append(launch_element("meta_publish", {
                "method": "mqtt", "format": self.format, **self.mqtt, **numbering}))
        return " ! ".join(parts)

    def description(self, append: bool = False, first_frame: int = 0) -> str:
        """The gst-launch description of one run; ``append``: outputs add to their files;
        ``first_frame``: the frame number their first record gets."""
        publish = self.publish(append, first_frame)
        if self.pipeline:
            return self.pipeline.format(source=self.source, name=self.name,
                                        publish=publish or "identity")
        chain = [source_description(self.source), launch_element(self.element, self.properties)]
        if publish:
            chain.append(publish)
        chain.append(f"fakesink sync={str(self.sync).lower()}")
        return " ! ".join(chain)


@dataclass(frozen=True)
class StreamsConfig:
    run: RunSettings
    streams: tuple[StreamSpec, ...]


_RUN_KEYS = {
    "status-file": ("status_file", str), "status-interval": ("status_interval", float),
    "restart": ("restart", str), "max-restarts": ("max_restarts", int),
    "restart-delay": ("restart_delay", float), "stall-timeout": ("stall_timeout", float),
    "stop-timeout": ("stop_timeout", float),
    "reconnect-max-delay": ("reconnect_max_delay", float), "share-models": ("share_models", bool),
    "ray-cpus-per-stream": ("ray_cpus_per_stream", float),
}
_STREAM_KEYS = ("name", "source", "element", "properties", "pipeline", "jsonl", "mqtt",
                "format", "restart", "loop", "sync")
CAMERA_SCHEMES = ("rtsp", "rtsps", "http", "https", "v4l2")
_MQTT_KEYS = ("address", "topic", "mqtt-client-id", "mqtt-config", "max-connect-attempts",
              "max-reconnect-interval")
_PLACEHOLDERS = {"source", "name", "publish"}


def load(path: str | os.PathLike) -> StreamsConfig:
    """Read and check a streams file; every mistake is a ConfigError naming the file."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return parse(data, where)


def parse(data: dict[str, Any], where: str = "streams file") -> StreamsConfig:
    unknown = sorted(set(data) - {"run", "defaults", "stream"})
    if unknown:
        raise ConfigError(f"{where}: unknown table {unknown[0]!r} (known: run, defaults, "
                          "stream)")
    run = _run_settings(_table(data, "run", where), where)
    defaults = _table(data, "defaults", where)
    _check_keys(defaults, _STREAM_KEYS, f"{where}: [defaults]")
    tables = data.get("stream", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where}: no streams: add one [[stream]] table per stream")
    streams = [stream_spec(table, defaults, where, i) for i, table in enumerate(tables)]
    names = [s.name for s in streams]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{where}: stream name {repeated[0]!r} is used twice")
    outputs = [s.jsonl for s in streams if s.jsonl]
    shared_files = sorted({o for o in outputs if outputs.count(o) > 1})
    if shared_files:
        raise ConfigError(f"{where}: two streams write jsonl {shared_files[0]!r}")
    if run.share_models:
        streams = share_instances(streams)
    return StreamsConfig(run, tuple(streams))


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key!r} must be a table")
    return value


def _check_keys(table: dict, known, where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def _run_settings(table: dict, where: str) -> RunSettings:
    _check_keys(table, tuple(_RUN_KEYS), f"{where}: [run]")
    values = {}
    for key, value in table.items():
        attr, kind = _RUN_KEYS[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: [run] {key} must be a {kind.__name__}, got {value!r}")
        if kind in (int, float) and value < 0:
            raise ConfigError(f"{where}: [run] {key} must not be negative, got {value!r}")
        values[attr] = value
    settings = RunSettings(**values)
    if settings.restart not in RESTART_POLICIES:
        raise ConfigError(f"{where}: [run] restart must be one of {', '.join(RESTART_POLICIES)},"
                          f" got {settings.restart!r}")
    if settings.status_interval <= 0:
        raise ConfigError(f"{where}: [run] status-interval must be above 0")
    return settings


def stream_spec(table: Any, defaults: dict | None = None, where: str = "streams file",
                index: int = 0) -> StreamSpec:
    """One ``[[stream]]`` table checked, ``defaults`` applied; a mistake is a ConfigError
    that names the key."""
    defaults = defaults or {}
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: stream {index + 1} must be a table")
    label = f"{where}: stream {table.get('name') or index + 1}"
    _check_keys(table, _STREAM_KEYS, label)
    merged = {**defaults, **table}
    merged["properties"] = {**defaults.get("properties", {}), **table.get("properties", {})}
    if "pipeline" in table and "element" not in table:
        # A stream's own template wins over a default bin and that bin's properties.
        merged.pop("element", None)
        merged["properties"] = dict(table.get("properties", {}))
    if "element" in table and "pipeline" not in table:
        merged.pop("pipeline", None)
    for key in ("name", "source", "element", "pipeline", "jsonl", "format"):
        if not isinstance(merged.get(key, ""), str):
            raise ConfigError(f"{label}: {key} must be a string")
    for key in ("properties", "mqtt"):
        if not isinstance(merged.get(key, {}), dict):
            raise ConfigError(f"{label}: {key} must be a table")
    for key in ("loop", "sync"):
        if not isinstance(merged.get(key, False), bool):
            raise ConfigError(f"{label}: {key} must be true or false")
    merged.setdefault("name", f"stream-{index + 1}")
    if not re.fullmatch(r"[\w.-]+", merged["name"]):
        raise ConfigError(f"{label}: name may hold letters, digits, '_', '-' and '.' only")
    spec = StreamSpec(**merged)
    if spec.format not in RECORD_FORMATS:
        raise ConfigError(f"{label}: format must be one of {', '.join(RECORD_FORMATS)}")
    if spec.restart and spec.restart not in RESTART_POLICIES:
        raise ConfigError(f"{label}: restart must be one of {', '.join(RESTART_POLICIES)}")
    if spec.loop and spec.file_path is None:
        raise ConfigError(f"{label}: loop is for a file source (a camera is reconnected "
                          "instead)")
    if spec.mqtt:
        _check_keys(spec.mqtt, _MQTT_KEYS, f"{label}: mqtt")
    if spec.pipeline:
        if spec.properties:
            raise ConfigError(f"{label}: properties go with element, not with a pipeline "
                              "template (write them into the template)")
        used = set(re.findall(r"(?<!\{)\{(\w*)\}", spec.pipeline))
        if used - _PLACEHOLDERS:
            raise ConfigError(f"{label}: unknown placeholder {{{sorted(used - _PLACEHOLDERS)[0]}}}"
                              " in pipeline (known: {source}, {name}, {publish}; {{ for a brace)")
        if (spec.jsonl or spec.mqtt) and "publish" not in used:
            raise ConfigError(f"{label}: the pipeline template must hold {{publish}} where "
                              "the stream's jsonl/mqtt outputs go")
    else:
        if not spec.element:
            raise ConfigError(f"{label}: give element (an inference bin, e.g. object_detect) "
                              "or a pipeline template")
        if not spec.source:
            raise ConfigError(f"{label}: source is missing (a file, or a file://, rtsp://, "
                              "http(s):// or v4l2:// URI)")
    if spec.file_path is not None and not Path(spec.file_path).is_file():
        raise ConfigError(f"{label}: source file {spec.file_path!r} does not exist")
    return spec


_SPEC_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not MISSING
                  else f.default for f in fields(StreamSpec) if f.default is not MISSING
                  or f.default_factory is not MISSING}


def instance_key(spec: StreamSpec) -> tuple | None:
    """What decides whether two streams' bins load the same model the same way (None: a
    pipeline template or an instance named by the stream)."""
    if spec.pipeline or "model-instance-id" in spec.properties:
        return None
    return (spec.element, *(str(spec.properties.get(k)) for k in
                            instance_properties(PytorchTensorInference.PROPERTIES)))


def share_instances(streams: list[StreamSpec]) -> list[StreamSpec]:
    """Streams whose bins load one model the same way get one ``model-instance-id`` (unless
    they name their own), so the process holds one copy of it."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(streams):
        key = instance_key(spec)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out = list(streams)
    for number, members in enumerate(g for g in groups.values() if len(g) > 1):
        for i in members:
            out[i] = with_properties(out[i], {"model-instance-id":
                                              f"{out[i].element}-{number + 1}"})
    return out


def with_properties(spec: StreamSpec, extra: dict[str, Any]) -> StreamSpec:
    return StreamSpec(**{**spec.__dict__, "properties": {**spec.properties, **extra}})


def source_file(source: str) -> str | None:
    if not source:
        return None
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # a URI (a one-letter scheme: a drive)
        return None
    return source


def source_description(source: str) -> str:
    """The elements that decode ``source`` into raw video."""
    path = source_file(source)
    if path is not None:
        return f"{launch_element('filesrc', {'location': path})} ! decodebin"
    parsed = urlparse(source)
    if parsed.scheme == "rtsp":
        return f"{launch_element('rtspsrc', {'location': source, 'protocols': 'tcp'})} ! decodebin"
    if parsed.scheme == "v4l2":
        return f"{launch_element('v4l2src', {'device': parsed.path or '/dev/video0'})} ! decodebin"
    return launch_element("uridecodebin", {"uri": source})


@dataclass(frozen=True)
class ResumePoint:
    """Where a restarted file stream carries on: after ``pts`` (ns), numbering its frames
    from ``records`` (the records published before)."""

    pts: int
    records: int


def resume_point(path: str, format: str = "torchstream") -> ResumePoint | None:
    """Where the JSON Lines output of a stream ends. A last line without its newline (the
    process died while writing it) is cut off first, so the file holds complete records only."""
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                handle.truncate(end)
    except FileNotFoundError:
        return None
    lines = data[:end].splitlines()
    if not lines:
        return None
    try:
        record = json.loads(lines[-1])
    except ValueError:
        return None
    pts = record.get("timestamp" if format == "dlstreamer" else "pts")
    return ResumePoint(pts, len(lines)) if isinstance(pts, int) else None
