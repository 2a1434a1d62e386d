"""Stop a training run at a step boundary on Ctrl-C or SIGTERM, keeping every finished step.

An epoch of ``edgeseg train`` on two CPU cores can take an hour; before this, Ctrl-C (or a scheduler's
SIGTERM) in the middle of one lost everything since the last epoch's checkpoint. While
:class:`StopRequest` is active, the first SIGINT or SIGTERM only asks for a stop: the trainer finishes
the step it is in, writes its state (``last.pt``, resumable mid-epoch) and raises
:class:`TrainingStopped`. A second signal stops at once (``KeyboardInterrupt``), keeping what the last
checkpoint holds. Outside the main thread nothing is installed (the embedding program owns signals), and a
signal the process was started ignoring (``nohup``, a shell's background job) stays ignored.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, NoReturn

log = logging.getLogger("edgeseg.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(KeyboardInterrupt):
    """A trainer stopped on a signal after saving its state. ``str()`` is the signal's name (the CLI
    exits 130 for SIGINT, 143 for SIGTERM); ``checkpoint`` is the file holding the run (None when the
    run has no output folder) and ``where`` says how far it got (``"epoch 2, step 150 of 626"``)."""

    def __init__(self, signal_name: str, checkpoint: Any = None, where: str = ""):
        super().__init__(signal_name)
        self.checkpoint, self.where = checkpoint, where


class StopRequest:
    """A context manager: ``requested`` turns true at the first SIGINT/SIGTERM received while it is
    active, ``signal`` holds that signal's name; a second signal raises ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            raise KeyboardInterrupt(name)
        self.signal = name
        log.warning("%s: stopping after this step and saving the run (send it again to stop at once, "
                    "losing the steps since the last checkpoint)", name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is signal.SIG_IGN:  # nohup / a background job: the user asked to ignore it
                    continue
                with contextlib.suppress(ValueError, OSError):
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, h)
        self._previous.clear()


def stop_now(request: StopRequest, save: Callable[[], Any], where: str) -> NoReturn:
    """Save the run with ``save()`` (the checkpoint's path, or None) and raise :class:`TrainingStopped`."""
    path = save()
    log.warning("stopped (%s) at %s%s", request.signal, where, "" if path is None else f"; the run is in {path}")
    raise TrainingStopped(request.signal or "SIGINT", path, where)


def report_stop(prog: str, e: TrainingStopped) -> int:
    """Print where a stopped run is and how to go on (for the training commands); the exit status to return
    (130 after SIGINT, 143 after SIGTERM, as a shell reports them)."""
    import sys

    if e.checkpoint is not None:
        print(f"{prog}: stopped at {e.where}; {e.checkpoint} holds the run: continue with the same command plus "
              "--resume", file=sys.stderr)
    else:
        print(f"{prog}: stopped at {e.where} (no run folder: nothing was saved)", file=sys.stderr)
    return 143 if str(e) == "SIGTERM" else 130
