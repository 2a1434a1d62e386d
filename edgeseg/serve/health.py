"""What happens to a running server's applications, in the service's own log.

Ray Serve restarts a replica that crashed (killed by the kernel's OOM killer, a segfault in a runtime) and marks its
deployment ``UNHEALTHY`` meanwhile; ``edgeseg serve`` starts Ray with ``log_to_driver=False``, so before session 58
such a crash was written only to Ray's files under its session folder, and the service's log (journald, ``docker
logs``) said nothing while requests failed. :class:`HealthWatch` polls Serve's status and turns each change of an
edgeseg application's state into one log line::

    WARNING bundle road: UNHEALTHY: A replica's health check failed. ... (replicas: STARTING 1); Ray's logs: /tmp/...
    INFO    bundle road: healthy again after 12 s (replicas: RUNNING 1)

:func:`changes` (the words, from two snapshots) is plain Python; :func:`snapshot` reads Serve (Ray imported there).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Tuple

log = logging.getLogger("edgeseg.serve")

#: one application's state: (application status, its message, {deployment: (status, message, {replica state: n})})
AppState = Tuple[str, str, Dict[str, Tuple[str, str, Dict[str, int]]]]

#: how often ``edgeseg serve`` asks (a controller call of a few ms)
EVERY_S = 2.0

_HEALTHY = {"RUNNING", "HEALTHY"}


def _plain(status: Any) -> str:
    """``ApplicationStatus.RUNNING`` -> ``RUNNING`` (Serve's enums are str subclasses; their str() differs by
    version)."""
    return str(getattr(status, "value", status)).rsplit(".", 1)[-1]


def what(app: str) -> str:
    """The words for one of edgeseg's applications."""
    from .app import APP_NAME, BUNDLE_APP_PREFIX, STATS_APP

    if app.startswith(BUNDLE_APP_PREFIX):
        return f"bundle {app[len(BUNDLE_APP_PREFIX):]}"
    return {APP_NAME: "the ingress (/healthz, /readyz)", STATS_APP: "the stats board"}.get(app, f"application {app}")


def snapshot() -> dict[str, AppState]:
    """edgeseg's applications on this Serve, as :data:`AppState`."""
    from ray import serve

    from .app import APP_NAME, BUNDLE_APP_PREFIX, STATS_APP

    out: dict[str, AppState] = {}
    for name, app in serve.status().applications.items():
        if name in (APP_NAME, STATS_APP) or name.startswith(BUNDLE_APP_PREFIX):
            out[name] = (_plain(app.status), app.message or "", {
                d: (_plain(o.status), o.message or "", {_plain(k): int(v) for k, v in (o.replica_states or {}).items()})
                for d, o in app.deployments.items()})
    return out


def _replicas(state: AppState) -> str:
    counts: dict[str, int] = {}
    for _, _, replicas in state[2].values():
        for k, v in replicas.items():
            counts[k] = counts.get(k, 0) + v
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _why(state: AppState) -> str:
    """The deployments' own messages (the reason), else the application's."""
    words = [m for _, m, _ in state[2].values() if m]
    return " ".join(words) or state[1] or "no reason given"


def changes(before: dict[str, AppState], now: dict[str, AppState], since: dict[str, float], t: float,
            logs: str = "") -> list[tuple[int, str]]:
    """The log lines (level, text) for what changed from ``before`` to ``now``: an application that left the healthy
    state (WARNING, with Serve's reason and, ``logs``, where Ray's own files are), one that changed its unhealthy
    state, one healthy again (INFO, with how long it was not: ``since`` holds when each left, updated here), one that
    is gone (WARNING). An application seen for the first time is said only when it is not healthy."""
    out: list[tuple[int, str]] = []
    where = f"; Ray's logs: {logs}" if logs else ""
    for app, state in now.items():
        old = before.get(app)
        ok = state[0] in _HEALTHY and all(s in _HEALTHY for s, _, _ in state[2].values())
        was_ok = old is None or (old[0] in _HEALTHY and all(s in _HEALTHY for s, _, _ in old[2].values()))
        if ok and not was_ok:
            gone = t - since.pop(app, t)
            out.append((logging.INFO, f"{what(app)}: healthy again after {gone:.0f} s (replicas: {_replicas(state)})"))
        elif not ok and (was_ok or (old is not None and (old[0], _why(old)) != (state[0], _why(state)))):
            since.setdefault(app, t)
            if state[0] == "DEPLOYING" and old is None:  # (being deployed: the launch says so itself)
                continue
            out.append((logging.WARNING, f"{what(app)}: {state[0]}: {_why(state)} (replicas: {_replicas(state)}){where}"))
    for app in before:
        if app not in now:
            out.append((logging.WARNING, f"{what(app)}: no longer deployed (deleted, or Serve lost it){where}"))
    return out


class HealthWatch:
    """Polls :func:`snapshot` and logs :func:`changes`; ``poll()`` never raises (a Serve that cannot be asked is said
    once, and again when it answers)."""

    def __init__(self, read: Callable[[], dict[str, AppState]] = snapshot, logger: logging.Logger = log,
                 clock: Callable[[], float] = time.monotonic, logs: str | None = None):
        self.read, self.log, self.clock = read, logger, clock
        self.logs = _ray_logs() if logs is None else logs
        self.last: dict[str, AppState] | None = None
        self.since: dict[str, float] = {}
        self.unreachable = False

    def poll(self) -> list[tuple[int, str]]:
        try:
            now = self.read()
        except Exception as e:  # noqa: BLE001 - the watch must not end the server
            if not self.unreachable:
                self.log.warning("cannot read Serve's status (%s: %s); the server may be stopping", type(e).__name__, e)
            self.unreachable = True
            return []
        if self.unreachable:
            self.log.info("Serve's status can be read again")
            self.unreachable = False
        lines = changes(self.last if self.last is not None else {}, now, self.since, self.clock(), self.logs)
        self.last = now
        for level, text in lines:
            self.log.log(level, "%s", text)
        return lines


def _ray_logs() -> str:
    """The folder of this Ray session's log files (where a crashed replica's last words are), or ''."""
    try:
        from ray._private import worker

        node = getattr(worker, "_global_node", None)
        return f"{node.get_session_dir_path()}/logs" if node is not None else ""
    except Exception:  # noqa: BLE001 - a Ray without these internals: no folder named
        return ""
