"""A deadline for a test body: run it in a thread and fail (instead of hanging the suite) when it is not done."""
from __future__ import annotations

import functools
import threading

import pytest


def within(seconds: float):
    """Run the test body in a thread; fail (instead of hanging the suite) when it is not done in ``seconds``."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            box: dict = {}

            def body():
                try:
                    box["value"] = fn(*args, **kwargs)
                except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
                    box["error"] = e

            t = threading.Thread(target=body, name=f"test-{fn.__name__}", daemon=True)
            t.start()
            t.join(seconds)
            if t.is_alive():
                pytest.fail(f"{fn.__name__} did not finish within {seconds:g} s (a hang)")
            if "error" in box:
                raise box["error"]
            return box.get("value")
        return run
    return wrap
