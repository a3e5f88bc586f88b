"""An RTSP server for the tests: serves a video file at rtsp://127.0.0.1:PORT/video (H.264,
in real time) until killed. Prints "ready PORT" once it listens.

    python -m tests.rtsp_server <video.mp4> [port]      # port 0: any free one
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(argv: list[str]) -> int:
    Gst.init(None)
    video = argv[1]
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service(argv[2] if len(argv) > 2 else "0")
    factory = GstRtspServer.RTSPMediaFactory.new()
    factory.set_launch(
        f'( filesrc location="{video}" ! decodebin ! videoconvert ! '
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)  # each client gets the video from its start
    server.get_mount_points().add_factory("/video", factory)
    if server.attach(None) == 0:
        print("could not listen", flush=True)
        return 1
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
