"""OpenVINO and NNCF imported by edgeseg send no usage telemetry unless the user chose it (session 50's audit: every
program that ran a bundle on OpenVINO sent an event to Google Analytics from a thread it left behind, and wrote under
~/intel, because Intel's telemetry counts a missing consent file as consent)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("openvino_telemetry")

CODE = """
import json, sys, threading
import numpy as np
import edgeseg
before = {t.name for t in threading.enumerate()}
p = edgeseg.load("edgeseg/zoo/shapes.edgeseg", backend="openvino", precision="fp32", threads=1)
p(np.zeros((120, 160, 3), np.uint8))
from openvino_telemetry import Telemetry
from openvino_telemetry.utils.opt_in_checker import OptInChecker
print(json.dumps({"consent": Telemetry().consent, "threads": sorted({t.name for t in threading.enumerate()} - before),
                  "check": OptInChecker().check(False, False).name}))
"""


def _run(home, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "EDGESEG_OPENVINO_TELEMETRY")}
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                       env={**clean, "HOME": str(home), **env}, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__)))))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_no_consent_file_means_declined_and_a_users_choice_stands(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    got = _run(tmp_path)
    assert got["consent"] is False and got["check"] == "DECLINED"
    assert not any(t.startswith("ThreadPoolExecutor") for t in got["threads"]), got
    assert not (tmp_path / "intel").exists()  # nothing written in the user's home
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text("1")  # opt_in_out --opt_in: the user's choice stands
    from edgeseg._openvino import decline_telemetry
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(OptInChecker, "check", OptInChecker.check)  # this process's checker as it was, after the test
    assert decline_telemetry()
    assert OptInChecker().check(False, False) == ConsentCheckResult.ACCEPTED
    (tmp_path / "intel" / "openvino_telemetry").unlink()
    assert OptInChecker().check(False, False) == ConsentCheckResult.DECLINED  # no file: declined (NO_FILE before)
