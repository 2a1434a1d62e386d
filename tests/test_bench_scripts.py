"""Behaviour of the benchmark scripts in tools/bench/ that needs no timing: they fail fast, with a
non-zero exit code and the reason, on a bundle that does not open (fast: no model is run)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_panoptic_missing_bundle_exits_nonzero(tmp_path):
    out = tmp_path / "p.json"
    r = _run("panoptic.py", str(tmp_path / "missing.edgeseg"), "--images", str(tmp_path), "--json", str(out))
    assert r.returncode == 2
    assert "missing.edgeseg" in r.stderr and "does not open" in r.stderr
    assert not out.exists()


def test_choice_checks_every_bundle_before_timing(tmp_path):
    out = tmp_path / "c.json"
    r = _run("choice.py", "shapes", str(tmp_path / "ext" / "espnet.edgeseg"), "--rounds", "1", "--json", str(out))
    assert r.returncode == 2
    assert "espnet.edgeseg" in r.stderr and "espnet_import.sh" in r.stderr
    assert not out.exists()  # nothing was timed: shapes, first in the list, did not run


def test_backends_documented_models_are_in_the_registry():
    from edgeseg.models import list_models

    mod = _load("backends.py")
    assert len(mod.DOCUMENTED) == 17
    assert set(mod.DOCUMENTED) <= set(list_models("*", task="semantic"))


def test_int8_prints_a_table(capsys):
    mod = _load("int8.py")
    row = {"bundle": "b", "weights": "trained", "accuracy": True,
           "cpu": {"fp32_ms": 10.0, "int8_ms": 5.0, "speedup": 2.0, "fp32_miou": 55.0, "int8_miou": 54.5,
                   "float_nodes": 1},
           "tensorrt": {"fp32_ms": 10.0, "int8_ms": 20.0, "speedup": 0.5, "fp32_miou": None, "int8_miou": None,
                        "float_nodes": 0}}
    mod.print_table([row], ["cpu", "tensorrt"])
    text = capsys.readouterr().out
    assert "FP32 mIoU" in text and "2.00x" in text and "0.50" in text  # the drop, 55.0 - 54.5
    assert text.count("\nb ") == 2
