"""edgeseg serve on a multi-node Ray cluster: ``ray.cluster_utils.Cluster`` starts a head node with no
CPUs (nothing but Serve's controller, a proxy and the no-CPU actors can go there) and a 2-CPU worker
node, two raylets on this machine, and ``serve(..., ray_address=cluster.address)`` joins it.

Checks: the bundle's replica runs on the worker; results through the HTTP URL equal local inference;
losing the worker node makes requests fail as ``ServerUnavailable`` within the client's timeout (not
a hang), and once a new worker node joins, Serve places the replica there and requests succeed again,
still equal to local inference; ``Server.shutdown()`` leaves the cluster usable. The measured times
are printed (``-s``) and quoted in docs/deployment.md. About 60-90 s on a loaded 2-core machine.

Every raylet here has the node's routable IP, not 127.0.0.1: ``ray.init`` turns 127.0.0.1 into that
IP, so a cluster on loopback cannot be joined by address (the first test). The HTTP ingress stays on
127.0.0.1; Ray's own ports bind all interfaces (docs/deployment.md, Security).
"""
from __future__ import annotations

import contextlib
import signal
import socket
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
from ray.cluster_utils import Cluster  # noqa: E402

import edgeseg  # noqa: E402
from edgeseg.data.synthetic import SceneGenerator  # noqa: E402
from edgeseg.errors import BackendUnavailable, EdgesegError, ServerUnavailable  # noqa: E402
from edgeseg.remote import RemotePredictor  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402
from equality import assert_results_equal  # noqa: E402

pytestmark = [pytest.mark.serve, pytest.mark.slow]

BUNDLE_APP = "edgeseg-bundle-shapes"
TIMEOUT_S = 3.0  # the client's per-request timeout during the node loss (one retry: ~6 s to give up)
RECOVERY_S = 90.0  # how long a new worker node may take to get a replica that answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _deadline(seconds: int, what: str):
    """Fail instead of hanging: ray.init and serve.run wait for ever on an unreachable or full cluster."""
    def fire(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _head_args(**kw) -> dict:
    return {"num_cpus": 0, "include_dashboard": False, "dashboard_host": "127.0.0.1", **kw}


def _frames(n: int):
    return [f.image for f in SceneGenerator(ImageShape(120, 160), seed=11).frames(n)]


def _replica_nodes(app: str = BUNDLE_APP) -> dict[str, list[str]]:
    """State -> node ids of ``app``'s replica actors (the GCS actor table, as Ray's own tests read it:
    ``ray.util.state`` needs the dashboard, which this cluster does not start)."""
    out: dict[str, list[str]] = {}
    for a in ray._private.state.actors().values():
        if a["ActorClassName"].startswith(f"ServeReplica:{app}:"):
            out.setdefault(a["State"], []).append(a["Address"]["NodeID"])
    return out


def test_a_head_on_loopback_is_refused_in_seconds_not_waited_for():
    """ray.init dials the node's IP for 127.0.0.1; a GCS listening on loopback only is never reached
    and ray.init retries for ever. serve() checks the address it will dial first."""
    from edgeseg.serve import serve

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    cluster = Cluster(initialize_head=True, head_node_args=_head_args(node_ip_address="127.0.0.1"))
    try:
        t0 = time.monotonic()
        with _deadline(60, "serve() against an unreachable head"), pytest.raises(BackendUnavailable) as info:
            serve(["shapes"], ray_address=cluster.address, port=_free_port())
        assert time.monotonic() - t0 < 30
        assert "cannot reach the Ray cluster" in str(info.value) and "127.0.0.1" in info.value.fix
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def deployment():
    """A 0-CPU head, one 2-CPU worker node, ``shapes`` served with one replica; torn down even when a
    test fails. Yields a dict the tests share (the node-loss test swaps in a new worker)."""
    from edgeseg.serve import serve

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    state: dict = {}
    cluster = Cluster(initialize_head=True, head_node_args=_head_args())
    try:
        state.update(cluster=cluster, worker=cluster.add_node(num_cpus=2))
        cluster.wait_for_nodes()
        t0 = time.monotonic()
        with _deadline(240, "serve() on the two-node cluster"):
            state["server"] = serve(["shapes"], ray_address=cluster.address, port=_free_port(), replicas=1,
                                    backend="onnxruntime", precision="fp32", threads=1, cpus_per_replica=1.0)
        print(f"\nserve() on the two-node cluster: {time.monotonic() - t0:.1f} s")
        yield state
    finally:
        with contextlib.suppress(Exception):
            if "server" in state:
                state["server"].shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def local():
    with edgeseg.load("shapes", backend="onnxruntime", precision="fp32", threads=1) as p:
        yield p


def test_the_replica_runs_on_the_worker_not_on_the_cpu_less_head(deployment):
    cluster, worker, server = deployment["cluster"], deployment["worker"], deployment["server"]
    assert server.started_ray is False  # joined the cluster: shutdown() must leave it running
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert set(nodes) == {cluster.head_node.node_id, worker.node_id}
    assert nodes[cluster.head_node.node_id]["Resources"].get("CPU", 0) == 0
    assert ray.get_runtime_context().get_node_id() == cluster.head_node.node_id  # the driver is on the head
    assert _replica_nodes() == {"ALIVE": [worker.node_id]}


def test_remote_results_equal_local_inference_across_nodes(deployment, local):
    remote = edgeseg.load(deployment["server"].url + "/shapes")
    assert remote.ready()
    for rgb in _frames(3):
        assert_results_equal(remote(rgb), local(rgb))


def test_losing_the_worker_is_a_clear_error_and_a_new_worker_recovers(deployment, local):
    cluster, server = deployment["cluster"], deployment["server"]
    frames = _frames(3)
    remote = RemotePredictor(server.url + "/shapes", timeout_s=TIMEOUT_S, retries=1, backoff_s=0.1)
    assert_results_equal(remote(frames[0]), local(frames[0]))  # asks /v1/bundles now, while it answers

    cluster.remove_node(deployment.pop("worker"))
    t0 = time.monotonic()
    with _deadline(60, "a request after losing the worker"), pytest.raises(ServerUnavailable) as info:
        remote(frames[1])
    failed_s = time.monotonic() - t0
    assert server.url in str(info.value)
    assert failed_s < 2 * TIMEOUT_S + 5, failed_s  # the client's timeout x attempts, not a hang
    assert not remote.ready()  # /readyz: 503 or no answer while the bundle has no replica

    deployment["worker"] = worker = cluster.add_node(num_cpus=2)
    t1 = time.monotonic()
    probe = RemotePredictor(server.url + "/shapes", timeout_s=TIMEOUT_S, retries=0)
    why = ""
    with _deadline(int(RECOVERY_S) + 30, "recovery on a new worker"):
        while time.monotonic() - t1 < RECOVERY_S:
            try:
                got = probe(frames[1])
                break
            except EdgesegError as e:  # ServerUnavailable while no replica answers
                why = f"{type(e).__name__}: {e}"
                time.sleep(0.5)
        else:
            pytest.fail(f"no answer {RECOVERY_S:.0f} s after a new worker node joined; last: {why}")
    recovered_s = time.monotonic() - t1
    print(f"\nworker lost: ServerUnavailable after {failed_s:.1f} s (client timeout {TIMEOUT_S:g} s x 2 attempts); "
          f"new worker node: first answer after {recovered_s:.1f} s\n  the error: {str(info.value).splitlines()[0]}")
    assert_results_equal(got, local(frames[1]))
    for rgb in frames:
        assert_results_equal(remote(rgb), local(rgb))
    assert remote.ready()
    assert _replica_nodes().get("ALIVE") == [worker.node_id]


def test_shutdown_leaves_the_joined_cluster_usable(deployment):  # last: stops the module's deployment
    server, worker = deployment["server"], deployment["worker"]
    server.shutdown()
    assert ray.is_initialized()  # serve() joined the cluster, so it leaves the driver's connection alone
    assert not [a for a in ray._private.state.actors().values()
                if a["State"] == "ALIVE" and a["ActorClassName"].startswith(("Serve", "ProxyActor"))]

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    with _deadline(60, "a task on the cluster after shutdown"):
        assert ray.get(where.remote(), timeout=50) == worker.node_id  # the only node with CPUs
    server.shutdown()  # a second call is harmless
    with pytest.raises(ServerUnavailable):
        RemotePredictor(server.url + "/shapes", timeout_s=2.0, retries=0)(_frames(1)[0])
