"""The ``torchstream`` command: ``env``, ``launch``, ``run``, ``serve`` and ``inspect``."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from torchstream.environment import gst_environment


def cmd_env(_args) -> int:
    for key, value in gst_environment().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_inspect(args) -> int:
    env = {**os.environ, **gst_environment()}
    if args.element:
        return subprocess.call(["gst-inspect-1.0", args.element], env=env)
    from torchstream.elements import ELEMENTS, register_all
    from torchstream.gst import Gst

    register_all()
    for name in ELEMENTS:
        factory = Gst.ElementFactory.find(name)
        print(f"{name:28s} {factory.get_metadata('description')}")
    return 0


class _Progress:
    """Counts frames: buffers of raw video on the most downstream pad that carries any (after
    an encoder and a muxer, a sink's buffers are not frames); prints frames and fps on
    stderr."""

    def __init__(self, pipeline, quiet: bool) -> None:
        from torchstream.gst import Gst

        self.start = time.monotonic()
        self.last_print = self.start
        self.quiet = quiet
        self.pads = [pad for element in _sorted(pipeline) for pad in element.srcpads]
        self.counts = [0] * len(self.pads)
        for i, pad in enumerate(self.pads):
            pad.add_probe(Gst.PadProbeType.BUFFER, self._on_buffer, i)

    @property
    def frames(self) -> int:
        return next((n for n in self.counts if n), 0)

    def _on_buffer(self, pad, info, index):
        from torchstream.gst import Gst

        caps = pad.get_current_caps()
        if caps is None or not caps.get_structure(0).get_name().startswith("video/x-raw"):
            return Gst.PadProbeReturn.REMOVE  # not frames: stop looking at this pad
        self.counts[index] += 1
        return Gst.PadProbeReturn.OK

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self.last_print < 1.0):
            return
        self.last_print = now
        elapsed = max(now - self.start, 1e-9)
        end = "\n" if final else "\r"
        print(f"frames: {self.frames}  fps: {self.frames / elapsed:.1f}  time: {elapsed:.1f}s",
              end=end, file=sys.stderr, flush=True)


def _sorted(bin_) -> list:
    """The pipeline's top-level elements, sinks first, then upstream."""
    from torchstream.gst import Gst

    it = bin_.iterate_sorted()
    out = []
    while True:
        result, element = it.next()
        if result != Gst.IteratorResult.OK:
            break
        out.append(element)
    return out


def run_pipeline(description: str, quiet: bool = False, timeout: float | None = None) -> int:
    """Run a pipeline description with the torchstream elements registered in-process."""
    from torchstream.elements import register_all
    from torchstream.gst import GLib, Gst
    from torchstream.gst.pipeline import run_to_end

    register_all()
    try:
        pipeline = Gst.parse_launch(description)
    except GLib.Error as exc:
        print(f"torchstream: could not build the pipeline: {exc.message}", file=sys.stderr)
        return 2
    progress = _Progress(pipeline, quiet)
    try:
        result = run_to_end(pipeline, timeout, tick=progress.report, on_note=None if quiet else
                            lambda kind, text: print(f"torchstream: {kind} from {text}",
                                                     file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        return 130
    progress.report(final=True)
    if result.ok:
        return 0
    print(f"torchstream: ERROR from {result.error}", file=sys.stderr)
    if result.debug and os.environ.get("TORCHSTREAM_DEBUG"):
        print(result.debug, file=sys.stderr)
    return 3 if result.timed_out else 1


def cmd_launch(args) -> int:
    return run_pipeline(" ".join(args.pipeline), quiet=args.quiet, timeout=args.timeout)


def cmd_run(args) -> int:
    from dataclasses import replace

    from torchstream.errors import ConfigError
    from torchstream.streams.config import load

    try:
        config = load(args.file)
    except ConfigError as exc:
        print(f"torchstream: {exc.message}", file=sys.stderr)
        return 2
    if args.status_file:
        config = replace(config, run=replace(config.run, status_file=args.status_file))
    from torchstream.streams.runner import exit_code

    if args.ray:
        from torchstream.streams.ray_actors import run_on_ray

        final = run_on_ray(config, args.ray)
    else:
        from torchstream.streams.runner import run_streams

        final = run_streams(config.streams, config.run)
    return exit_code(final)


def cmd_serve(args) -> int:
    from torchstream.serve.server import ServeOptions, serve

    return serve(ServeOptions(
        streams_file=args.file, host=args.host, port=args.port, state_file=args.state_file,
        out_dir=args.out_dir, media_dirs=args.media_dir or [], models_dirs=args.models_dir or [],
        token=args.token or "", allow_pipelines=args.allow_pipelines,
        preview_fps=args.preview_fps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="print shell exports for gst-launch-1.0/gst-inspect-1.0"
                   ).set_defaults(func=cmd_env)
    p = sub.add_parser("launch", help="run a pipeline description with the elements registered")
    p.add_argument("pipeline", nargs="+", help="gst-launch style description")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=cmd_launch)
    p = sub.add_parser("run", help="run the streams of a streams file (TOML), restarting "
                       "failed ones, until they end or SIGINT/SIGTERM")
    p.add_argument("file", help="streams file (docs/streams.md)")
    p.add_argument("--status-file", help="write every stream's state here (JSON)")
    p.add_argument("--ray", metavar="ADDRESS", help="place each stream in a Ray actor: local "
                   "(a cluster on this machine) or a running cluster's address")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("serve", help="run streams as a service: a REST API to add and remove "
                       "them, Prometheus metrics, a live preview and a web page (docs/serve.md)")
    p.add_argument("file", nargs="?", help="streams file to start from (docs/streams.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    p.add_argument("--state-file", help="the stream list, saved after every change and read "
                   "back at start (default: OUT_DIR/serve-state.json)")
    p.add_argument("--out-dir", default="out", help="the folder API streams' jsonl files go "
                   "in (default: out)")
    p.add_argument("--media-dir", action="append", help="a folder API streams may read video "
                   "files from (repeatable; default: the current folder)")
    p.add_argument("--models-dir", action="append", help="a folder API streams may load model "
                   "files from (repeatable; default: ./models)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /api and "
                   "/metrics (or set TORCHSTREAM_TOKEN)")
    p.add_argument("--allow-pipelines", action="store_true", help="accept gst-launch "
                   "templates (the pipeline key) over the API")
    p.add_argument("--preview-fps", type=float, default=5.0, help="most frames a second of "
                   "a stream's preview (default 5)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("inspect", help="list the elements, or show one (gst-inspect-1.0)")
    p.add_argument("element", nargs="?")
    p.set_defaults(func=cmd_inspect)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
