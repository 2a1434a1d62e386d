"""An RTSP server sink (gst-rtsp-server): watch results live at ``rtsp://HOST:PORT/MOUNT``.

The media factory is shared (every client sees the same stream) and fed through an ``appsrc``; the
server runs in its own GLib main loop thread. Frames written while no client watches are dropped
(that is what live means). It binds ``127.0.0.1`` unless ``address`` says otherwise (``0.0.0.0``
to serve the network).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ...errors import InputError, StreamError
from ...structures.frame import Frame
from .. import gst as _gst
from ..base import SINKS, Packet, Sink
from .video import ENCODERS, _FixedSize, _fraction, encodable, image_of, output_fps, rgb_bytes, usable_encoder

log = logging.getLogger("edgeseg.stream")


def cannot_serve(address: str, port: int) -> StreamError:
    """The error of an RTSP server that cannot bind ``address:port``."""
    return StreamError(f"cannot serve RTSP on {address}:{port}: the port is in use, or {address} is not an address of "
                       "this machine",
                       fix="choose another --rtsp-port, or an --rtsp-address of this machine (127.0.0.1, 0.0.0.0)")


def check_bindable(address: str, port: int) -> None:
    """Raise :func:`cannot_serve`'s error where ``address:port`` cannot be bound now (a port another program listens
    on, an address not of this machine), before a bundle loads: the sink binds only when it opens, after the model's
    load and backend choice (25.9 s on a first start, which a service's restart loop paid each time, an audit of
    session 58). Bound as the server binds it (``SO_REUSEADDR``, as GIO's listener), then closed; an address that is
    not a numeric one of a known family is left to the server."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise cannot_serve(address, port) from None
        # anything else (a host name, a family this machine lacks): the server's own bind decides


@SINKS.register("rtsp")
class RtspServerSink(Sink):
    #: a viewer's session that hears nothing from it for this long expires (gst-rtsp-server's default, 60 s); expired
    #: sessions are removed from the pool every CLEANUP_S
    SESSION_TIMEOUT_S = 60
    CLEANUP_S = 10

    name = "rtsp"

    def __init__(self, port: int = 8554, mount: str = "/edgeseg", fps: float | None = None, address: str = "127.0.0.1",
                 encoder: str = "x264enc-live"):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InputError(f"RTSP port must be an integer from 1 to 65535, got {port!r}", fix="e.g. --rtsp-port 8555")
        self.port = port
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.fps = fps
        self.address = address
        self.encoder_name = encoder
        self.encoder = ENCODERS.get(encoder)
        self._fix = _FixedSize("rtsp")
        self._loop: Any = None
        self._cleanup: Any = None  # the GLib timer that removes expired sessions from the server's pool
        self._bound: Any = None  # the RTSPServer, listening from open()
        self._server: Any = None  # the same, once the stream is mounted (the first frame gave its size)
        self._source_id: int | None = None
        self._appsrc: Any = None
        self._lock = threading.Lock()
        self._n = 0
        self.sent = 0
        self._source: Any = None

    def bind_source(self, source: Any) -> None:
        self._source = source

    @property
    def url(self) -> str:
        return f"rtsp://{self.address}:{self.port}{self.mount}"

    def open(self) -> None:
        """Bind the server before the first frame is read: a port in use or an address not of this machine is
        refused with nothing read (found at the first frame, every frame read until then was lost)."""
        GstRtspServer = _gst.gst_module("GstRtspServer")
        self.encoder_name = usable_encoder(self.encoder_name, "rtsp")  # a hardware encoder that cannot start here
        self.encoder = ENCODERS.get(self.encoder_name)
        server = GstRtspServer.RTSPServer()
        server.set_address(self.address)
        server.set_service(str(self.port))
        self._loop = _gst.GLibLoop()
        self._source_id = server.attach(self._loop.context)
        if not self._source_id:
            self._loop = None
            raise cannot_serve(self.address, self.port)
        self._bound = server
        server.connect("client-connected", self._on_client)  # (an operator's audit: clients were never logged)
        # sessions of viewers that vanished without a TEARDOWN (killed, a network drop) expire after SESSION_TIMEOUT_S
        # but stayed in the pool until something removed them: nothing did (a soak, session 58: every killed viewer's
        # session was still there at the end). The server's own examples clean the pool on a timer; so does this
        from gi.repository import GLib

        pool = server.get_session_pool()
        self._cleanup = GLib.timeout_source_new_seconds(self.CLEANUP_S)
        self._cleanup.set_callback(lambda *_: pool.cleanup() >= 0)  # (always True: the timer stays)
        self._cleanup.attach(self._loop.context)
        self._loop.start()

    def _start(self, shape: tuple[int, int]) -> None:
        GstRtspServer = _gst.gst_module("GstRtspServer")
        if self._bound is None:  # written to without open(): bind (and settle the encoder) before using it
            self.open()
        h, w = shape
        self.fps = output_fps(self.fps, self._source)
        num, den = _fraction(self.fps)
        caps = f"video/x-raw,format=RGB,width={w},height={h},framerate={num}/{den}"
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( appsrc name=edgeseg_src is-live=true format=time do-timestamp=true caps={caps} "
                           f"! {self.encoder} ! rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media)
        self._bound.get_mount_points().add_factory(self.mount, factory)
        self._server = self._bound
        log.info("serving the annotated stream at %s", self.url)

    def _on_client(self, _server: Any, client: Any) -> None:
        """A viewer connected: said, with its address, and again when it leaves (GLib's thread: log only)."""
        try:
            who = client.get_connection().get_ip()
        except Exception:  # noqa: BLE001 - a client without a connection yet: unnamed
            who = "a client"
        log.info("RTSP viewer %s connected to %s", who, self.url)
        client.connect("closed", lambda _c: log.info("RTSP viewer %s left %s", who, self.url))
        client.connect("new-session", lambda _c, session: session.set_timeout(self.SESSION_TIMEOUT_S))

    def _on_media(self, _factory: Any, media: Any) -> None:
        src = media.get_element().get_child_by_name("edgeseg_src")
        with self._lock:
            self._appsrc = src
        media.connect("unprepared", self._on_unprepared)

    def _on_unprepared(self, _media: Any) -> None:
        with self._lock:
            self._appsrc = None

    def write(self, frame: Frame, result: Any, packet: Packet | None = None) -> None:
        image = encodable(self._fix(image_of(frame, packet)), self.encoder_name)  # even sizes; NVENC's smallest
        if self._server is None:
            self._start(image.shape[:2])
        with self._lock:
            src = self._appsrc
        if src is None:
            return
        Gst = _gst.gst()
        buf = Gst.Buffer.new_wrapped(rgb_bytes(image))
        buf.duration = int(round(1e9 / self.fps))
        if src.emit("push-buffer", buf) == Gst.FlowReturn.OK:
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            src, self._appsrc = self._appsrc, None
        if src is not None:
            src.emit("end-of-stream")
        if self._cleanup is not None:
            self._cleanup.destroy()
            self._cleanup = None
        if self._loop is not None:
            if self._source_id:
                src_obj = self._loop.context.find_source_by_id(self._source_id)
                if src_obj is not None:
                    src_obj.destroy()
            self._loop.stop()
            self._loop = None
        self._server = self._bound = None
