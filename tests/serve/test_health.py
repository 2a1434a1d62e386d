"""A replica that crashes is said in the service's log (session 58): ``edgeseg serve`` starts Ray with
``log_to_driver=False``, so before, a replica killed (the OOM killer, a segfault) and restarted by Serve left its trace
only in Ray's files, and the service's log said nothing while its requests failed."""
from __future__ import annotations

import logging
import socket
import time

import pytest

from edgeseg.serve.health import HealthWatch, changes

HEALTHY = ("RUNNING", "", {"bundle": ("HEALTHY", "", {"RUNNING": 1})})
SICK = ("UNHEALTHY", "The deployments ['bundle'] are UNHEALTHY.",
        {"bundle": ("UNHEALTHY", "A replica's health check failed.", {"STARTING": 1})})
APP = "edgeseg-bundle-road"


def test_changes_are_said_once_each_with_the_reason_and_the_time_it_took():
    since: dict[str, float] = {}
    assert changes({}, {APP: HEALTHY}, since, 0.0) == []  # the first picture, healthy: nothing to say
    down = changes({APP: HEALTHY}, {APP: SICK}, since, 10.0, logs="/tmp/ray/session_x/logs")
    assert down == [(logging.WARNING, "bundle road: UNHEALTHY: A replica's health check failed. (replicas: STARTING 1); "
                                      "Ray's logs: /tmp/ray/session_x/logs")]
    assert changes({APP: SICK}, {APP: SICK}, since, 11.0) == []  # the same state: said once
    assert changes({APP: SICK}, {APP: HEALTHY}, since, 22.4) == [
        (logging.INFO, "bundle road: healthy again after 12 s (replicas: RUNNING 1)")]
    assert since == {}
    # being deployed when first seen: the launch says so itself; failed to deploy: said
    deploying = ("DEPLOYING", "", {"bundle": ("UPDATING", "", {"STARTING": 1})})
    assert changes({}, {APP: deploying}, since, 0.0) == []
    failed = ("DEPLOY_FAILED", "", {"bundle": ("DEPLOY_FAILED", "The replica failed to start: no model.", {})})
    assert changes({APP: deploying}, {APP: failed}, since, 5.0) == [
        (logging.WARNING, "bundle road: DEPLOY_FAILED: The replica failed to start: no model. (replicas: none)")]
    assert changes({APP: HEALTHY, "edgeseg": HEALTHY}, {"edgeseg": HEALTHY}, {}, 0.0) == [
        (logging.WARNING, "bundle road: no longer deployed (deleted, or Serve lost it)")]


def test_a_watch_that_cannot_read_serve_says_so_once_and_keeps_the_server(caplog):
    answers = iter([RuntimeError("controller gone"), RuntimeError("controller gone"), {APP: HEALTHY}])

    def read():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    caplog.set_level(logging.INFO, logger="edgeseg.serve")
    watch = HealthWatch(read, logs="")
    for _ in range(3):
        watch.poll()
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read Serve's status (RuntimeError: controller gone); the server may be stopping",
        "Serve's status can be read again"]


@pytest.mark.serve
def test_a_killed_replica_is_said_in_the_log_and_its_recovery_too(caplog):
    ray = pytest.importorskip("ray", reason="Ray Serve is not installed: pip install 'edgeseg[serve]'")
    from edgeseg.serve import serve

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(["shapes"], port=port, backend="onnxruntime", precision="fp32", threads=1, num_cpus=2)
    try:
        caplog.set_level(logging.INFO, logger="edgeseg.serve")
        watch = HealthWatch()
        assert watch.poll() == [] and watch.logs.endswith("/logs")
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if "edgeseg-bundle-shapes" in a["name"] and "REPLICA" in a["name"].upper()]
        assert len(replicas) == 1, ray.util.list_named_actors(all_namespaces=True)
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
        said, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and not any("healthy again" in t for _, t in said):
            said += watch.poll()
            time.sleep(0.5)
    finally:
        server.shutdown()
    texts = [t for _, t in said if t.startswith("bundle shapes: ")]
    assert texts and "healthy again after" in texts[-1], said
    down = [(lvl, t) for lvl, t in said if "UNHEALTHY" in t or "UPDATING" in t]
    assert down and down[0][0] == logging.WARNING and watch.logs in down[0][1], said
    assert [r.getMessage() for r in caplog.records if r.name == "edgeseg.serve"] == [t for _, t in said]
