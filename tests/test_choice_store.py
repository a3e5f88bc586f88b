"""The engine choice kept on disk: a later start rebuilds only the engine chosen before, checked
against torch; other settings find another entry; a damaged entry is said and made again; two
processes starting at once both run; the environment and the cache-dir property move or
disable the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchstream.caps import TensorInfo, TensorsConfig
from torchstream.model import engines
from torchstream.model.batching import BatchRunner
from torchstream.model.choice_store import CACHE_ENV, cache_dir
from torchstream.model.loading import load_model

REPO = Path(__file__).resolve().parents[1]
MOBILENET = "torchvision.models.mobilenet_v2"
IMAGE = TensorsConfig((TensorInfo("float32", (3, 112, 112)),))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def start(weights: Path, threads: int = 0) -> BatchRunner:
    """What a new process does: nothing in memory from earlier runs, the model loaded and
    probed."""
    engines._choices.clear()
    runner = BatchRunner(load_model(MOBILENET, str(weights)), IMAGE, "auto", threads)
    runner.probe()
    return runner


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "choices").glob("*.json"))


def test_a_later_start_rebuilds_the_stored_engine_and_checks_it(cache, mobilenet_weights):
    first = start(mobilenet_weights)
    assert "earlier start" not in first.choice.note
    [entry] = entries(cache)
    record = json.loads(entry.read_text())
    assert record["engine"] == first.choice.engine.name
    assert record["timings_ms"].items() <= first.choice.timings_ms.items()
    later = start(mobilenet_weights)
    assert later.choice.engine.name == first.choice.engine.name
    assert "as chosen by an earlier start" in later.choice.note and str(entry) in later.choice.note
    assert later.choice.note.startswith(first.choice.note.split(";")[0])  # the reasons kept
    x = [[torch.rand(3, 112, 112, generator=torch.Generator().manual_seed(5))]]
    assert engines.outputs_equal(later.forward(x), first.forward(x))
    assert entries(cache) == [entry]
    other = start(mobilenet_weights, threads=1)  # other settings: chosen, and kept apart
    assert "earlier start" not in other.choice.note
    assert len(entries(cache)) == 2


def test_a_damaged_entry_is_said_removed_and_made_again(cache, mobilenet_weights):
    start(mobilenet_weights)
    [entry] = entries(cache)
    entry.write_text('{"format": 1, "engine": "openvino", "timin')  # a write cut short
    again = start(mobilenet_weights)
    assert "damaged" in again.choice.warning and str(entry) in again.choice.warning
    assert "earlier start" not in again.choice.note
    assert json.loads(entry.read_text())["engine"] == again.choice.engine.name  # written anew
    if again.choice.engine.name == "openvino":
        entry.with_suffix(".bin").write_bytes(b"\0" * 64)  # weights that are not the model's
        third = start(mobilenet_weights)
        assert "could not be rebuilt" in third.choice.warning \
            or "no longer gives torch's outputs" in third.choice.warning, third.choice.note


def test_the_environment_moves_or_disables_the_cache(tmp_path, monkeypatch, mobilenet_weights):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "torchstream"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_dir() is None
    start(mobilenet_weights)
    assert not (tmp_path / "xdg").exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))  # a folder that cannot be made
    runner = start(mobilenet_weights)  # runs, and says the choice was not kept
    assert "could not be kept" in runner.choice.note and not runner.choice.warning


@pytest.mark.slow
def test_two_processes_starting_at_once_both_run_and_leave_one_whole_entry(
        cache, mobilenet_weights):
    script = f"""
from torchstream.caps import TensorInfo, TensorsConfig
from torchstream.model.batching import BatchRunner
from torchstream.model.loading import load_model
runner = BatchRunner(load_model("{MOBILENET}", "{mobilenet_weights}"),
                     TensorsConfig((TensorInfo("float32", (3, 112, 112)),)))
runner.probe()
print(runner.choice.engine.name)
"""
    env = {**__import__("os").environ, CACHE_ENV: str(cache)}
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in processes]
    assert all(code == 0 for _, _, code in results), [err for _, err, _ in results]
    [entry] = entries(cache)
    assert json.loads(entry.read_text())["engine"] in {out.split()[-1] for out, _, _ in results}
    assert not [p for p in (cache / "choices").iterdir() if p.name.startswith(".")]
    later = start(mobilenet_weights)
    assert "as chosen by an earlier start" in later.choice.note


def test_the_cache_dir_property_moves_or_disables_the_cache(cache, tmp_path, mobilenet_weights):
    """The property wins over the environment: entries go to its folder, and `off` keeps
    nothing anywhere."""
    from torchstream.gst import Gst
    from torchstream.gst.pipeline import run_to_end

    def launch(setting: str) -> str:
        engines._choices.clear()  # as a new process
        pipeline = Gst.parse_launch(
            "videotestsrc num-buffers=2 ! video/x-raw,width=160,height=120 ! "
            f"video_inference model={MOBILENET} model-weights={mobilenet_weights} "
            f"cache-dir={setting} ! fakesink")
        result = run_to_end(pipeline, 120)
        assert result.ok, result.error
        [note] = [text for text in result.infos if "engine" in text]
        return note

    moved = tmp_path / "moved"
    first = launch(str(moved))
    assert "earlier start" not in first
    [entry] = entries(moved)
    assert not cache.exists()  # the environment's folder is not used
    again = launch(str(moved))
    assert "as chosen by an earlier start" in again and str(entry) in again
    launch("off")
    assert entries(moved) == [entry] and not cache.exists()
