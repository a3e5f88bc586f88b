"""Fetch the TF.js graph models used here from the npm package ``@vladmandic/human``: the
CenterNet COCO detector and the MoveNet Lightning pose model.

    .venv/bin/python -m scripts.fetch_human [--cache-dir models/cache]

``npm pack`` downloads the pinned package tarball into the cache folder; its sha512 is checked
against the registry's published integrity, then only the models' ``.json`` and ``.bin`` files
are extracted and checked against the sha256 sums pinned below.
Idempotent: when the extracted files already match, nothing runs (npm is not even needed); a
cached tarball with the right hash is not downloaded again.

Exit status 0 when the files are in place; otherwise one line on stderr saying why (npm
missing, registry unreachable, a hash mismatch) and what to do, and status 2 (npm or the
registry unavailable) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "models" / "cache"
PACKAGE = "@vladmandic/human"
VERSION = "3.3.6"
TARBALL = f"vladmandic-human-{VERSION}.tgz"
# From the registry's metadata (``npm view @vladmandic/human@3.3.6 dist.integrity``).
INTEGRITY = (
    "sha512-Nr5mPfq1gQ+uKeXY5uM3Fj8UxvF5CEh2s6txM5wRThqaW0mF9huooOuZSrT8hhGho0hGaXLFdAwfD/2+teCv6A=="
)
# Measured once on the files extracted from that tarball.
FILES = {
    "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
    "movenet-lightning.json": "df8cbde44d00f533ccc4916a7c6ebc17316532fb3fadad114ec667fef22872e9",
    "movenet-lightning.bin": "bf97bc10d9c8a11200b0190ed64ce039b6252f1aff7cb552aca99b3d191c2f34",
}
NPM_TIMEOUT_S = 300


class FetchError(RuntimeError):
    """The model could not be put in place; ``unavailable`` when npm/the registry is the cause."""

    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass
class Fetched:
    model_json: Path
    weights: Path
    downloaded: bool


def model_dir(cache_dir: Path = CACHE_DIR) -> Path:
    """Where the extracted model files live."""
    return cache_dir / f"human-{VERSION}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _integrity_ok(path: Path) -> bool:
    algo, _, expected = INTEGRITY.partition("-")
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode() == expected


def _extracted_ok(directory: Path) -> bool:
    return all((directory / n).is_file() and _sha256(directory / n) == s for n, s in FILES.items())


def _registry() -> str:
    return os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or (
        "the configured npm registry")


def _npm_pack(cache_dir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            "npm is not installed: install it (Debian 12: apt-get install npm) and run again, "
            f"or place {TARBALL} in {cache_dir}", unavailable=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(cache_dir),
           # Fail within seconds when the registry is unreachable instead of retrying for minutes.
           "--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=5000"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
                              cwd=cache_dir)
    except subprocess.TimeoutExpired:
        raise FetchError(f"npm pack {PACKAGE}@{VERSION} timed out after {NPM_TIMEOUT_S} s: "
                         f"{_registry()} is unreachable or slow; check the network/proxy "
                         f"(npm_config_registry) or place {TARBALL} in {cache_dir}",
                         unavailable=True) from None
    if done.returncode != 0:
        err = " ".join(done.stderr.split())
        network = any(s in err for s in ("ECONNREFUSED", "ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN",
                                         "ECONNRESET", "network", "EHOSTUNREACH", "proxy"))
        reason = ("cannot reach " + _registry()) if network else "npm pack failed"
        detail = next((ln.strip() for ln in done.stderr.splitlines() if "npm error" in ln
                       and ("code" in ln or "request" in ln or "network" in ln)), err[:200])
        raise FetchError(f"{reason} while fetching {PACKAGE}@{VERSION} ({detail}); check the "
                         f"network/proxy (npm_config_registry) or place {TARBALL} in {cache_dir}",
                         unavailable=network)
    try:
        name = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        name = TARBALL
    tarball = cache_dir / name
    if not tarball.is_file():
        raise FetchError(f"npm pack reported success but {tarball} is missing")
    return tarball


def _extract(tarball: Path, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for name in FILES:
            member = tar.getmember(f"package/models/{name}")
            src = tar.extractfile(member)
            if src is None:
                raise FetchError(f"{tarball}: package/models/{name} is not a file")
            tmp = directory / (name + ".tmp")
            with src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            got = _sha256(tmp)
            if got != FILES[name]:
                tmp.unlink()
                raise FetchError(f"{name} from {tarball.name}: sha256 {got} does not match the "
                                 f"pinned {FILES[name]}")
            tmp.replace(directory / name)


def fetch(cache_dir: Path = CACHE_DIR, model: str = "centernet") -> Fetched:
    """Ensure every verified model file exists; return the paths of ``model``'s graph
    (``centernet`` or ``movenet-lightning``)."""
    directory = model_dir(cache_dir)
    paths = Fetched(directory / f"{model}.json", directory / f"{model}.bin", False)
    if _extracted_ok(directory):
        return paths
    tarball = cache_dir / TARBALL
    if not (tarball.is_file() and _integrity_ok(tarball)):
        tarball = _npm_pack(cache_dir)
        paths.downloaded = True
        if not _integrity_ok(tarball):
            bad = tarball.with_name(tarball.name + ".bad")
            tarball.replace(bad)
            raise FetchError(f"{tarball.name}: integrity check failed (expected {INTEGRITY}); "
                             f"kept as {bad.name}")
    _extract(tarball, directory)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = p.parse_args(argv)
    try:
        got = fetch(args.cache_dir)
    except FetchError as e:
        print(f"fetch_human: {e}", file=sys.stderr)
        return 2 if e.unavailable else 1
    state = "downloaded" if got.downloaded else "already present"
    print(f"fetch_human: {', '.join(FILES)} in {got.model_json.parent} ({state}, hashes "
          "verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
