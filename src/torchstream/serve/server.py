"""``torchstream serve``: the service's streams started (the state file's, else the streams
file's), then the HTTP server (uvicorn) until SIGINT/SIGTERM, then every stream ended through
EOS with its files complete."""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torchstream.errors import ConfigError

TOKEN_VARIABLE = "TORCHSTREAM_TOKEN"


@dataclass
class ServeOptions:
    streams_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    state_file: str | None = None  # default: <out-dir>/serve-state.json
    out_dir: str = "out"
    media_dirs: list[str] = field(default_factory=list)  # default: the current folder
    models_dirs: list[str] = field(default_factory=list)  # default: ./models
    token: str = ""
    allow_pipelines: bool = False
    preview_fps: float = 5.0


def serve(options: ServeOptions) -> int:
    import uvicorn

    class _Server(uvicorn.Server):
        """SIGINT/SIGTERM end the service as they end ``torchstream run``: every stream
        through EOS, then exit status 0 (not the signal raised again)."""

        def handle_exit(self, sig: int, frame) -> None:
            if not self.should_exit:
                print(f"torchstream: {signal.Signals(sig).name}: stopping every stream (EOS)",
                      file=sys.stderr, flush=True)
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    from torchstream.serve.api import create_app
    from torchstream.serve.policy import ApiPolicy
    from torchstream.serve.service import StreamService, load_state
    from torchstream.streams.config import RunSettings, load

    out_dir = Path(options.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    state_file = Path(options.state_file or out_dir / "serve-state.json").resolve()
    try:
        config = load(options.streams_file) if options.streams_file else None
        kept = load_state(state_file)
    except ConfigError as exc:
        print(f"torchstream: {exc.message}", file=sys.stderr)
        return 2
    settings = config.run if config else RunSettings()
    if kept is not None:
        streams, resume = kept, True
        print(f"torchstream: {len(kept)} streams from the state file {state_file} (it wins "
              "over a streams file; remove it to start from the file)", file=sys.stderr)
    else:
        streams, resume = list(config.streams) if config else [], False
    if options.preview_fps <= 0:
        print("torchstream: --preview-fps must be above 0", file=sys.stderr)
        return 2
    token = options.token or os.environ.get(TOKEN_VARIABLE, "")
    policy = ApiPolicy(
        out_dir=out_dir,
        media_dirs=[Path(d) for d in options.media_dirs] or [Path.cwd()],
        models_dirs=[Path(d) for d in options.models_dirs] or [Path.cwd() / "models"],
        allow_pipelines=options.allow_pipelines)
    try:
        listener = socket.create_server((options.host, options.port))
    except (OSError, OverflowError) as exc:  # in use, no such address, no such port
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"torchstream: cannot listen on {options.host}:{options.port}: {reason}",
              file=sys.stderr)
        return 2
    service = StreamService(settings, state_file, options.preview_fps)
    service.start(streams, resume=resume)
    app = create_app(service, policy, token)
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"torchstream: serving {len(streams)} streams on http://{shown}:{port}/ "
          f"(API /api/streams, metrics /metrics{', bearer token required' if token else ''})",
          file=sys.stderr, flush=True)
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    server.run(sockets=[listener])
    if not service.closing.is_set():  # the server never got to its lifespan's end
        service.shutdown()
    return 0
