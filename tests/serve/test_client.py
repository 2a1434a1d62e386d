"""The client side of scale-out (edgeseg.remote): wire format, URLs, a lost server. Needs no Ray."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import edgeseg
from edgeseg.errors import BackendUnavailable, InputError, ServerUnavailable, StreamError
from edgeseg.remote import Endpoint, RemotePredictor
from edgeseg.wire import decode_frame, decode_result, encode_frame, encode_result
from edgeseg.structures import SemanticResult


def _rgb(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_frames_travel_losslessly(encoding):
    rgb = _rgb()
    body, headers = encode_frame(rgb, encoding)
    back = decode_frame(body, headers["Content-Type"], headers.get("X-Edgeseg-Shape"))
    np.testing.assert_array_equal(back, rgb)


def test_jpeg_frames_decode_to_rgb_of_the_same_shape():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0] = 255  # pure red survives JPEG closely; a BGR/RGB swap would not
    body, headers = encode_frame(rgb, "jpeg")
    back = decode_frame(body, headers["Content-Type"], None)
    assert back.shape == rgb.shape and back[..., 0].min() > 240 and back[..., 2].max() < 15


@pytest.mark.parametrize("content_type, shape, body, match", [
    ("application/octet-stream", None, b"\0" * 12, "X-Edgeseg-Shape"),
    ("application/octet-stream", "2,2,3", b"\0" * 11, "does not match"),
    ("image/png", None, b"not a png", "could not decode"),
    ("text/plain", None, b"x", "unsupported Content-Type"),
])
def test_bad_request_bodies_are_input_errors(content_type, shape, body, match):
    with pytest.raises(InputError, match=match):
        decode_frame(body, content_type, shape)


@pytest.mark.parametrize("dtype, k", [(np.uint8, 6), (np.int32, 300)])
def test_results_round_trip(dtype, k):
    labels = np.random.default_rng(1).integers(0, k, (9, 11)).astype(dtype)
    r = decode_result(encode_result(SemanticResult(labels=labels, classes=tuple(map(str, range(k))))))
    assert r.labels.dtype == dtype and r.classes == tuple(map(str, range(k)))
    np.testing.assert_array_equal(r.labels, labels)


@pytest.mark.parametrize("url, base, bundle", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000", None),
    ("http://10.0.0.5:9000/road", "http://10.0.0.5:9000", "road"),
    ("http://head/v1/bundles/road/", "http://head:80", "road"),
])
def test_endpoints(url, base, bundle):
    e = Endpoint.parse(url)
    assert (e.base, e.bundle) == (base, bundle)


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://h:1/a/b"])
def test_bad_urls(url):
    with pytest.raises(InputError):
        Endpoint.parse(url)


def test_load_of_a_url_is_a_remote_predictor_and_touches_nothing():
    p = edgeseg.load("http://127.0.0.1:9/shapes")
    assert isinstance(p, RemotePredictor) and p.endpoint.bundle == "shapes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_a_clear_error_after_bounded_retries():
    url = f"http://127.0.0.1:{_free_port()}/shapes"
    p = RemotePredictor(url, timeout_s=1.0, retries=2, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        p(_rgb())
    assert time.monotonic() - t0 < 5  # 3 attempts, 0.05 + 0.1 s of back-off
    err = info.value
    assert isinstance(err, BackendUnavailable) and isinstance(err, StreamError)
    assert url.rsplit("/", 1)[0] in str(err) and "3 attempt" in str(err) and "edgeseg serve" in err.fix


def test_a_server_that_stops_answering_times_out_clearly():
    with socket.socket() as srv:  # accepts connections, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        p = RemotePredictor(f"http://127.0.0.1:{srv.getsockname()[1]}/shapes", timeout_s=0.3, retries=1, backoff_s=0.0)
        with pytest.raises(ServerUnavailable, match="timed out|TimeoutError"):
            p(_rgb())


class _Scripted:
    """A real HTTP server on loopback that answers POSTs from a script of (status, content type, body);
    status None closes the connection without an answer. The last entry answers every later POST."""

    def __init__(self, script):
        import http.server
        import threading

        self.script, self.posts = list(script), 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # /v1/bundles: what the client asks first
                body = b'{"bundles": [{"name": "shapes", "classes": ["a"], "task": "semantic"}]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, ctype, body = outer.script[min(outer.posts, len(outer.script) - 1)]
                outer.posts += 1
                if status is None:  # the server goes away mid-request: the connection closes unanswered
                    self.close_connection = True
                    return
                if status == "slow":  # still working when the client gives up
                    import time

                    time.sleep(float(body))
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output quiet
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/shapes"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_proxy_500_is_retried_but_an_edgeseg_500_is_not():
    # Ray Serve's proxy answers a plain-text 500 when the replica's node dies mid-request: transient.
    # edgeseg's own 500 is JSON {"error": ...} from a replica that ran and failed: retrying repeats it.
    from edgeseg.errors import EdgesegError

    import json

    ok = json.dumps(encode_result(SemanticResult(labels=np.zeros((37, 53), np.uint8), classes=("a",)))).encode()
    proxy = _Scripted([(500, "text/plain", b"Internal Server Error"), (200, "application/json", ok)])
    try:
        r = RemotePredictor(proxy.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert proxy.posts == 2 and r.labels.shape == (37, 53)
    finally:
        proxy.close()
    failing = _Scripted([(500, "application/json", b'{"error": "decode failed: bad logits"}')])
    try:
        with pytest.raises(EdgesegError, match="HTTP 500.*decode failed") as info:
            RemotePredictor(failing.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert failing.posts == 1 and not isinstance(info.value, ServerUnavailable)
    finally:
        failing.close()
    dead = _Scripted([(500, "text/plain", b"Internal Server Error")])
    try:
        with pytest.raises(ServerUnavailable, match="3 attempt.*HTTP 500 Internal Server Error"):
            RemotePredictor(dead.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert dead.posts == 3
    finally:
        dead.close()


def test_a_server_still_deploying_is_waited_for_and_a_slow_answer_is_not_sent_twice():
    """While `edgeseg serve` starts (or redeploys), Ray Serve's proxy answers a plain-text 404: the client took it
    for a foreign server and failed each frame ('is this an edgeseg serve server?'). It is retried as 'not ready',
    and named so when it lasts. A POST that timed out is not sent again (the server may still be working on it: a
    heavy frame was run four times), and the fix says to give a longer timeout."""
    import json

    ok = json.dumps(encode_result(SemanticResult(labels=np.zeros((37, 53), np.uint8), classes=("a",)))).encode()
    starting = _Scripted([(404, "text/plain", b"Path '/v1/bundles/shapes/predict' not found. Ping http://x/-/routes"),
                          (200, "application/json", ok)])
    try:
        r = RemotePredictor(starting.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert starting.posts == 2 and r.labels.shape == (37, 53)
    finally:
        starting.close()
    never = _Scripted([(404, "text/plain", b"Path '/v1/bundles/shapes/predict' not found.")])
    try:
        with pytest.raises(ServerUnavailable, match="3 attempt.*HTTP 404") as info:
            RemotePredictor(never.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert "serves no bundle routes yet" in info.value.fix and never.posts == 3
    finally:
        never.close()
    unknown = _Scripted([(404, "application/json", b'{"error": "no bundle \'shapes\'"}')])  # edgeseg's own 404
    try:
        with pytest.raises(InputError, match="refused the request .HTTP 404"):
            RemotePredictor(unknown.url, timeout_s=2.0, retries=2, backoff_s=0.0)(_rgb())
        assert unknown.posts == 1
    finally:
        unknown.close()
    slow = _Scripted([("slow", "", b"1.0")])
    try:
        with pytest.raises(ServerUnavailable, match="POST .* after 1 attempt.*TimeoutError") as info:
            RemotePredictor(slow.url, timeout_s=0.3, retries=3, backoff_s=0.0)(_rgb())
        assert "longer timeout" in info.value.fix and slow.posts == 1
    finally:
        slow.close()


def test_bad_arguments():
    with pytest.raises(InputError):
        RemotePredictor("http://127.0.0.1:1", timeout_s=0)
    with pytest.raises(InputError, match="encoding"):
        RemotePredictor("http://127.0.0.1:1", encoding="webp")
    with pytest.raises(InputError, match="uint8"):
        RemotePredictor("http://127.0.0.1:1")(np.zeros((4, 4, 3), np.float32))


def test_run_takes_a_bundle_or_a_remote_not_both(capsys):
    from edgeseg.cli import main

    assert main(["run", "--bundle", "shapes", "--remote", "http://127.0.0.1:9", "--source", "synthetic://?frames=1"]) == 2
    assert "not both" in capsys.readouterr().err
    for url in ("127.0.0.1:9/shapes", "ftp://127.0.0.1:9/shapes"):  # were 'bundle ... not found'
        assert main(["run", "--remote", url, "--source", "synthetic://?frames=1"]) == 2
        err = capsys.readouterr().err
        assert "an edgeseg serve server is an http(s):// URL" in err and "--remote http://127.0.0.1:9/shapes" in err


def test_a_stream_against_a_lost_server_counts_errors_and_ends(tmp_path):  # like a lost camera: nothing crashes
    import json

    from edgeseg.cli import main

    stats = tmp_path / "stats.json"
    url = f"http://127.0.0.1:{_free_port()}/shapes"
    client = ["--remote", url, "--source", "synthetic://?size=32x24&frames=3", "--stats-json", str(stats)]
    # each frame: 4 refused attempts, counted, then on; every frame failed: exit 2, said (session 47: it was 0)
    assert main(["run", *client]) == 2
    s = json.loads(stats.read_text())
    assert (s["processed"], s["errors"]) == (3, 3), s


def test_a_stream_rides_out_a_server_outage_and_resumes(tmp_path):
    # frames 1-2 answered; frame 3's four attempts meet a server going away (connections closed
    # unanswered, then 503 while it restarts): counted as one error; frames 4-6 answered again over a
    # new connection, and their results are written as if nothing had happened
    import json

    from edgeseg.cli import main

    ok = json.dumps(encode_result(SemanticResult(labels=np.ones((24, 32), np.uint8), classes=("a", "b")))).encode()
    answer, gone, restarting = (200, "application/json", ok), (None, "", b""), (503, "text/plain", b"starting")
    server = _Scripted([answer, answer, gone, gone, restarting, restarting, answer])
    stats, lines = tmp_path / "stats.json", tmp_path / "r.jsonl"
    try:
        assert main(["run", "--remote", server.url, "--source", "synthetic://?size=32x24&frames=6",
                     "--stats-json", str(stats), "--json-out", str(lines)]) == 0
    finally:
        server.close()
    s = json.loads(stats.read_text())
    assert (s["processed"], s["errors"]) == (6, 1), s
    assert server.posts == 2 + 4 + 3  # the failed frame: 1 + 3 retries, each later frame: one request
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4, 5]  # every frame has its line, the lost one too
    assert ["error" in r for r in records] == [False, False, True, False, False, False]
    assert "ServerUnavailable" in records[2]["error"]
    assert all(r["segments"][0]["area"] == 24 * 32 for i, r in enumerate(records) if i != 2)


def test_server_urls_in_capitals_are_servers_and_devices_are_checked(capsys):
    from edgeseg.cli import main
    from edgeseg.predictor import is_remote

    assert is_remote("HTTP://127.0.0.1:8000/road") and is_remote("Https://h:1") and not is_remote("http_bundle")
    assert Endpoint.parse("HTTP://127.0.0.1:8000/road").base == "http://127.0.0.1:8000"
    with pytest.raises(SystemExit) as e:
        main(["predict", "shapes", "x.png", "--device", "gpu"])
    assert e.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err
