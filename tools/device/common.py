"""What the prepared device runs share (street.py, road.py): the budget arithmetic, the checks
run in the repo, the machine's description, and a training command run to a time limit.

The device machine has no installed edgeseg: every child process gets the repo on ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / ".device"
if str(REPO) not in sys.path:  # the device has no installed edgeseg: the scripts import it from the repo
    sys.path.insert(0, str(REPO))


def epochs_that_fit(seconds_per_step: float, steps_per_epoch: int, seconds_left: float, margin: float = 0.9) -> int:
    """Whole epochs of ``steps_per_epoch`` steps that fit in ``margin`` of ``seconds_left`` (at least 1)."""
    if seconds_per_step <= 0 or steps_per_epoch <= 0:
        raise ValueError("seconds_per_step and steps_per_epoch must be positive")
    return max(1, math.floor(margin * seconds_left / (seconds_per_step * steps_per_epoch)))


def repo_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: the repo importable, output unbuffered."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}


def check(argv: list[str], timeout: float = 150) -> dict:
    """Run ``python ARGV`` in the repo; its exit code, seconds and output tail for the summary."""
    t = time.time()
    try:
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                           env=repo_env())
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return {"rc": f"stopped after {timeout:g} s", "seconds": round(time.time() - t, 1),
                "output": (out.decode(errors="replace") if isinstance(out, bytes) else out)[-3000:]}
    return {"rc": r.returncode, "seconds": round(time.time() - t, 1), "output": (r.stdout + r.stderr)[-3000:]}


def op_checks(out: Path) -> dict:
    """The CUDA kernels against torchvision (issues 11 and 12): ``tools/bench/ops_gpu.py`` (parity and
    timing, float32 and float16, into ``out/ops_gpu.json``), then ``pytest -m gpu tests/ops``."""
    return {"ops": check([str(REPO / "tools/bench/ops_gpu.py"), "--json", str(out / "ops_gpu.json")]),
            "ops_tests": check(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/ops"])}


def machine() -> dict:
    """Host, cores, Python, torch and GPU, for the summary."""
    import torch

    return {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_until(cmd: list[str], log_path: Path, timeout: float) -> int | str:
    """Run ``cmd`` in the repo with its output in ``log_path``; its exit code, or ``"stopped at the time
    limit"`` when it was still running after ``timeout`` seconds (then it is killed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=repo_env())
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "stopped at the time limit"


def output_dir() -> Path:
    """Where a run's results go: the device tool's ``$OUT`` (what comes back), else ``out/device``."""
    out = Path(os.environ.get("OUT") or REPO / "out/device")
    out.mkdir(parents=True, exist_ok=True)
    return out


def default_workers() -> int:
    """Batch workers: the cores but two (one for the training process, one for the rest)."""
    return max(1, (os.cpu_count() or 2) - 2)


def run_parser(doc: str, arms: dict, budget_s: float, batch: int, default_arms: str | None = None) -> argparse.ArgumentParser:
    """The options every prepared run takes (its own are added after)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=default_arms or ",".join(arms),
                   help=f"which arms, comma-separated ({', '.join(arms)}; default {default_arms or 'all'})")
    p.add_argument("--budget-s", type=float, default=budget_s,
                   help=f"seconds for the op checks, the probes and the runs (default {budget_s:g})")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--workers", type=int, default=0, help="batch workers (default: the cores but 2)")
    p.add_argument("--probe-steps", type=int, default=0,
                   help="steps of each probe epoch (default: 8 per batch worker, twice what they make ahead)")
    p.add_argument("--skip-ops", action="store_true", help="leave out the CUDA op checks (ops_gpu.py, pytest -m gpu)")
    return p


def chosen_arms(text: str, arms: dict, prog: str) -> list[str] | None:
    """The arms named in ``--arms`` (comma-separated), or None after an error naming the known ones."""
    chosen = [a for a in text.split(",") if a]
    unknown = [a for a in chosen if a not in arms]
    if unknown or not chosen:
        print(f"{prog}: unknown arms {unknown}; known: {', '.join(arms)}", file=sys.stderr)
        return None
    return chosen
