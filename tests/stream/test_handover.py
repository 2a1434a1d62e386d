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


def test_a_gated_file_waits_at_its_source_not_in_put():
    """Beside a camera the file's reader waits (``wait_for_room``) while ``2 * capacity`` of its frames are between the
    gate and the loop, and ``put`` does not block below its ``4 * capacity`` backstop: waiting there held the one sink
    thread and every camera result behind it (session 50's audit: 8 camera results reached a slow loop for the file's
    40, up to 6 s old). The gate counts a frame from its admission (a review: counting only the results already
    waiting let the pipeline's queues hold 5 times as many). Closing releases the reader."""
    h = HandOver(2, lambda sid: sid == "cam")
    h.gated = True
    for k in range(4):  # admitted at once: 2 * capacity
        h.wait_for_room("file")
        h.put("file", ("file", k))
    reader = threading.Thread(target=h.wait_for_room, args=("file",))
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive()  # four of its frames are on their way to the loop: the fifth waits at the source
    h.put("cam", ("cam", 0))  # and the camera's result is in line at once
    assert [h.get(timeout=1) for _ in range(2)] == [("file", 0), ("cam", 0)]
    reader.join(2)
    assert not reader.is_alive()  # the loop took one: room for one more
    for k in range(8):  # frames that passed no gate (another reader's): put takes them up to the backstop
        h.put("other", ("other", k))
    fourth = threading.Thread(target=h.put, args=("other", ("other", 8)))
    fourth.start()
    time.sleep(0.3)
    assert fourth.is_alive()  # 4 * capacity of one file's results wait: the backstop holds the sink
    h.close()  # the loop ended: nothing waits for it any more
    fourth.join(2)
    stopped = threading.Thread(target=h.wait_for_room, args=("file",))
    stopped.start()
    stopped.join(2)
    assert not fourth.is_alive() and not stopped.is_alive()
