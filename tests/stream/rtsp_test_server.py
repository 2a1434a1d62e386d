"""A loopback RTSP test server (run as a subprocess by the tests): ``python rtsp_test_server.py PORT``
serves a live 160x120 ball pattern at ``rtsp://127.0.0.1:PORT/cam`` until killed."""
from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(port: int) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( videotestsrc pattern=ball is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 "
                       "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if not server.attach(None):
        sys.exit(f"cannot bind 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
