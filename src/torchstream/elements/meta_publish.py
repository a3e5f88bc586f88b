"""meta_publish: one JSON object per frame, as JSON Lines to a file or stdout, or as MQTT
messages (method=mqtt); video untouched.

A passthrough transform: buffers go downstream as they came (never mapped, never made
writable); each one's results (``torchstream.gst.meta.read_results``) become a record written by
:class:`torchstream.results.publish.JsonLinesWriter` or published by
:class:`torchstream.results.mqtt.MqttPublisher`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    bool_prop,
    gproperties,
    guarded,
    pad_templates,
    string_prop,
    uint_prop,
)
from torchstream.errors import ConfigError
from torchstream.gst import Gst, GstBase
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import read_results
from torchstream.results.mqtt import MqttPublisher, MqttSettings
from torchstream.results.publish import FORMATS, JsonLinesWriter, dlstreamer_record, frame_record

METHODS = ("file", "mqtt")

CAT = DebugCategory("torchstream-publish", "meta_publish: JSON lines written")


class MetaPublish(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "meta_publish"
    __gstmetadata__ = (
        "Results publisher",
        "Filter/Metadata",
        "Writes each frame's results (timestamp, frame size, regions, classifications) as one "
        "JSON object per line to a file or stdout; the video passes through untouched",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES = {
        "file-path": string_prop(
            "File path", "File the JSON Lines are written to (created or truncated at start); "
            "empty = stdout (method=file)", ""),
        "append": bool_prop("Append", "Add the lines to the end of an existing file-path "
                            "instead of truncating it (a restarted stream's runner uses it)",
                            False,
            doc=(
                'add the lines to the end of an existing `file-path` instead of truncating it '
                '(what `torchstream run` sets on a restarted stream)'),
        ),
        "first-frame": uint_prop("First frame", "The frame number of the first record (a "
                                 "resumed stream's runner carries the count on)", 0,
                                 2**31 - 1, 0),
        "segmentation-map": bool_prop(
            "Segmentation map", "Write a segmentation model's class map itself (run-length "
            "coded) beside each class's share of it", False,
            doc=(
                "with a segmentation model's results: write the class map itself (`class_map`, "
                "run-length coded) beside each class's share of it"),
        ),
        "method": string_prop("Method", "file (file-path) or mqtt (address, topic)", "file",
            doc=(
                '`file` (`file-path`) or `mqtt` (one message per frame to `topic` on the broker '
                'at `address`)'),
        ),
        "format": string_prop("Format", "Layout of each frame's JSON record: torchstream "
                              "(frame, pts, regions with boxes and classifications...) or "
                              "dlstreamer (DL Streamer gvametaconvert's: resolution, timestamp, "
                              "objects, tensors)", "torchstream",
            doc=(
                'the layout of each record: `torchstream` (below), or `dlstreamer`: DL Streamer '
                "gvametaconvert's (`resolution`, `timestamp` in ns, `objects` with pixel `x, y, "
                'w, h`, `region_id`, `id` (the object id, when tracked), `roi_type`, `detection '
                '{bounding_box {x_min, y_min, x_max, y_max}, confidence, label_id, label}` and '
                'each region classification under its attribute name as `{label, label_id, '
                "confidence}`; the frame's classifications as `tensors` `[{name, label, label_id,"
                ' confidence}]`); every frame gets a record, with `objects: []` when it has none'),
        ),
        "address": string_prop("Address", "MQTT broker, host or host:port (port 1883 by "
                               "default)", "localhost:1883"),
        "topic": string_prop("Topic", "MQTT topic each frame's record is published to",
                             "torchstream"),
        "mqtt-client-id": string_prop("MQTT client id", "empty: a unique one", "",
            doc=(
                'method=mqtt: the client id; empty: a unique one'),
        ),
        "mqtt-config": string_prop("MQTT config", "JSON file with the TLS files and "
                                   "credentials: {\"tls\": {\"ca-file\", \"cert-file\", "
                                   "\"key-file\"}, \"username\", \"password\"}", "",
            doc=(
                'method=mqtt: a JSON file `{"tls": {"ca-file", "cert-file", "key-file"}, '
                '"username", "password"}` (every key optional): TLS with that CA (and client '
                'certificate), and credentials; an unknown key or a missing file is an error at '
                'start'),
        ),
        "max-connect-attempts": uint_prop(
            "Max connect attempts", "Tries of the first connection to the broker before the "
            "element fails (1 s, then twice as long between tries)", 1, 1000, 1),
        "max-reconnect-interval": uint_prop(
            "Max reconnect interval", "Seconds at most between reconnection tries after the "
            "broker went away (1 s, doubling)", 1, 3600, 30),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_settings()
        self.set_in_place(True)
        self.set_passthrough(True)
        self.run: _Run | None = None

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        s = self.settings
        method = (s.method or "").strip().lower()
        if method not in METHODS:
            raise ConfigError(f"property 'method' must be one of {', '.join(METHODS)}, got "
                              f"{s.method!r}")
        layout = (s.format or "").strip().lower()
        if layout not in FORMATS:
            raise ConfigError(f"property 'format' must be one of {', '.join(FORMATS)}, got "
                              f"{s.format!r}")
        if method == "mqtt":
            writer = MqttPublisher(MqttSettings(
                s.address or "", s.topic or "", s.mqtt_client_id or "",
                s.max_connect_attempts, s.max_reconnect_interval,
                s.mqtt_config or ""))
            where = f"MQTT broker {s.address}, topic {s.topic}"
        else:
            writer = JsonLinesWriter(s.file_path, append=s.append)
            where = s.file_path or "stdout"
        writer.open()
        self.run = _Run(writer, layout == "dlstreamer", s.segmentation_map, s.first_frame)
        CAT.info(self, f"writing JSON records to {where}")
        return True

    @guarded(False)
    def do_stop(self):
        run, self.run = self.run, None
        if run is not None:
            run.writer.close()
        return True

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        s = incaps.get_structure(0)
        self.run.width = self.run.height = None
        if s.has_field("width") and s.has_field("height"):
            w, h = s.get_value("width"), s.get_value("height")
            if isinstance(w, int) and isinstance(h, int):
                self.run.width, self.run.height = w, h
        return True

    @guarded(False)
    def do_sink_event(self, event):
        if event.type == Gst.EventType.EOS and self.run is not None:
            self.run.writer.flush()  # complete on disk as soon as the stream ends
        return GstBase.BaseTransform.do_sink_event(self, event)

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        results, run = read_results(buf), self.run
        if run.dlstreamer:
            record = dlstreamer_record(results, buf.pts, run.width, run.height)
        else:
            record = frame_record(results, run.frame, buf.pts, buf.duration, run.width,
                                  run.height, run.segmentation_map)
        run.writer.write(record)
        CAT.log(self, lambda: f"frame {run.frame}: {len(results.regions)} regions")
        run.frame += 1
        return Gst.FlowReturn.OK


@dataclass
class _Run:
    """The open writer and the counters of one run (start to stop)."""

    writer: JsonLinesWriter | MqttPublisher
    dlstreamer: bool  # format=dlstreamer
    segmentation_map: bool
    frame: int  # the next record's frame number
    width: int | None = None  # from the caps
    height: int | None = None
