"""What a stream added over the API may run: a request comes from the network, so it may not
write files outside the output folder, read media or models outside the folders the operator
named, or give gst-launch text (a ``filesink`` writes anywhere) unless the operator allowed
pipelines. A refusal carries its HTTP status and the reason; nothing is started."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from torchstream.environment import PACKAGE_DIR

API_ELEMENTS = ("video_inference", "object_detect", "object_classify")
API_SCHEMES = ("rtsp", "rtsps", "http", "https", "v4l2")


class Refusal(Exception):
    """A request the service will not run: ``status`` (4xx) and ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _strings(table: dict[str, Any], prefix: str = ""):
    """(key, value) of every string in the table and its sub-tables."""
    for key, value in table.items():
        if isinstance(value, str):
            yield f"{prefix}{key}", value
        elif isinstance(value, dict):
            yield from _strings(value, f"{prefix}{key}.")


@dataclass(frozen=True)
class ApiPolicy:
    out_dir: Path
    media_dirs: list[Path] = field(default_factory=list)
    models_dirs: list[Path] = field(default_factory=list)
    allow_pipelines: bool = False

    def admit(self, table: dict[str, Any]) -> dict[str, Any]:
        """The stream table with its paths made absolute, or a Refusal."""
        try:
            return self._admit(dict(table))
        except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, ~nosuchuser, ...
            raise Refusal(422, f"a path in the stream cannot be read: {exc}") from None

    def _admit(self, table: dict[str, Any]) -> dict[str, Any]:
        for key, value in _strings(table):
            if "\x00" in value:
                raise Refusal(422, f"{key}: holds a NUL character")
        if table.get("pipeline"):
            raise Refusal(403, "pipeline: gst-launch templates are refused over the API (the "
                               "service was started without --allow-pipelines); name an "
                               f"element ({', '.join(API_ELEMENTS)}) with properties")
        element = table.get("element", "")
        if not table.get("pipeline") and element not in API_ELEMENTS:
            raise Refusal(422, f"element: {element!r} is not an inference bin; one of "
                               f"{', '.join(API_ELEMENTS)}")
        if table.get("jsonl"):
            table["jsonl"] = str(self._output(table["jsonl"]))
        if "source" in table:
            table["source"] = self._source(str(table["source"]))
        properties = dict(table.get("properties") or {})
        if "cache-dir" in properties:
            raise Refusal(403, "properties.cache-dir: the engine cache is the service's own "
                               "(TORCHSTREAM_CACHE_DIR where it starts); a request may not "
                               "name a folder to write in")
        for key, value in properties.items():
            self._checked_file(f"properties.{key}", value)
        for key, value in dict(table.get("mqtt") or {}).items():
            self._checked_file(f"mqtt.{key}", value)
        return table

    def _output(self, jsonl: Any) -> Path:
        if not isinstance(jsonl, str):
            raise Refusal(422, "jsonl: must be a string (a file inside the output folder)")
        given = Path(jsonl)
        if ".." in given.parts:
            raise Refusal(403, f"jsonl: {jsonl!r} holds '..'; give a file inside the output "
                               "folder")
        root = self.out_dir.resolve()
        path = (given if given.is_absolute() else root / given).resolve()
        if not _inside(path, [root]) or path == root:
            raise Refusal(403, f"jsonl: {jsonl!r} is outside the output folder {root}")
        return path

    def _source(self, source: str) -> str:
        parsed = urlparse(source)
        if parsed.scheme in API_SCHEMES:
            if parsed.scheme == "v4l2" and not parsed.path.startswith("/dev/video"):
                raise Refusal(403, f"source: {source!r}: a v4l2:// source names /dev/videoN")
            return source
        if parsed.scheme and len(parsed.scheme) > 1 and parsed.scheme != "file":
            raise Refusal(403, f"source: scheme {parsed.scheme!r} is refused; a file inside "
                               f"the media folders or {', '.join(API_SCHEMES)} URIs")
        given = Path(unquote(parsed.path) if parsed.scheme == "file" else source)
        roots = [d.resolve() for d in self.media_dirs]
        candidates = [given] if given.is_absolute() else [r / given for r in roots]
        for candidate in candidates:
            path = candidate.resolve()
            if _inside(path, roots):
                return str(path)
        raise Refusal(403, f"source: {source!r} is not a file inside the media folders "
                           f"({', '.join(map(str, roots)) or 'none given: --media-dir'})")

    def _checked_file(self, key: str, value: Any) -> None:
        """A value that names a file (a path separator in it, or ``~``) must lie in a media
        or models folder or in the package's own data."""
        if not isinstance(value, str) or not (os.sep in value or value.startswith("~")):
            return
        path = Path(value).expanduser().resolve()
        roots = [d.resolve() for d in (*self.media_dirs, *self.models_dirs)] + [PACKAGE_DIR]
        if not _inside(path, roots):
            raise Refusal(403, f"{key}: {value!r} is outside the models and media folders "
                               f"({', '.join(str(r) for r in roots)})")
