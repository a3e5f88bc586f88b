"""The engine choice kept on disk, so a process that starts the same model again skips the
choice: it builds only the engine chosen before (OpenVINO's converted model read back, its
compiled model from OpenVINO's own cache) and checks its outputs against torch's.

An entry is kept under a hash of the model's identity (a factory's name and weights, or a model
file's bytes), the settings that decide the choice (engine, threads, input signature, device,
shared), the CPU (model, flags and the cores this process may use) and the versions of the
libraries that build engines: any change finds another entry. Entries are written whole (a
temporary file renamed over the old one), so two processes starting at once each read either
nothing or a complete entry; an entry that cannot be read is dropped with a warning and the
choice made again.

The inference elements' ``cache-dir`` property names the folder (``off`` disables it); unset,
``TORCHSTREAM_CACHE_DIR`` does, and without either it is ``$XDG_CACHE_HOME/torchstream``,
else ``~/.cache/torchstream``. Functions here take that setting (None: unset) as ``setting``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "TORCHSTREAM_CACHE_DIR"
FORMAT = 1  # the entries' layout: an entry of another format is not read
OFF = ("", "0", "off", "none", "false", "no")


def cache_dir(setting: str | None = None) -> Path | None:
    """The cache folder for a ``cache-dir`` ``setting`` (None: the environment's), or None
    when the cache is disabled."""
    value = setting if setting is not None else os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "torchstream"


@functools.cache
def _cpu() -> str:
    """The CPU model and its instruction-set flags: OpenVINO's kernels and the timings that
    decided a choice depend on both."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags":
                flags = " ".join(sorted(value.split()))
                break
    except OSError:
        pass
    model = model or platform.processor()  # where /proc/cpuinfo names none
    return f"{model} [{hashlib.sha256(flags.encode()).hexdigest()[:16]}]"


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    found = []
    for name in ("torch", "torchvision", "openvino", "timm", "torchstream"):
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, ""))
    return tuple(found)


def fingerprint(cpus: int) -> dict[str, Any]:
    """What else an entry is only valid for: the CPU, the cores it may use, the versions."""
    return {"cpu": _cpu(), "cpus": cpus, "python": platform.python_version(),
            "versions": dict(_versions())}


@dataclass(frozen=True)
class StoredChoice:
    """One entry: ``path`` (the JSON record) and, for an OpenVINO choice, the converted model
    beside it (``ir``: ``.xml`` with its ``.bin``)."""

    path: Path

    @property
    def ir(self) -> Path:
        return self.path.with_suffix(".xml")

    def load(self) -> tuple[dict | None, str]:
        """(the record, "") when there is a readable one; (None, why) when there is one that
        cannot be used (it is removed); (None, "") when there is none."""
        try:
            text = self.path.read_text()
        except (FileNotFoundError, NotADirectoryError):  # none yet (saving says why not)
            return None, ""
        except OSError as exc:
            return None, f"cannot read {self.path}: {exc}"
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise ValueError(f"not an entry of format {FORMAT}")
            if not isinstance(record.get("engine"), str) \
                    or not isinstance(record.get("timings_ms"), dict):
                raise ValueError("no engine or timings")
            if record["engine"] == "openvino" and not (
                    self.ir.exists() and self.ir.with_suffix(".bin").exists()):
                raise ValueError("its OpenVINO model files are missing")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self.remove()
            return None, f"the stored engine choice {self.path} is damaged ({exc}): removed"
        return record, ""

    def save(self, engine: str, timings_ms: dict[str, float], note: str,
             openvino_model: Any = None) -> str:
        """Write the entry whole; the OpenVINO model first, so a record never names files
        that are not there yet. A cache that cannot be written is no error (the next start
        chooses again): returns why, for the choice's note, or ""."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if openvino_model is not None:
                _save_ir(openvino_model, self.ir)
            record = {"format": FORMAT, "engine": engine, "timings_ms": timings_ms,
                      "note": note}
            _write_whole(self.path, json.dumps(record, indent=1).encode())
        except Exception as exc:  # noqa: BLE001 - a full disk, a read-only folder, ...
            return f"the choice could not be kept in {self.path.parent} ({exc})"
        return ""

    def remove(self) -> None:
        for path in (self.path, self.ir, self.ir.with_suffix(".bin")):
            path.unlink(missing_ok=True)


def stored_choice(key: tuple | None, cpus: int,
                  setting: str | None = None) -> StoredChoice | None:
    """The entry for a choice under ``key`` (engines' choice key), None when the cache is
    off or the model has no identity to keep it under."""
    root = cache_dir(setting)
    if root is None or key is None:
        return None
    text = json.dumps({"key": repr(key), **fingerprint(cpus)}, sort_keys=True)
    return StoredChoice(root / "choices" / f"{hashlib.sha256(text.encode()).hexdigest()}.json")


def openvino_cache_dir(setting: str | None = None) -> str | None:
    """Where OpenVINO keeps the models it compiled (its ``CACHE_DIR``), under ours."""
    root = cache_dir(setting)
    return None if root is None else str(root / "openvino")


def _write_whole(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_ir(model: Any, xml: Path) -> None:
    """The converted model as IR (``.xml`` and ``.bin``), each renamed into place whole."""
    import openvino

    with tempfile.TemporaryDirectory(dir=xml.parent) as folder:
        staged = Path(folder) / "model.xml"
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
