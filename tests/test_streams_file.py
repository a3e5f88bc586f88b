"""The streams file of ``torchstream run``: settings, descriptions, shared instances, resume
points (no pipeline runs here; tests/test_run_streams.py runs them)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import BIKES
from torchstream.errors import ConfigError
from torchstream.streams.config import ResumePoint, load, parse, resume_point, source_description

CENTERNET = {"model": "models/centernet/centernet.ts", "model-proc": "centernet_coco.json"}


def config(*streams: dict, **tables) -> dict:
    return {**tables, "stream": list(streams)}


def test_defaults_apply_and_a_streams_own_keys_win():
    cfg = parse(config({"name": "a", "source": str(BIKES), "jsonl": "a.jsonl"},
                       {"name": "b", "source": str(BIKES), "properties": {"threshold": 0.6}},
                       defaults={"element": "object_detect", "properties": CENTERNET},
                       run={"restart": "never", "max-restarts": 2}))
    assert cfg.run.restart == "never" and cfg.run.max_restarts == 2
    a, b = cfg.streams
    assert a.element == b.element == "object_detect"
    assert b.properties["threshold"] == 0.6 and "threshold" not in a.properties
    assert b.properties["model"] == CENTERNET["model"]


def test_a_pipeline_template_does_not_take_the_default_bin():
    cfg = parse(config({"name": "t", "pipeline": "videotestsrc num-buffers=1 ! fakesink"},
                       defaults={"element": "object_detect", "properties": CENTERNET}))
    assert not cfg.streams[0].element and not cfg.streams[0].properties


def test_streams_loading_one_model_the_same_way_share_an_instance():
    cfg = parse(config(
        {"name": "a", "source": str(BIKES)}, {"name": "b", "source": str(BIKES)},
        {"name": "c", "source": str(BIKES), "properties": {"device": "cuda"}},
        {"name": "d", "source": str(BIKES), "properties": {"model-instance-id": "mine"}},
        defaults={"element": "object_detect", "properties": CENTERNET}))
    ids = [s.properties.get("model-instance-id") for s in cfg.streams]
    assert ids[0] == ids[1] == "object_detect-1"
    assert ids[2] is None  # another device: its own instance (alone: none needed)
    assert ids[3] == "mine"
    assert "model-instance-id=object_detect-1" in cfg.streams[0].description()
    alone = parse(config({"name": "a", "source": str(BIKES)}, {"name": "b", "source": str(BIKES)},
                         defaults={"element": "object_detect", "properties": CENTERNET},
                         run={"share-models": False}))
    assert all("model-instance-id" not in s.properties for s in alone.streams)


def test_bin_description_per_source_and_outputs():
    cfg = parse(config({"name": "a", "source": str(BIKES), "jsonl": "out/a b.jsonl",
                        "mqtt": {"address": "localhost:1883", "topic": "cams/a"}},
                       defaults={"element": "video_inference",
                                 "properties": {"model": "torchvision.models.resnet18"}}))
    text = cfg.streams[0].description(append=True)
    assert text == (f"filesrc location={BIKES} ! decodebin ! video_inference "
                    "model=torchvision.models.resnet18 ! meta_publish "
                    'file-path="out/a b.jsonl" format=torchstream append=true ! meta_publish '
                    "method=mqtt format=torchstream address=localhost:1883 topic=cams/a ! "
                    "fakesink sync=false")
    assert source_description(f"file://{BIKES}").startswith(f"filesrc location={BIKES} !")
    assert source_description("rtsp://cam/s") == \
        "rtspsrc location=rtsp://cam/s protocols=tcp ! decodebin"
    assert source_description("v4l2:///dev/video2") == "v4l2src device=/dev/video2 ! decodebin"
    assert source_description("https://x/y.mp4") == "uridecodebin uri=https://x/y.mp4"


def test_pipeline_template():
    cfg = parse(config({"name": "cam", "source": str(BIKES), "jsonl": "cam.jsonl",
                        "pipeline": "filesrc location={source} ! decodebin ! video_inference "
                                    "model=m ! {publish} ! fakesink name={name}"}))
    assert cfg.streams[0].description() == (
        f"filesrc location={BIKES} ! decodebin ! video_inference model=m ! meta_publish "
        "file-path=cam.jsonl format=torchstream append=false ! fakesink name=cam")


@pytest.mark.parametrize("data, message", [
    (config({"name": "a", "source": str(BIKES), "element": "object_detect", "sorce": "x"}),
     "stream a: unknown key 'sorce'"),
    (config({"name": "a", "element": "object_detect"}), "stream a: source is missing"),
    (config({"name": "a", "source": "/no/such.mp4", "element": "object_detect"}),
     "source file '/no/such.mp4' does not exist"),
    (config({"name": "a", "source": str(BIKES)}), "give element"),
    (config({"name": "a", "source": str(BIKES), "element": "e"},
            {"name": "a", "source": str(BIKES), "element": "e"}), "'a' is used twice"),
    (config({"name": "a", "source": str(BIKES), "element": "e", "jsonl": "x"},
            {"name": "b", "source": str(BIKES), "element": "e", "jsonl": "x"}),
     "two streams write jsonl 'x'"),
    (config({"name": "a", "pipeline": "videotestsrc ! {sink}"}), "unknown placeholder {sink}"),
    (config({"name": "a", "pipeline": "videotestsrc ! fakesink", "jsonl": "a.jsonl"}),
     "must hold {publish}"),
    (config({"name": "a", "source": str(BIKES), "element": "e"}, run={"restart": "sometimes"}),
     "restart must be one of never, on-failure, always"),
    (config({"name": "a", "source": str(BIKES), "element": "e"}, run={"max-restarts": "2"}),
     "max-restarts must be a int"),
    (config({"name": "a b", "source": str(BIKES), "element": "e"}), "name may hold"),
    ({"stream": []}, "no streams"),
    ({"streams": [{}]}, "unknown table 'streams'"),
])
def test_mistakes_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=None) as caught:
        parse(data, "streams.toml")
    assert message in caught.value.message and caught.value.message.startswith("streams.toml: ")


def test_load_reports_toml_errors(tmp_path):
    path = tmp_path / "streams.toml"
    path.write_text("[[stream]]\nname = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    path.write_text(f'[[stream]]\nname = "a"\nsource = "{BIKES}"\nelement = "object_detect"\n')
    assert load(path).streams[0].name == "a"


def test_resume_point_is_the_last_complete_record(tmp_path):
    path = tmp_path / "a.jsonl"
    assert resume_point(str(path)) is None  # no file yet
    lines = [json.dumps({"frame": i, "pts": i * 40_000_000}) for i in range(3)]
    path.write_text("\n".join(lines) + "\n" + '{"frame": 3, "pt')  # died while writing
    assert resume_point(str(path)) == ResumePoint(80_000_000, 3)
    assert path.read_text() == "\n".join(lines) + "\n"  # the partial line is gone
    path.write_text(json.dumps({"timestamp": 5}) + "\n")
    assert resume_point(str(path), "dlstreamer") == ResumePoint(5, 1)
    path.write_text("")
    assert resume_point(str(path)) is None
