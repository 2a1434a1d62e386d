"""What users send ``edgeseg serve`` and where they point its client: each case gets the right result or an
edgeseg error naming the thing and the fix, in bounded time, never a traceback, a hang or a silent wrong result.

The first part needs no Ray: the request decoding the replicas run (:func:`edgeseg.wire.decode_frame`), the
client against real HTTP servers on loopback that are not edgeseg's (or stall, or never stop), and the
checks :func:`edgeseg.serve.serve` makes before Ray starts. The second part runs one local Ray Serve
instance (one bundle, one replica, HTTP on 127.0.0.1) for the whole module.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

import edgeseg
from edgeseg.data.io import read_image
from edgeseg.errors import BundleError, InputError, ServerUnavailable
from edgeseg.remote import RemotePredictor
from edgeseg.wire import MAX_IMAGE_PIXELS, decode_frame, decode_result, encode_result
from edgeseg.serve import serve
from edgeseg.structures import SemanticResult

RAW = "application/octet-stream"


def _rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    """PNG bytes of an OpenCV-ordered image (BGR, BGRA, grey; 8 or 16 bits)."""
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- request bodies (the replica's decoding, no Ray) --------------------------------------------------
@pytest.mark.parametrize("content_type, shape", [(RAW, None), (RAW, "0,0,3"), ("", None), ("image/png", None),
                                                 ("image/jpeg", None)])
def test_an_empty_body_is_named(content_type, shape):
    # before: image/png -> an OpenCV assertion (HTTP 500); raw -> "need the header X-Edgeseg-Shape"
    with pytest.raises(InputError, match="the request body is empty") as info:
        decode_frame(b"", content_type, shape)
    assert "image/png" in info.value.fix and "X-Edgeseg-Shape" in info.value.fix


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "", RAW, "text/plain", "image/jpeg",
                                          "image/webp"])
def test_png_and_jpeg_are_known_by_their_bytes_whatever_the_content_type(content_type):
    # curl --data-binary @x.png sends application/x-www-form-urlencoded unless told otherwise
    # before: refused as an unsupported Content-Type, or as a raw frame without X-Edgeseg-Shape
    rgb = _rgb()
    np.testing.assert_array_equal(decode_frame(_png(rgb[..., ::-1]), content_type, None), rgb)
    jpeg = cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes()
    np.testing.assert_array_equal(decode_frame(jpeg, content_type, None),
                                  cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("kind", ["rgba", "16-bit", "grey", "grey-16-bit"])
def test_pngs_of_every_kind_decode_as_edgeseg_predict_reads_them(tmp_path, kind):
    rgb = _rgb()
    img = {"rgba": np.dstack([rgb[..., ::-1], np.arange(rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)]),
           "16-bit": rgb[..., ::-1].astype(np.uint16) * 257, "grey": rgb[..., 0],
           "grey-16-bit": rgb[..., 0].astype(np.uint16) * 256}[kind]
    path = tmp_path / "f.png"
    path.write_bytes(_png(img))
    got = decode_frame(path.read_bytes(), "image/png", None)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    np.testing.assert_array_equal(got, read_image(path))  # the same pixels a local `edgeseg predict` sees
    if kind in ("rgba", "16-bit"):
        np.testing.assert_array_equal(got, rgb)  # alpha dropped; 16-bit scaled back to the 8 bits written


def test_other_image_formats_and_junk_are_named():
    bmp = cv2.imencode(".bmp", _rgb()[..., ::-1])[1].tobytes()
    with pytest.raises(InputError, match=r"the body is a BMP image \(\d+ bytes\); edgeseg serve takes PNG or JPEG"):
        decode_frame(bmp, "image/bmp", None)
    with pytest.raises(InputError, match=r"could not decode the image/png body \(11 bytes\): it is not a PNG or JPEG"):
        decode_frame(b"hello world", "image/png", None)
    truncated = _png(_rgb()[..., ::-1])[:200]
    with pytest.raises(InputError, match="could not decode the PNG body .*truncated or corrupt"):
        decode_frame(truncated, "image/png", None)
    with pytest.raises(InputError, match="unsupported Content-Type 'text/html'"):
        decode_frame(b"<html></html>", "text/html", None)
    with pytest.raises(InputError, match="raw frames need the header X-Edgeseg-Shape"):  # raw bytes, no shape
        decode_frame(b"BM" + b"\0" * 10, RAW, None)


def test_empty_frames_are_named_on_both_sides():
    with pytest.raises(InputError, match=r"the image is empty: shape \[0, 5, 3\]"):  # before: sent, then the server's
        RemotePredictor("http://127.0.0.1:9/shapes")(np.zeros((0, 5, 3), np.uint8))  # "need the header" answer
    with pytest.raises(InputError, match="X-Edgeseg-Shape '0,5,3' has a size of 0 or less"):
        decode_frame(b"\0" * 15, RAW, "0,5,3")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_an_image_too_large_to_decode_is_refused_from_its_header(ext):
    # before: a 389 KB PNG of 20000x20000 zeros made the replica allocate 3 GB (12.6 s) before answering
    h, w = 10_000, MAX_IMAGE_PIXELS // 10_000 + 1
    body = cv2.imencode(ext, np.zeros((h, w), np.uint8))[1].tobytes()
    assert len(body) < 3_000_000
    t0 = time.monotonic()
    with pytest.raises(InputError, match=rf"is {w}x{h} \({h * w:,} pixels\); edgeseg serve decodes at most "
                                         rf"{MAX_IMAGE_PIXELS:,} pixels") as info:
        decode_frame(body, "image/png", None)
    assert time.monotonic() - t0 < 0.1 and "resize the frame" in info.value.fix  # refused without decoding


def test_label_maps_wider_than_png_allows_travel_raw():
    # before: encode_result raised AssertionError (libpng caps a side at 1,000,000): HTTP 500 for the whole batch
    labels = (np.arange(1_000_001) % 6).astype(np.uint8)[None]
    payload = json.loads(json.dumps(encode_result(SemanticResult(labels=labels, classes=tuple("abcdef")))))
    assert "labels_npy" in payload and "labels_png" not in payload
    back = decode_result(payload)
    assert back.labels.dtype == np.uint8
    np.testing.assert_array_equal(back.labels, labels)


# ---- the client against servers that are not edgeseg's (no Ray) ---------------------------------------
class _Http:
    """A real HTTP server on loopback answering every GET and POST with (status, content type, body)."""

    def __init__(self, status: int, ctype: str, body: bytes, threaded: bool = True):
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                return None

        kind = http.server.ThreadingHTTPServer if threaded else http.server.HTTPServer
        self.server = kind(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, ctype, body, words", [
    (404, "text/html", b"<!DOCTYPE HTML><html><body><h1>Error response</h1>File not found</body></html>",
     "answered HTTP 404 (text/html: '<!DOCTYPE HTML>"),                   # python -m http.server
    (200, "text/html", b"<html><body>It works!</body></html>", "answered HTTP 200 (text/html: '<html>"),  # before: KeyError
    (200, "application/json", b'{"status": "ok"}', "is not edgeseg's list of bundles (got 'null')"),      # before: KeyError
    (200, "application/json", b"[1, 2, 3]", "answered HTTP 200 (application/json: '[1, 2, 3]')"),        # before: TypeError
    (200, "application/json", b'{"bundles": [{"id": 1}]}', "is not edgeseg's list of bundles"),          # before: KeyError
    (200, "application/json", b"", "answered HTTP 200 (application/json: empty)"),                        # before: KeyError
    (302, "text/plain", b"", "answered HTTP 302"),  # before: "failed ... see the server's log (the replica's traceback)"
])
def test_a_server_that_is_not_edgeseg_is_named_as_such(status, ctype, body, words):
    server = _Http(status, ctype, body)
    try:
        for url in (server.base, server.base + "/shapes"):
            p = RemotePredictor(url, timeout_s=2.0, retries=0)
            for ask in (lambda: p.classes, lambda: p(_rgb()), lambda: p.manifest):
                with pytest.raises(InputError) as info:
                    ask()
                assert words in str(info.value) and f"{server.base}/v1/bundles" in str(info.value)
                assert "edgeseg serve" in str(info.value) and f"curl {server.base}/readyz" in info.value.fix
    finally:
        server.close()


def test_a_server_with_no_bundle_says_so():
    server = _Http(200, "application/json", b'{"bundles": []}')
    try:
        with pytest.raises(InputError, match=f"{server.base} serves no bundle"):  # before: "serves 0 bundles ()"
            RemotePredictor(server.base, retries=0).classes
    finally:
        server.close()


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:99999/shapes", "Port out of range"),  # before: a bare ValueError from urllib
    ("http://camera-box:abc/shapes", "Port could not be cast to integer"),
    ("http://[::1/shapes", "Invalid IPv6 URL"),
    ("http://127.0.0.1:0/shapes", "not a server URL"),  # before: port 0 silently became port 80
])
def test_a_url_with_a_bad_port_is_an_input_error(url, words):
    with pytest.raises(InputError, match="not a server URL") as info:
        edgeseg.load(url)
    assert words in str(info.value) and "http://HOST:PORT" in info.value.fix


def test_an_ipv6_server_url_keeps_its_brackets():
    assert RemotePredictor("http://[::1]:8000/shapes").endpoint.base == "http://[::1]:8000"


class _Stalling:
    """A loopback server that answers slowly for ever: ``headers`` sends its status line a byte every
    0.2 s; ``body`` sends the headers, then a byte of the body every 0.2 s; ``endless`` an endless body."""

    def __init__(self, mode: str):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.mode, self.stop = mode, threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/shapes"

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                conn.recv(65536)
                if self.mode == "headers":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                        if self.stop.wait(0.2):
                            return
                        conn.send(bytes([byte]))
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                if self.mode in ("body", "close"):  # close: http.client then drops conn.sock while reading
                    extra = b"Connection: close\r\n" if self.mode == "close" else b""
                    conn.send(head + extra + b"Content-Length: 100000\r\n\r\n")
                    while not self.stop.wait(0.2):
                        conn.send(b" ")
                if self.mode == "endless":
                    conn.send(head + b"\r\n")
                    while not self.stop.is_set():
                        conn.send(b" " * 65536)
            except OSError:  # the client closed the connection
                return

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode", ["headers", "body", "close"])
def test_a_server_that_trickles_its_answer_times_out_in_bounded_time(mode):
    # before: the socket timeout bounds each read only: 15 s for headers sent a byte at a time with
    # timeout_s=1, and for ever (killed after 40 s) for a body sent a byte at a time; with "Connection: close"
    # http.client drops conn.sock while reading, so a deadline that shut down conn.sock missed it (6 s)
    server = _Stalling(mode)
    try:
        p = RemotePredictor(server.url, timeout_s=1.0, retries=1, backoff_s=0.0)
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match=r"after 2 attempt\(s\): TimeoutError: no complete answer within 1 s"):
            p.classes
        assert time.monotonic() - t0 < 3.5  # two attempts of 1 s each
    finally:
        server.close()


def test_a_server_that_reads_the_request_slowly_times_out_in_bounded_time():
    """The upload is inside the same deadline as the answer: a server that takes 1 KB every 50 ms of a 50 MB
    request (a stalled or hostile peer) ends the request within timeout_s, not after the 40 minutes the
    body would take."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def slow(conn):
        with conn, contextlib.suppress(OSError):
            while not stop.wait(0.05):
                if not conn.recv(1024):  # the client gave up
                    return

    def accept():
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=slow, args=(srv.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        p = RemotePredictor(f"http://127.0.0.1:{srv.getsockname()[1]}/shapes", timeout_s=1.0, retries=0)
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match=r"after 1 attempt\(s\): TimeoutError"):
            p._request("POST", "/v1/bundles/shapes/predict", body=bytes(50 << 20), headers={"Content-Type": RAW})
        assert time.monotonic() - t0 < 2.0
    finally:
        stop.set()
        srv.close()


def test_deadlines_of_many_requests_share_one_watchdog_thread():
    """A threading.Timer per request started a thread each time (0.4 ms a request on this CPU); the
    deadlines now share one thread, and every finished request's deadline is dropped."""
    from edgeseg.remote import _WATCHDOG

    # one server thread answering in turn: a threading server's per-request threads, still ending, were counted
    # here (CI: 10 threads against 8 + 1)
    server = _Http(200, "application/json", b'{"bundles": [{"name": "shapes", "task": "semantic", "classes": []}]}',
                   threaded=False)
    try:
        p = RemotePredictor(server.base, timeout_s=5.0, retries=0)
        before = set(threading.enumerate())
        for _ in range(50):
            assert p._bundles()[0]["name"] == "shapes"
        started = [t for t in threading.enumerate() if t not in before]
        assert all(t.name == "edgeseg-client-deadlines" for t in started), started  # the watchdog, once at most
        assert not any(isinstance(t, threading.Timer) for t in threading.enumerate()) and not _WATCHDOG._armed
        assert [t.name for t in threading.enumerate()].count("edgeseg-client-deadlines") == 1
    finally:
        server.close()


def test_a_forked_child_has_a_watchdog_of_its_own():
    """Before: a child forked while a thread held the watchdog's lock waited on it for ever at its first request,
    and its watchdog shut down the parent's sockets (shared) when their deadlines passed."""
    import os

    from edgeseg.remote import _WATCHDOG

    parent_sock = socket.socket()
    token = _WATCHDOG.arm(parent_sock, time.monotonic() + 0.2, threading.Event())  # the parent's request in flight
    held, release = threading.Event(), threading.Event()

    def hold():
        with _WATCHDOG._cond:
            held.set()
            release.wait(5)

    threading.Thread(target=hold, daemon=True).start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: arm and disarm must not block; nothing of the parent's is armed here
        ok = not _WATCHDOG._armed
        done = threading.Event()
        threading.Thread(target=lambda: (_WATCHDOG.disarm(_WATCHDOG.arm(socket.socket(), time.monotonic() + 5,
                                                                           threading.Event())), done.set()),
                         daemon=True).start()
        os._exit(0 if ok and done.wait(3) else 1)
    release.set()
    _, status = os.waitpid(pid, 0)
    _WATCHDOG.disarm(token)
    parent_sock.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forked_child_opens_its_own_connection():
    """Re-review: a child forked after a request kept the parent's keep-alive connection, one TCP stream for
    two processes (each could read the other's answer)."""
    import os

    server = _Http(200, "application/json", b'{"bundles": [{"name": "shapes", "task": "semantic", "classes": []}]}')
    try:
        p = RemotePredictor(server.base, timeout_s=5.0, retries=0)
        p._bundles()
        parent = p._conn()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            child = p._conn()
            os.write(w, b"1" if child is not parent and p._bundles()[0]["name"] == "shapes" else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1" and p._conn() is parent and p._bundles()[0]["name"] == "shapes"
    finally:
        server.close()


def test_an_endless_answer_is_cut_off(monkeypatch):
    # before: read into memory until MemoryError (1 GiB cap here: made small so that the test stays light)
    monkeypatch.setattr("edgeseg.remote.MAX_ANSWER_BYTES", 1 << 20)
    server = _Stalling("endless")
    try:
        with pytest.raises(InputError, match="answered more than 1 MiB, the most this client reads: not an edgeseg result") as info:
            RemotePredictor(server.url, timeout_s=5.0, retries=2).classes
        assert "edgeseg serve" in info.value.fix
    finally:
        server.close()


# ---- edgeseg serve's own checks, before Ray starts ----------------------------------------------------
def _no_ray_started():
    ray = pytest.importorskip("ray", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
    return ray


def test_a_port_in_use_is_refused_before_ray_starts():
    # before: Ray started, then its proxy's "RuntimeError: Failed to bind" traceback (exit 1)
    ray = _no_ray_started()
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    from edgeseg.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"127.0.0.1:{port} is already in use by another program") as info:
            serve(["shapes"], port=port)
        assert f"sport = :{port}" in info.value.fix and "--port" in info.value.fix
        assert main(["serve", "shapes", "--port", str(port)]) == 2
    assert not ray.is_initialized()


@pytest.mark.parametrize("kw, words, fix", [
    ({"address": "192.0.2.123"}, "--address 192.0.2.123 is not an address of this machine", "0.0.0.0"),  # TEST-NET-1
    ({"address": "nohost.invalid"}, "--address 'nohost.invalid' is not a host name or IP address here", "127.0.0.1"),
    ({"threads": -1}, "threads must be >= 0", None),  # before: each replica failed; Ray's "Failed to update the deployments"
    ({"backend": "tensorrtt"}, "unknown backend 'tensorrtt'", "use one of auto, onnxruntime"),
    ({"precision": "fp8"}, "unknown precision 'fp8'", "use one of auto, fp32"),
    ({"device": "gpu"}, "unknown device 'gpu'", "use auto, cpu or cuda"),
])
def test_settings_no_replica_could_use_are_refused_before_ray_starts(kw, words, fix):
    ray = _no_ray_started()
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        serve(["shapes"], port=_free_port(), **kw)
    assert fix is None or fix in info.value.fix
    assert not ray.is_initialized()


# ---- a real server (one local Ray instance for the rest of the module) ---------------------------------
@pytest.fixture(scope="module")
def server():
    ray = _no_ray_started()
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    s = serve(["shapes"], port=_free_port(), replicas=1, max_batch=4, backend="onnxruntime",
                            precision="fp32", threads=1, cpus_per_replica=0.25, num_cpus=1)
    yield s
    s.shutdown()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.serve
@pytest.mark.parametrize("body, headers, status, words", [
    (b"", {"Content-Type": "image/png"}, 400, "the request body is empty"),  # before: 500, an OpenCV assertion
    (b"", {"Content-Type": RAW}, 400, "the request body is empty"),
    (b"not an image at all", {"Content-Type": "image/png"}, 400, "it is not a PNG or JPEG image"),
    (b"x" * 12, {"Content-Type": "text/plain"}, 400, "unsupported Content-Type 'text/plain'"),
    (b"\0" * 64, {"Content-Type": RAW, "X-Edgeseg-Shape": "4,4,4"}, 400, "expected an RGB image [H, W, 3]"),
])
def test_bad_bodies_over_http_are_400_with_the_reason(server, body, headers, status, words):
    got, answer = _post(server.url + "/v1/bundles/shapes/predict", body, headers)
    assert (got, words in answer["error"]) == (status, True), answer


@pytest.mark.serve
def test_pngs_of_every_kind_over_http_equal_local_predict(server, local, tmp_path):
    rgb = _rgb(120, 160, seed=4)
    kinds = {"rgba": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
             "16-bit": rgb[..., ::-1].astype(np.uint16) * 257, "grey": rgb[..., 1]}
    for kind, img in kinds.items():
        path = tmp_path / f"{kind}.png"
        path.write_bytes(_png(img))
        # curl's default Content-Type (before: refused), then the right one
        for ctype in ("application/x-www-form-urlencoded", "image/png"):
            status, answer = _post(server.url + "/v1/bundles/shapes/predict", path.read_bytes(), {"Content-Type": ctype})
            assert status == 200, answer
            np.testing.assert_array_equal(decode_result(answer).labels, local(read_image(path)).labels)


@pytest.mark.serve
def test_a_huge_image_is_served_and_a_decompression_bomb_refused(server, local):
    ramp = (np.arange(8000) % 256).astype(np.uint8)
    big = np.empty((8000, 8000, 3), np.uint8)  # 64 MP, under the cap: a colour ramp the model segments
    big[..., 0], big[..., 1] = ramp[None], ramp[:, None]
    big[..., 2] = ramp[None] + ramp[:, None]  # wraps modulo 256
    remote = RemotePredictor(server.url + "/shapes", encoding="png", timeout_s=60)
    np.testing.assert_array_equal(remote(big).labels, local(big).labels)
    bomb = _png(np.zeros((20_000, 20_000), np.uint8))  # 400 MP of zeros in under 1 MB
    t0 = time.monotonic()
    status, answer = _post(server.url + "/v1/bundles/shapes/predict", bomb, {"Content-Type": "image/png"})
    assert status == 400 and "is 20000x20000 (400,000,000 pixels)" in answer["error"], answer
    assert time.monotonic() - t0 < 5  # before: 12.6 s and 3 GB in the replica, then HTTP 200


@pytest.mark.serve
def test_a_frame_wider_than_png_allows_is_answered(server, local):
    # before: the replica's PNG encoding of the label map failed: HTTP 500 (AssertionError)
    rgb = _rgb(1, 1_000_001, seed=2)
    got = RemotePredictor(server.url + "/shapes")(rgb)
    np.testing.assert_array_equal(got.labels, local(rgb).labels)


@pytest.mark.serve
def test_clients_that_send_their_bodies_slowly_or_too_long_ones_cannot_hold_the_server(server, local):
    """Session 50's fuzzing: 32 clients sending a request's headers and 10 bytes of its body, then nothing, held every
    slot of the replica: no one was answered, /readyz included, until they hung up; a 150 MB body was read whole
    before it was refused. Now a body that stalls for 5 s (or arrives below 16 KB/s after 10 s) gets a 408, and one
    longer than any frame can be is refused from its Content-Length (413)."""
    import socket

    rgb = _rgb(120, 160, seed=5)
    png = _png(rgb[..., ::-1])
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    slow = []
    for _ in range(24):  # more than the replica's 16 slots
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(f"POST /v1/bundles/shapes/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  f"Content-Length: {len(png)}\r\n\r\n".encode() + png[:10])
        slow.append(s)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        status, answer = _post(server.url + "/v1/bundles/shapes/predict", png, {"Content-Type": "image/png"})
        assert status == 200 and time.monotonic() - t0 < 20, answer
        np.testing.assert_array_equal(decode_result(answer).labels, local(rgb).labels)
        slow[0].settimeout(20)
        assert b" 408 " in slow[0].recv(4096).split(b"\r\n")[0]  # told, not left waiting
    finally:
        for s in slow:
            s.close()
    req = urllib.request.Request(server.url + "/v1/bundles/shapes/predict", data=b"x", method="POST",
                                 headers={"Content-Type": "image/png", "Content-Length": str(10**11)})
    with pytest.raises(urllib.error.HTTPError) as e:  # refused before a byte of the body is read
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413 and "a frame needs at most" in json.loads(e.value.read())["error"]


@pytest.mark.serve
def test_a_replica_that_cannot_load_its_bundle_names_it_and_why(server):  # last: replaces the module's bundle
    # before: Ray's "RuntimeError: Deploying application edgeseg-bundle-shapes failed: Failed to update the
    # deployments ['bundle']." with a traceback and no reason; and serve() took no target (the CLI's
    # --target and --device were ignored)
    t0 = time.monotonic()
    with pytest.raises(BundleError) as info:
        serve(["shapes"], port=int(server.url.rsplit(":", 1)[1]), backend="onnxruntime", precision="int8",
                            target="nope", threads=1, cpus_per_replica=0.25)
    text = str(info.value)
    assert "the replicas of bundle 'shapes' cannot load it" in text and "has no int8/nope model" in text
    assert "edgeseg quantize" in info.value.fix
    print(f"refused after {time.monotonic() - t0:.1f} s")
