"""Shared fixtures and marker handling.

Markers: gpu, tensorrt, gst, slow, data, openvino. ``data`` tests need the real-data folder
(``$EDGESEG_DATA`` or ``../shared/data``) and skip with the reason when it is absent.
"""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# the automatic backend choice's cache (edgeseg.backends.choice): one per test session, never the user's
os.environ.setdefault("EDGESEG_CACHE_DIR", tempfile.mkdtemp(prefix="edgeseg-test-cache-"))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A test module that needs torch, on a machine without it (a device install: the runtime needs no torch), is
    skipped with the reason instead of stopping the whole run with a collection error (session 58: 36 errors on a
    Python 3.12/3.13 venv without torch)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "No module named 'torch'" in str(report.longrepr):
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, "Skipped: needs torch, which is not installed here "
                                                   "(pip install torch==2.13.0 'edgeseg[torch]')")


def _data_root():
    from edgeseg.paths import data_root

    return data_root()


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(megabytes)``: a folder on a tmpfs of that size, a disk that really fills up (root and
    mount rights needed; the test is skipped without them). Unmounted after the test."""
    import subprocess
    import uuid

    mounted = []

    def make(megabytes: int):
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={megabytes}M", f"edgeseg-{uuid.uuid4().hex[:6]}", str(mnt)]
        if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="session")
def data_root():
    root = _data_root()
    if root is None:
        pytest.skip("real data not found: set EDGESEG_DATA or place it at ../shared/data")
    return root


def pytest_collection_modifyitems(config, items):
    root = _data_root()
    skip_data = pytest.mark.skip(reason="real data not found: set EDGESEG_DATA or place it at ../shared/data")
    for item in items:
        if item.get_closest_marker("data") is not None and root is None:  # not `in keywords`: tests/data/ matches that
            item.add_marker(skip_data)
    _gstreamer_tests_last(items)


def _gstreamer_tests_last(items):
    """Run the tests that start GStreamer pipelines in this process after all others.

    This once hid a crash: after a GStreamer pipeline ran in the process, torch 2.13's legacy
    TorchScript ONNX exporter aborted (``pybind11::stop_iteration``). The cause was GStreamer's
    ``libunwind`` taking over the C++ unwinder (``edgeseg/_unwind.py``), fixed at ``import edgeseg``;
    ``tests/test_unwind.py`` runs the real combinations. The order stays only to keep the suite's
    slow GStreamer tests together; set ``EDGESEG_TEST_ORDER=plain`` to run in file order.
    """
    if os.environ.get("EDGESEG_TEST_ORDER") == "plain":
        return

    def uses_gst(item) -> bool:
        path = str(item.fspath)
        return item.get_closest_marker("gst") is not None or "/tests/stream/" in path or path.endswith("test_demo.py")

    items.sort(key=uses_gst)  # stable: keeps the order within each group
