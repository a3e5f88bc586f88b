"""Publishing each frame's JSON record to an MQTT broker (paho-mqtt 2), for meta_publish
method=mqtt; the settings are DL Streamer's gvametapublish ones.

Messages go with QoS 1 (the broker acknowledges each). The client's network thread keeps the
connection: when the broker goes away it reconnects, waiting 1 s, then twice as long each time
up to ``max_reconnect_interval``; what is published meanwhile waits in the client and goes
out after the reconnection (a subscriber that was cut off too receives what the broker gets
once it has subscribed again). Only the first connection is bounded, by
``max_connect_attempts``: without a broker the element fails at start, naming the address.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from torchstream.errors import ConfigError, Domain, TorchstreamError
from torchstream.results.publish import json_line

DEFAULT_PORT = 1883


@dataclass(frozen=True)
class MqttSettings:
    address: str  # host[:port]
    topic: str
    client_id: str = ""  # empty: a unique one is made
    max_connect_attempts: int = 1
    max_reconnect_interval: int = 30  # seconds
    config_file: str = ""  # mqtt-config: TLS and credentials (read_config)

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.strip().rpartition(":")
        if not host:
            host, port = port, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"property 'address' must be host or host:port, got "
                              f"{self.address!r}")
        return host, int(port)


_CONFIG_KEYS = {"tls", "username", "password"}
_TLS_KEYS = {"ca-file", "cert-file", "key-file"}


def read_config(path: str) -> dict:
    """The mqtt-config file: ``{"tls": {"ca-file", "cert-file", "key-file"}, "username",
    "password"}``, every key optional; the files must exist."""
    where = f"property 'mqtt-config': '{path}'"
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must hold a JSON object")
    unknown = sorted(set(config) - _CONFIG_KEYS)
    tls = config.get("tls") or {}
    if not isinstance(tls, dict):
        raise ConfigError(f"{where}: \"tls\" must be an object")
    unknown += [f"tls.{k}" for k in sorted(set(tls) - _TLS_KEYS)]
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}; known: "
                          "tls (ca-file, cert-file, key-file), username, password")
    for key, value in tls.items():
        if not isinstance(value, str) or not Path(value).is_file():
            raise ConfigError(f"{where}: tls.{key} {value!r} is not a file")
    return config


class MqttPublisher:
    """The writer meta_publish uses for method=mqtt: open / write / flush / close."""

    def __init__(self, settings: MqttSettings) -> None:
        if not settings.topic.strip():
            raise ConfigError("property 'topic' is empty: method=mqtt publishes to a topic")
        self.settings = settings
        self.client = None
        self.last = None  # the last message's info, to wait for at flush

    def open(self) -> None:
        import paho.mqtt.client as mqtt

        s = self.settings
        host, port = s.host_port()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=s.client_id or f"torchstream-{uuid.uuid4().hex[:12]}")
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, s.max_reconnect_interval))
        client.max_queued_messages_set(0)  # no limit: nothing is dropped while reconnecting
        config = read_config(s.config_file) if s.config_file else {}
        if "tls" in config:
            tls = config["tls"]
            client.tls_set(ca_certs=tls.get("ca-file"), certfile=tls.get("cert-file"),
                           keyfile=tls.get("key-file"))
        if "username" in config:
            client.username_pw_set(str(config["username"]), config.get("password"))
        error: Exception | None = None
        for attempt in range(max(1, s.max_connect_attempts)):
            if attempt:
                time.sleep(min(2 ** (attempt - 1), max(1, s.max_reconnect_interval)))
            try:
                client.connect(host, port, keepalive=30)
                break
            except OSError as exc:  # refused, unreachable, or a TLS handshake that failed
                error = exc
        else:
            raise TorchstreamError(
                f"could not connect to the MQTT broker at {host}:{port} after "
                f"{max(1, s.max_connect_attempts)} attempts: {error}", Domain.RESOURCE)
        client.loop_start()
        self.client = client

    def write(self, record: dict) -> None:
        if self.client is None:
            raise TorchstreamError("meta_publish: the MQTT connection is not open",
                                   Domain.RESOURCE)
        self.last = self.client.publish(self.settings.topic, json_line(record), qos=1)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (a while) until the broker has acknowledged what was published."""
        last = self.last
        if last is None or self.client is None or not self.client.is_connected():
            return
        deadline = time.monotonic() + timeout
        while not last.is_published() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        client = self.client
        if client is None:
            return
        self.flush()
        self.client = None
        client.disconnect()
        client.loop_stop()
