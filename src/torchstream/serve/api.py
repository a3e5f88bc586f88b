"""The HTTP face of a service: the REST API under ``/api`` (JSON; its OpenAPI document at
``/openapi.json``), ``/metrics`` in Prometheus text, ``/healthz`` and ``/readyz`` for probes,
and the web page at ``/``. Every refusal is a 4xx whose ``detail`` says why."""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from torchstream.errors import ConfigError
from torchstream.serve.policy import ApiPolicy, Refusal
from torchstream.serve.service import StreamService
from torchstream.serve.taps import Subscriber
from torchstream.streams.config import stream_spec

FRAME_WAIT = 5.0  # s a frame.jpg request waits for a frame to come out
POLL = 0.04  # s between looks for a new preview frame or record
BOUNDARY = "torchstream-frame"
ENDED = ("finished", "failed", "stopped")

Scalar = StrictStr | int | float | StrictBool


class StreamBody(BaseModel):
    """A stream: the keys of a ``[[stream]]`` table (docs/streams.md)."""

    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(pattern=r"^[\w.-]+$", max_length=100)
    source: StrictStr = ""
    element: StrictStr = ""
    properties: dict[str, Scalar] = {}
    pipeline: StrictStr = ""
    jsonl: StrictStr = ""
    mqtt: dict[str, Scalar] = {}
    format: Literal["torchstream", "dlstreamer"] = "torchstream"
    restart: Literal["", "never", "on-failure", "always"] = ""
    loop: StrictBool = False
    sync: StrictBool = False


class StreamStatus(BaseModel):
    """A stream's status (the status file's fields)."""

    model_config = ConfigDict(extra="allow")
    name: str
    state: str
    frames: int
    fps: float
    runs: int
    restarts: int
    error: str
    live: bool | None
    skipped: int
    inference_skipped: int
    latency: float | None


def _json(body: Any, status: int = 200) -> Response:
    """A status answer as it is: the model above documents it; validating what the service
    made itself at every poll would cost the streams' CPU."""
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def create_app(service: StreamService, policy: ApiPolicy, token: str = "") -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(service.shutdown)

    # no /docs or /redoc: their pages load scripts from a CDN, and the service must work
    # offline; the OpenAPI document itself is at /openapi.json
    app = FastAPI(title="torchstream", summary="Video analytics streams: PyTorch models in "
                  "GStreamer pipelines", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None)

    def authorised(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else \
            request.query_params.get("token", "")  # <img> and EventSource send no header
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is needed (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Refusal)
    async def refused(_request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    guarded = [Depends(authorised)]

    def call(function, *args):
        """A service call in a worker thread (they may wait for a pipeline)."""
        return asyncio.to_thread(function, *args)

    @app.get("/api/streams", dependencies=guarded, response_model=list[StreamStatus])
    async def list_streams() -> Response:
        """Every stream's status."""
        return _json(await call(service.statuses))

    @app.get("/api/streams/{name}", dependencies=guarded, response_model=StreamStatus,
             responses={404: {"description": "no such stream"}})
    async def one_stream(name: str) -> Response:
        return _json(await call(service.status, name))

    @app.post("/api/streams", dependencies=guarded, status_code=201,
              response_model=StreamStatus,
              responses={403: {"description": "refused by the service's policy"},
                         409: {"description": "the name or the jsonl file is in use"},
                         422: {"description": "a key or value is wrong"}})
    async def add_stream(body: StreamBody) -> Response:
        """Start a stream; nothing already running is disturbed."""
        table = body.model_dump(exclude_defaults=True)
        table["name"] = body.name
        table = policy.admit(table)
        try:
            spec = stream_spec(table, where="request")
        except ConfigError as exc:
            raise Refusal(422, exc.message) from None
        return _json(await call(service.add, spec), 201)

    @app.delete("/api/streams/{name}", dependencies=guarded, response_model=StreamStatus,
                responses={404: {"description": "no such stream"}})
    async def remove_stream(name: str) -> Response:
        """End the stream through EOS (its files complete); its final status."""
        return _json(await call(service.remove, name))

    @app.post("/api/streams/{name}/restart", dependencies=guarded,
              response_model=StreamStatus, responses={404: {"description": "no such stream"}})
    async def restart_stream(name: str) -> Response:
        return _json(await call(service.restart, name))

    @app.get("/api/streams/{name}/frame.jpg", dependencies=guarded,
             response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}},
                        404: {"description": "no such stream"},
                        409: {"description": "the stream has ended, or gave no frame in "
                                              "time"}})
    async def frame(name: str) -> Response:
        """The next frame out of the stream, its results drawn."""
        preview = service.tap(name).preview
        seen = preview.sequence
        deadline = asyncio.get_running_loop().time() + FRAME_WAIT
        while asyncio.get_running_loop().time() < deadline:
            preview.watch()
            newer = preview.after(seen)
            if newer is not None:
                return Response(newer[1], media_type="image/jpeg",
                                headers={"Cache-Control": "no-store"})
            if preview.error:
                raise Refusal(409, preview.error)
            state = (await call(service.status, name))["state"]
            if state in ENDED:
                raise Refusal(409, f"{name!r} is {state}: no frame comes out of it")
            await asyncio.sleep(POLL)
        state = (await call(service.status, name))["state"]
        raise Refusal(409, f"no frame came out of {name!r} within {FRAME_WAIT:g} s (state: "
                           f"{state})")

    @app.get("/api/streams/{name}/video.mjpeg", dependencies=guarded,
             response_class=StreamingResponse,
             responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}":
                                          {}}}, 404: {"description": "no such stream"}})
    async def video(name: str) -> StreamingResponse:
        """The stream's frames with their results drawn, as MJPEG, at up to preview-fps."""
        preview = service.tap(name).preview

        async def parts():
            seen = 0
            while not service.closing.is_set():
                preview.watch()
                newer = preview.after(seen)
                if newer is None:
                    await asyncio.sleep(POLL)
                    continue
                seen, jpeg = newer
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"

        return StreamingResponse(parts(), headers={"Cache-Control": "no-store"},
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.get("/api/streams/{name}/results", dependencies=guarded,
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}},
                        404: {"description": "no such stream"}})
    async def results(name: str) -> StreamingResponse:
        """The stream's results as server-sent events: one JSON record per frame (the
        meta_publish record; ``id`` the frame's number)."""
        tap = service.tap(name)
        subscriber = Subscriber(asyncio.get_running_loop())

        async def events():
            tap.subscribers.add(subscriber)
            try:
                yield b": torchstream results\n\n"
                while not service.closing.is_set():
                    try:
                        record = await asyncio.wait_for(subscriber.queue.get(), 1.0)
                    except TimeoutError:
                        yield b": still here\n\n"
                        continue
                    number = record.get("frame", record.get("timestamp"))
                    yield f"id: {number}\ndata: {json.dumps(record)}\n\n".encode()
            finally:
                tap.subscribers.discard(subscriber)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/metrics", dependencies=guarded, response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus text exposition."""
        body = await call(service.metrics.text)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is alive."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"description": "a stream that should run is not "
                                                        "running"}})
    async def readyz() -> dict[str, Any]:
        """Every stream that should run is running."""
        waiting = await call(service.not_ready)
        if waiting or service.closing.is_set():
            raise Refusal(503, "not running: " + (", ".join(waiting) or "the service stops"))
        return {"status": "ready"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(files("torchstream.serve").joinpath("static/index.html")
                            .read_text(encoding="utf-8"))

    return app
