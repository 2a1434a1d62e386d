"""What a Python loop over ``edgeseg.stream(...)`` takes from the pipeline: :class:`HandOver`.

Results come in the order the pipeline made them. A file's wait for room (``capacity`` of them at most): the pipeline
waits for the loop and nothing is lost. A live source's (a camera, a ``--realtime`` replay) never wait: at most one
per source waits for the loop, the newest replacing its older one in its place in the line, counted in
:attr:`HandOver.skipped`. So a loop
slower than a camera gets fresh results instead of the stage queues' backlog (session 49: a 5 Hz loop over a 25 fps
camera got frames 1.8-2.5 s old), a file read beside a camera loses none of its results, and one camera's results
never push out another's (each has its slot), and the loop takes the sources in turn.

Beside a camera, a file waits at its own source (:meth:`HandOver.wait_for_room`, the gate of a
:class:`~edgeseg.stream.sources.mux.MultiSource`'s reader) instead of in :meth:`HandOver.put`: waiting there held
the pipeline's one sink thread, and with it every camera result behind the file's (session 50's audit: a camera
beside a file reached the loop 8 times for the file's 40, up to 6 s old). The gate admits a file's frame while fewer
than ``2 * capacity`` of its frames are between the gate and the loop (in the pipeline or waiting here), so that is
what a file holds in memory, however long it is; ``put`` still waits past ``4 * capacity`` of a file's results, a
backstop for frames that passed no gate.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Callable


class HandOver:
    """``put(source_id, item)`` from the pipeline's sink thread, ``get()`` from the loop; ``is_live(source_id)`` says
    whether a source's results may be skipped (settable: the sources are known once the pipeline is built, after
    its sinks, this one's among them)."""

    def __init__(self, capacity: int, is_live: Callable[[Any], bool] = lambda _sid: False):
        self.capacity = max(1, int(capacity))
        self.is_live = is_live
        self._items: collections.deque = collections.deque()  # (source id, live, item), oldest first
        self._waiting_files = 0
        self._served: dict[Any, int] = {}  # source id -> when the loop last took one of its items
        self._tick = 0
        self._cond = threading.Condition()
        self.skipped = 0
        self.gated = False  # the files' readers wait for room (wait_for_room): put waits only past the backstop
        self._waiting_of: dict[Any, int] = {}  # a file's results waiting for the loop, per source
        self._admitted: dict[Any, int] = {}  # a file's frames the gate let through that the loop has not taken
        self._closed = False

    def put(self, source_id: Any, item: Any) -> None:
        live = bool(self.is_live(source_id))
        with self._cond:
            if live:
                for k, (sid, was_live, _) in enumerate(self._items):
                    if was_live and sid == source_id:  # its older result, still waiting: the newer one takes its
                        self._items[k] = (sid, True, item)  # place in the line (moved last, a camera beside a file
                        self.skipped += 1  # was never reached: 2 of its results seen against the file's 20)
                        self._cond.notify_all()
                        return
            else:
                room = 4 * self.capacity if self.gated else self.capacity
                while not self._closed and (self._waiting_of.get(source_id, 0) if self.gated else
                                            self._waiting_files) >= room:
                    self._cond.wait(0.1)
                self._waiting_files += 1
                self._waiting_of[source_id] = self._waiting_of.get(source_id, 0) + 1
            self._items.append((source_id, live, item))
            self._cond.notify_all()

    def wait_for_room(self, source_id: Any, stopped: Callable[[], bool] = lambda: False) -> None:
        """In a file's reader, before a frame goes on (``source_id``: the frame's own, as ``put`` gets it): wait while
        ``2 * capacity`` of its frames are between here and the loop (until the hand-over closes or ``stopped()``),
        then count this one in: the file is held back at its source, not in the sink thread."""
        with self._cond:
            while self._admitted.get(source_id, 0) >= 2 * self.capacity and not self._closed and not stopped():
                self._cond.wait(0.1)
            self._admitted[source_id] = self._admitted.get(source_id, 0) + 1

    def close(self) -> None:
        """The loop has ended: nothing waits for it any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _turn(self, i: int) -> tuple[float, int]:
        """The order the loop takes waiting items in: the end marker last, then by source's turn, then by age."""
        sid = self._items[i][0]
        return (float("inf") if sid is None else self._served.get(sid, -1), i)

    def put_end(self, item: Any) -> None:
        """The end marker: after everything, never waiting for room."""
        with self._cond:
            self._items.append((None, True, item))
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest waiting item; ``queue.Empty`` when none came within ``timeout`` (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            # round robin over the sources waiting: the one served longest ago first, its oldest item (before: a
            # camera beside a file got 2 turns for the file's 20, the file's results always first in the line)
            k = min(range(len(self._items)), key=self._turn)
            sid, live, item = self._items[k]
            del self._items[k]
            if sid is not None:
                self._tick += 1
                self._served[sid] = self._tick
            if not live:
                self._waiting_files -= 1
                self._waiting_of[sid] -= 1
                if self._admitted.get(sid, 0) > 0:
                    self._admitted[sid] -= 1
            self._cond.notify_all()
            return item
