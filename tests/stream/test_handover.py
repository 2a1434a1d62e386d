"""The loop's hand-over (:mod:`edgeseg.stream.handover`), by hand: a file's results all wait, a live source's newest
replaces its older one in its place, sources are taken in turn, the end marker last (a review of session 49's first
version: one slot for every source lost a file's results beside a camera and let one camera starve another)."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from edgeseg.stream.handover import HandOver


def test_live_results_replace_their_older_one_and_files_wait_for_room():
    h = HandOver(2, lambda sid: sid.startswith("cam"))
    for i in range(5):
        h.put("cam1", ("cam1", i))
    h.put("file", ("file", 0))
    h.put("file", ("file", 1))
    assert h.skipped == 4
    third = threading.Thread(target=h.put, args=("file", ("file", 2)))
    third.start()
    time.sleep(0.3)
    assert third.is_alive()  # two file results wait: the third waits for room, none is dropped
    h.put("cam2", ("cam2", 0))  # a camera never waits
    h.put_end("END")
    got = [h.get(timeout=1) for _ in range(3)]
    third.join(2)
    got += [h.get(timeout=1) for _ in range(3)]
    assert got[:3] == [("cam1", 4), ("file", 0), ("cam2", 0)]  # each source in turn, its oldest (a camera's newest)
    assert got[3:] == [("file", 1), ("file", 2), "END"] and h.skipped == 4
    with pytest.raises(queue.Empty):
        h.get(timeout=0.05)


def test_two_cameras_are_taken_in_turn_and_a_batch_does_not_push_one_out():
    h = HandOver(4, lambda sid: True)
    seen = []
    for k in range(20):  # a batch of two, then the loop takes one
        h.put("a", ("a", k))
        h.put("b", ("b", k))
        seen.append(h.get(timeout=1)[0])
    assert seen.count("a") == seen.count("b") == 10
