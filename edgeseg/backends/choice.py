"""Backend and precision chosen on the device that runs the model (``backend="auto"``, ``precision="auto"``).

1. :func:`list_candidates` (pure): every (backend, precision, INT8 target) this bundle verifiably
   supports here. FP32 on each usable runtime; bf16 on OpenVINO where the CPU has BF16 and its labels
   agree with FP32 here; fp16 on TensorRT; each INT8 model whose accuracy gate passed, on the runtimes
   whose result here that gate covers (the evidence is gathered by :mod:`edgeseg.backends.gates`).
   What is left out is listed with the reason.
2. :func:`time_side_by_side`: a short timing of every candidate on this device, interleaved round by
   round so that load changes hit all alike, each round a block of back-to-back calls per candidate
   (as a stream runs one model), its first calls, which pay for the switch, not counted.
3. :func:`decide` (pure): the fastest, except that a more precise candidate within ``margin`` (3%) of
   the fastest wins. So, whenever FP32 candidates were timed (precision ``auto``), the choice is never
   more than 3% slower than the fastest FP32 runtime in that timing, and INT8 is chosen only when it
   is faster than every float candidate. Candidates within 15% of the fastest are timed again for
   longer first (:func:`timed`).
4. The decision is cached per device (:class:`~edgeseg.backends.device.DeviceInfo`: CPU model, ISA
   flags, runtime versions) and model sha256s in ``$EDGESEG_CACHE_DIR/choices.json`` (default
   ``~/.cache/edgeseg``; ``EDGESEG_CACHE_DIR=off`` disables it), like TensorRT's timing cache, and
   logged with its reason. When other processes (or other inference of this process) took more than
   :data:`BUSY_LIMIT` of the CPUs the timing used (:class:`~edgeseg._timing.LoadProbe`), the decision is
   remembered as measured under load (``under_load``): a later start uses it while the machine is still busy
   (before, every start of a machine that is always busy timed again, a few seconds, and its choice could
   differ from run to run) and times again once a short look finds it idle. A timing again that was itself
   under load (the look found a quiet moment of a busy machine) is not tried again for
   :data:`RETIME_BACKOFF_S`: each cost the start 5-13 s (session 54's start-up audit). Passing both a backend
   and a precision pins the choice (nothing is timed).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import BackendUnavailable, EdgesegError
from .auto import AUTO_ORDER as AUTO_BACKENDS  # one automatic order and one x86 list, in auto.py
from .auto import X86
from .._timing import BUSY_LIMIT, LoadProbe, usable_cores
from .device import DeviceInfo, device_info
from .gates import (INT8_RUNTIMES, MIN_AGREEMENT, bf16_gate, int8_arithmetic_risk, int8_gate, label_agreement,  # noqa: F401
                    network_feed, other_runtime_gate, task_metric_gate, weights_fit_7bit)

if TYPE_CHECKING:
    from ..bundle import Bundle
    from .base import Runner

log = logging.getLogger("edgeseg.backends")

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: lower is more precise; a lower precision must beat every more precise candidate by ``margin``
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}
MARGIN = 0.03
#: bump when the candidate or decision rules change: cached decisions made under older rules are not reused
RULES_VERSION = 3  # 3: candidates timed in back-to-back blocks, not switching at every call
TIE_BREAK = 0.15  # candidates this close to the fastest are timed again for longer


@dataclass(frozen=True, order=True)
class Candidate:
    """One way to run a bundle: backend, precision and (INT8) the quantization target of the model."""

    backend: str
    precision: str
    target: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}" + (f":{self.target}" if self.target else "")

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "target": self.target}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Candidate":
        return cls(str(d["backend"]), str(d["precision"]), d.get("target"))


@dataclass(frozen=True)
class Facts:
    """What :func:`list_candidates` needs to know about the machine and the bundle."""

    available: Mapping[str, tuple[bool, str]]  # backend -> is_available()
    int8_models: Mapping[str, tuple[bool, str]] = field(default_factory=dict)  # target -> (gate passed, why)
    #: (target, backend) -> why the gate's INT8 accuracy does not hold for that runtime on this CPU
    int8_unverified: Mapping[tuple[str, str], str] = field(default_factory=dict)
    openvino_graph: tuple[bool, str] = (True, "")  # whether OpenVINO takes every op of the FP32 graph
    bf16: tuple[bool, str] = (False, "this CPU has no BF16")  # bf16 on OpenVINO: supported here and accurate
    machine: str = "x86_64"
    #: (target, backend) -> the task metric measured here that admitted an INT8 model a proxy refused
    int8_measured: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """The decision: the candidate, why, how it was reached and the figures behind it."""

    candidate: Candidate
    reason: str
    how: str  # pinned | only candidate | measured | cached
    timings_ms: tuple[tuple[Candidate, float], ...] = ()
    excluded: tuple[tuple[Candidate, str], ...] = ()
    device: DeviceInfo | None = None
    notes: tuple[str, ...] = ()
    under_load: float = 0.0  # the share of the timed CPUs others took, when above BUSY_LIMIT (0: timed on an idle one)
    retime_after: float = 0.0  # epoch seconds: an under-load choice is not timed again before (0: at the next idle look)

    def to_dict(self) -> dict[str, Any]:
        return {"choice": self.candidate.to_dict(), "label": self.candidate.label, "reason": self.reason,
                "how": self.how, "timings_ms": [{**c.to_dict(), "median_ms": ms} for c, ms in self.timings_ms],
                "excluded": [{**c.to_dict(), "why": why} for c, why in self.excluded],
                "device": self.device.to_dict() if self.device else None, "notes": list(self.notes),
                **({"under_load": round(self.under_load, 3)} if self.under_load else {}),
                **({"retime_after": round(self.retime_after, 1)} if self.retime_after else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], how: str = "cached") -> "Choice":
        again = float(d.get("retime_after") or 0.0)  # a hand-edited far future or NaN: within one back-off from now
        again = min(again, time.time() + RETIME_BACKOFF_S) if again == again else 0.0
        return cls(Candidate.from_dict(d["choice"]), d["reason"], how,
                   tuple((Candidate.from_dict(t), float(t["median_ms"])) for t in d.get("timings_ms", ())),
                   tuple((Candidate.from_dict(t), t["why"]) for t in d.get("excluded", ())), notes=tuple(d.get("notes", ())),
                   under_load=float(d.get("under_load") or 0.0), retime_after=again)


# ---- 1. candidates (pure) ---------------------------------------------------------------------------
def list_candidates(facts: Facts, backend: str = "auto", precision: str = "auto", target: str | None = None,
                    device: str = "auto") -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """(candidates, [(left out, why)]) for the request. ``backend``/``precision`` other than ``auto``
    restrict the set; an explicitly asked ``int8`` keeps INT8 models without a passed gate (the user
    asked for them), ``auto`` does not."""
    if backend != "auto" and backend not in facts.available:
        raise BackendUnavailable(f"unknown backend {backend!r}", fix=f"use one of auto, {', '.join(sorted(facts.available))}")
    if precision != "auto" and precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}", fix=f"use one of auto, {', '.join(PRECISIONS)}")
    backends = (backend,) if backend != "auto" else AUTO_BACKENDS
    precisions = (precision,) if precision != "auto" else PRECISIONS
    out: list[Candidate] = []
    excluded: list[tuple[Candidate, str]] = []

    def usable(c: Candidate) -> str | None:
        ok, why = facts.available.get(c.backend, (False, "not registered"))
        if not ok:
            return why
        if c.backend == "tensorrt" and device == "cpu":
            return "device 'cpu' asked"
        if c.backend == "onnxruntime" and device == "cuda":  # onnxruntime-gpu runs it on CUDA (its runner asks)
            return None if _ort_cuda() else "device 'cuda' asked: this onnxruntime has no CUDA provider " \
                                            "(pip install onnxruntime-gpu)"
        if c.backend != "tensorrt" and device not in ("auto", "cpu"):  # --device cuda ran on the CPU, unsaid
            return f"device {device!r} asked: {c.backend} runs on the CPU here"
        if c.backend == "openvino" and backend == "auto" and facts.machine.lower() not in X86:
            return f"chosen automatically only on x86 (this is {facts.machine})"
        if c.backend == "openvino" and c.precision in ("fp32", "bf16") and not facts.openvino_graph[0]:
            return f"it does not take this graph: {facts.openvino_graph[1]}"
        return None

    def add(c: Candidate, gate: str | None = None) -> None:
        why = usable(c) or gate
        (excluded.append((c, why)) if why else out.append(c))

    for b in backends:
        for p in precisions:
            if p == "fp32" and b in ("onnxruntime", "openvino", "tensorrt", "torch"):
                add(Candidate(b, "fp32"))
            elif p == "bf16" and b == "openvino":
                add(Candidate(b, "bf16"), None if facts.bf16[0] else facts.bf16[1])
            elif p == "fp16" and b == "tensorrt":
                add(Candidate(b, "fp16"))
            elif p == "int8":
                targets = (target,) if target is not None else tuple(facts.int8_models)
                for t in targets:
                    if b not in INT8_RUNTIMES.get(t or "cpu", ("onnxruntime",)):
                        continue
                    passed, why = facts.int8_models.get(t, (False, f"the bundle has no INT8 model for target {t!r}"))
                    if passed and (t, b) in facts.int8_unverified:
                        passed, why = False, facts.int8_unverified[(t, b)]
                    asked = precision == "int8" and t in facts.int8_models
                    add(Candidate(b, "int8", t), None if passed or asked else why)
    return out, excluded


# ---- 3. decision (pure) -----------------------------------------------------------------------------
def decide(timings_ms: Mapping[Candidate, float], margin: float = MARGIN) -> tuple[Candidate, str]:
    """The fastest candidate, unless a more precise one is within ``margin`` of it (then that one).
    Returns (choice, reason)."""
    if not timings_ms:
        raise BackendUnavailable("no candidate could be timed")
    fastest_ms = min(timings_ms.values())
    close = [c for c, ms in timings_ms.items() if ms <= fastest_ms * (1 + margin)]
    chosen = min(close, key=lambda c: (PRECISION_RANK.get(c.precision, 9), timings_ms[c]))
    ms = timings_ms[chosen]
    floats = {c: t for c, t in timings_ms.items() if c.precision == "fp32"}
    parts = [f"{chosen.label} {ms:.2f} ms"]
    if floats and chosen.precision != "fp32":
        best_f = min(floats, key=floats.get)
        parts.append(f"{floats[best_f] / ms:.2f}x the fastest FP32 ({best_f.label} {floats[best_f]:.2f} ms)")
    others = sorted((t, c) for c, t in timings_ms.items() if c != chosen)
    if others:
        t, c = others[0]
        parts.append(f"next {c.label} {t:.2f} ms" + (" (within the margin; more precise wins)"
                                                     if t < ms and PRECISION_RANK.get(chosen.precision, 9) < PRECISION_RANK.get(c.precision, 9) else ""))
    return chosen, "; ".join(parts)


# ---- facts about a bundle ---------------------------------------------------------------------------
def gather_facts(bundle: "Bundle", backend: str = "auto", precision: str = "auto", threads: int = 0,
                 use_cache: bool = True) -> Facts:
    """:class:`Facts` for this bundle on this machine (the OpenVINO graph and bf16 checks only when
    OpenVINO could be a candidate). The measured verdicts are remembered (:func:`remembered_verdict`);
    availability is not (it can change between processes)."""
    from .auto import availability, openvino_supports

    avail = availability()
    ov_ok = avail.get("openvino", (False, ""))[0] and backend in ("auto", "openvino")
    graph = openvino_supports(bundle, "fp32") if ov_ok and precision in ("auto", "fp32", "bf16") else (True, "")
    bf16 = (remembered_verdict(bundle, "bf16", (threads,), lambda: bf16_gate(bundle, threads), use_cache)
            if ov_ok and graph[0] and precision in ("auto", "bf16") else (False, "not asked"))
    targets = {m.target: int8_gate(bundle, m.target) for m in bundle.manifest.models if m.precision == "int8"}
    unverified = {(t, b): why for t in targets for b in INT8_RUNTIMES.get(t or "cpu", ())
                  if (why := int8_arithmetic_risk(bundle, t, device_info(), b)) is not None}
    for t, (passed, _) in targets.items():  # a runtime other than the gate's inherits it only if it agrees
        for b in INT8_RUNTIMES.get(t or "cpu", ())[1:]:
            if passed and (t, b) not in unverified and avail.get(b, (False, ""))[0] and backend in ("auto", b) \
                    and precision in ("auto", "int8") and (why := remembered_verdict(
                        bundle, "int8-other-runtime", (t, b, threads), lambda: other_runtime_gate(bundle, t, b, threads),
                        use_cache)) is not None:
                unverified[(t, b)] = why
    measured_here: dict[tuple[str, str], str] = {}
    for (t, b), why in list(unverified.items()):  # where the bundle's dataset is here, measure instead of refusing
        if targets.get(t, (False, ""))[0] and avail.get(b, (False, ""))[0] and backend in ("auto", b) \
                and precision in ("auto", "int8") and (measured := remembered_verdict(
                    bundle, "int8-task-metric", (t, b, threads), lambda: task_metric_gate(bundle, "int8", threads, t, b),
                    use_cache)):
            if measured[0]:
                del unverified[(t, b)]
                measured_here[(t, b)] = measured[1]
                log.info("INT8 %s on %s: scored on this CPU instead of taking its recorded gate (%s): %s", t, b,
                         why.split(": re-quantize")[0], measured[1])
            else:
                unverified[(t, b)] = f"{why}; measured here: {measured[1]}"
    return Facts(avail, targets, int8_unverified=unverified, openvino_graph=graph, bf16=bf16, machine=platform.machine(),
                 int8_measured=measured_here)


# ---- 2. timing --------------------------------------------------------------------------------------
#: each candidate runs back to back for a block of at least this long (and BLOCK_RUNS calls) per round
BLOCK_S = 0.15
BLOCK_RUNS = 3
#: calls that start this soon after the block's start are not counted (nor is the block's first call)
SETTLE_S = 0.075  # OpenVINO after ONNX Runtime: its calls of the first 40-50 ms ran 1.2-1.6x slower (AMD EPYC)
BLOCK_MAX_RUNS = 50  # counted calls at most per block (a sub-millisecond model)
_clock = time.perf_counter  # tests give the timing functions a fake clock


def time_side_by_side(runners: Mapping[Candidate, "Runner"], feed: Mapping[str, Any], rounds: int = 5,
                      warmup: int = 2, budget_s: float = 20.0) -> dict[Candidate, float]:
    """Median ms of ``runner.infer(feed)`` per (active) runner, timed in interleaved rounds: each round
    runs every runner for one block of back-to-back calls (:func:`time_block`), starting one later each
    round. A block's first call and those starting in its first :data:`SETTLE_S` are not counted: they
    pay for the switch from the previous runner (another runtime's worker threads still spinning, caches
    holding its weights), which a stream, running one model, never pays. Timed switching at every call
    instead, candidates measured 38-93% slower than each alone and the pick changed on small models
    (``tools/bench/choice_timing.py``). Stops after ``budget_s`` once 3 rounds are in (3 rounds cost at
    least 3 x 0.15 s per candidate). A runner that fails (in its warm-up or a block) raises
    :class:`CandidateFailed` naming it."""
    import numpy as np

    order = list(runners)
    for c in order:
        try:
            for _ in range(warmup):
                runners[c].infer(feed, check=False)
        except Exception as e:  # a runtime error at inference: that candidate cannot run here
            raise CandidateFailed(c, e) from e
    samples: dict[Candidate, list[float]] = {c: [] for c in order}
    start = _clock()
    for r in range(rounds):
        for i in range(len(order)):
            c = order[(r + i) % len(order)]
            try:
                samples[c] += time_block(runners[c], feed)
            except Exception as e:
                raise CandidateFailed(c, e) from e
        if r >= 2 and _clock() - start > budget_s:
            break
    return {c: float(np.median(s)) * 1e3 for c, s in samples.items()}


def time_block(runner: "Runner", feed: Mapping[str, Any], block_s: float = BLOCK_S, min_runs: int = BLOCK_RUNS,
               settle_s: float = SETTLE_S, max_runs: int = BLOCK_MAX_RUNS) -> list[float]:
    """Seconds of each counted call of one block of back-to-back ``runner.infer`` calls: calls go on until
    one has started after ``settle_s`` (however many that takes), then until the block has lasted
    ``block_s`` with at least ``min_runs - 1`` counted calls, or ``max_runs`` are counted. Counted: the
    calls after the first that start ``settle_s`` or later into the block."""
    kept: list[float] = []
    start = _clock()
    n = 0
    while True:
        t0 = _clock()
        runner.infer(feed, check=False)
        t1 = _clock()
        n += 1
        if n > 1 and t0 - start >= settle_s:
            kept.append(t1 - t0)
        if len(kept) >= max_runs or (len(kept) >= max(min_runs - 1, 1) and t1 - start >= block_s):
            return kept


class CandidateFailed(EdgesegError):
    """A candidate that loaded but failed to run (an inference raised, in its warm-up or while timed)."""

    def __init__(self, candidate: Candidate, error: BaseException):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        super().__init__(f"{candidate.label} failed to run here: {first}")
        self.candidate = candidate


def timed(runners: Mapping[Candidate, "Runner"], feed: Mapping[str, Any], rounds: int = 5,
          close: float = TIE_BREAK, excluded: list | None = None, warmup: int = 2,
          budget_s: float = 20.0) -> dict[Candidate, float]:
    """:func:`time_side_by_side`, then a tie-break: the candidates within ``close`` (15%) of the fastest,
    with the fastest FP32 one (the reference :func:`decide` and its reason compare them with), are timed
    again, side by side, for twice the rounds, and those figures replace theirs; the others' figures are
    scaled by the median ratio of the re-timed ones (new / first), so a VM that changed speed between the two
    timings (2-core VMs here do, by up to 1.6x) cannot make a re-timed candidate look faster or slower than
    one timed only in the first. A candidate that fails to run is dropped (and added to
    ``excluded`` with the reason)."""
    runners = dict(runners)
    start = _clock()

    def side_by_side(group: dict, n: int, warm: int) -> dict[Candidate, float]:
        while True:  # a candidate that fails is dropped and the others timed again
            try:  # one budget for both timings (each takes at least 3 rounds)
                return time_side_by_side(group, feed, rounds=n, warmup=warm, budget_s=max(budget_s - (_clock() - start), 0.0))
            except CandidateFailed as e:
                group.pop(e.candidate)
                runners.pop(e.candidate).deactivate()
                if excluded is not None:
                    excluded.append((e.candidate, str(e)))
                if not runners:
                    raise BackendUnavailable(f"no candidate could run: {e}") from None
                if not group:
                    return {}

    timings = side_by_side(dict(runners), rounds, warmup)
    best = min(timings.values())
    near = [c for c, ms in sorted(timings.items(), key=lambda kv: kv[1]) if ms <= best * (1 + close)]
    ref = min((c for c in timings if c.precision == "fp32"), key=timings.get, default=None)
    if len(near) > 1 and ref is not None and ref not in near:  # decide() and "Nx the fastest FP32" compare with it
        near.append(ref)
    if len(near) > 1:
        again = side_by_side({c: runners[c] for c in near}, 2 * rounds, 1)
        # the others keep their first figures, scaled by how much the machine's speed moved in between (the
        # median ratio of the re-timed ones): one period's figures are never compared with another's
        ratios = [again[c] / timings[c] for c in again if timings.get(c, 0) > 0]
        moved = statistics.median(ratios) if ratios else 1.0
        timings = {c: again.get(c, ms * moved) for c, ms in timings.items() if c in runners}
    return timings


def activate_candidates(bundle: "Bundle", cands: Iterable[Candidate], device: str, threads: int
                        ) -> tuple[dict[Candidate, "Runner"], list[tuple[Candidate, str]]]:
    """Active runners for the candidates; one that fails to load or compile is left out with the reason. They are
    timed side by side, so all are open at once: where memory (a container's limit included) would not hold one more
    beside those open (:data:`MEMORY_MARGIN` times the most one took, plus :data:`MEMORY_RESERVE` for the stream), the
    rest are left out, said (a 600 MiB container ran `street-instance` in 324 MiB, but was killed at every start while
    the candidates were loaded together, before any choice was cached)."""
    from .._memory import available_bytes, mib, rss_bytes
    from .base import BACKENDS

    runners, failed = {}, []
    cands, largest = list(cands), 0
    for i, c in enumerate(cands):
        room = available_bytes() if runners and largest else None
        if room is not None and room < MEMORY_MARGIN * largest + MEMORY_RESERVE:
            why = (f"{MEMORY_LEFT_OUT} the {len(runners)} open: {mib(room)} of memory left here and a model took up to "
                   f"{mib(largest)} (pin it with --backend/--precision to run it)")
            failed.extend((rest, why) for rest in cands[i:])
            log.warning("backend choice for %s: %s left here, so %d of %d candidates are timed (%s left out)",
                        bundle.name, mib(room), len(runners), len(cands), ", ".join(r.label for r in cands[i:]))
            break
        before = rss_bytes()
        try:
            r = BACKENDS.get(c.backend).load(bundle, precision=c.precision, device=device, threads=threads, target=c.target)
            r.activate()  # with a warm-up call: what it holds to run
            runners[c] = r
            after = rss_bytes()
            if before is not None and after is not None:
                largest = max(largest, after - before)
        except EdgesegError as e:
            failed.append((c, f"failed to load here: {e}"))
        except Exception as e:  # a runtime's own error while compiling: leave it out, never crash
            failed.append((c, f"failed to load here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    return runners, failed


#: how a candidate left out for lack of memory is said (and recognised: such a choice is not cached)
MEMORY_LEFT_OUT = "not loaded beside"
#: memory a candidate needs free before it is loaded beside those open: this many times the most one took (the timing
#: rounds grow the runtimes' arenas past the warm-up's) ...
MEMORY_MARGIN = 2.0
#: ... plus this, for what the stream holds beside the model (decoder, frames in the queues, the encoder)
MEMORY_RESERVE = 128 << 20


def timing_feed(bundle: "Bundle") -> dict[str, Any]:
    """The network input every candidate is timed on: a preprocessed random image at the network size."""
    import numpy as np

    from ..structures import ImageShape

    size = bundle.manifest.input.size or ImageShape(360, 480)
    image = np.random.default_rng(0).integers(0, 256, (size.height, size.width, 3), dtype=np.uint8)
    return network_feed(bundle, image)


# ---- 4. cache ---------------------------------------------------------------------------------------
def cache_path() -> Path | None:
    """``$EDGESEG_CACHE_DIR/choices.json`` (default ``~/.cache/edgeseg``); None when set to ``off``/empty."""
    from ..paths import cache_dir

    for var in ("EDGESEG_CACHE_DIR", "EDGESEG_CACHE"):  # the first one set decides, as for cache_dir()
        env = os.environ.get(var)
        if env is not None:
            if env.strip().lower() in ("", "off", "0", "none"):
                return None
            break
    return cache_dir() / "choices.json"


def _ort_cuda() -> bool:
    """Whether this onnxruntime has its CUDA execution provider (onnxruntime-gpu)."""
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001 - no onnxruntime: no provider
        return False


def cache_key(bundle: "Bundle", dev: DeviceInfo, request: Mapping[str, Any]) -> str:
    """Device, model sha256s, the manifest's input, decoder and classes (an edit of the normalisation or the decoder
    changes what the gates compared: before, their cached verdicts outlived it) and the request (backend, precision,
    target, device, threads)."""
    m = bundle.manifest
    models = sorted((x.file, m.files.get(x.file, "")) for x in m.models)
    report = m.files.get("report.json", "")
    spec = {"input": m.input.to_dict(), "decoder": m.decoder, "classes": list(m.classes)}
    blob = json.dumps({"device": dev.key, "models": models, "report": report, "request": dict(request),
                       "rules": RULES_VERSION, "manifest": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_cache(path: Path | None) -> dict[str, Any]:
    try:
        if path is None or not path.is_file():  # is_file() raises PermissionError in a folder that cannot be searched
            return {}
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError) as e:
        log.warning("ignoring the unreadable choice cache %s (%s): timing again", path, e)
        return {}


def _write_cache(path: Path | None, key: str, choice: Choice) -> None:
    _store(path, key, choice.to_dict(), "choice")


def _store(path: Path | None, key: str, entry: Mapping[str, Any], what: str) -> None:
    """Add ``entry`` (with its creation time) under ``key`` in the cache file; a cache that cannot be
    written is a warning (``what`` is then not remembered), never an error."""
    if path is None:
        return
    from .._io import write_json

    try:  # read, add, write under a lock: processes starting at once lost each other's entries (25 of 80 kept)
        from .._bundle_write import _locked

        path.parent.mkdir(parents=True, exist_ok=True)  # before the lock file (a first run's: no folder, no lock)
        lock: Any = _locked(path.parent / ".choices.lock")
    except OSError:
        lock = contextlib.nullcontext()
    with lock:
        data = _read_for_update(path)
        data[key] = {**entry, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            write_json(path, data)
        except OSError as e:  # once per process and cache: a predict of five images said it five times
            level = logging.DEBUG if str(path) in _UNWRITABLE else logging.WARNING
            _UNWRITABLE.add(str(path))
            log.log(level, "cannot write the choice cache %s (%s); the %s is not remembered (set EDGESEG_CACHE_DIR "
                    "to a writable folder, or EDGESEG_CACHE_DIR=off)", path, e, what)


def _read_for_update(path: Path) -> dict[str, Any]:
    """The cache's entries before one is added. A file that is not a JSON object (cut short, hand-edited, another
    program's) is renamed aside, not written over: on a cache shared by several machines (NFS) the rewrite kept one
    entry and dropped every other machine's (an audit); the aside copy keeps them for whoever can mend it."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
        why = f"its top level is a {type(data).__name__}, not an object"
    except FileNotFoundError:
        return {}
    except ValueError as e:
        why = str(e)
    except OSError:  # unreadable here (permissions): the write that follows says so
        return {}
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        path.replace(aside)
        log.warning("the choice cache %s could not be read (%s): kept as %s, and a new one started", path, why, aside)
    except OSError as e:
        log.warning("the choice cache %s could not be read (%s) nor kept aside (%s): it is written anew", path, why, e)
    return {}


_UNWRITABLE: set[str] = set()  # choice caches found unwritable in this process (warned about once)


def remembered_verdict(bundle: "Bundle", gate: str, args: Sequence[Any], measure: Any, use_cache: bool = True) -> Any:
    """A gate's verdict (``measure()``: a ``(passed, why)`` pair or a reason) remembered in the choice
    cache per device, model sha256s and arguments. Gates measure accuracy, which load on the machine
    does not change, so their verdicts are kept even when a timing is not (:data:`BUSY_LIMIT`): the
    bf16 and INT8 checks scored a bundle's task metric for ~10 s (``road``) on every run of a busy
    machine otherwise. ``None`` is not remembered: for the task-metric gate it means the dataset is not
    on this machine (yet), and for the others it is a cheap pass."""
    path = cache_path() if use_cache else None
    key = "gate:" + cache_key(bundle, device_info(), {"gate": gate, "args": list(args)})
    with _across_processes(path, key, f"the {gate} check of {bundle.name}"):  # one measures, the others read it
        return _remembered_verdict(path, key, gate, measure)


def _remembered_verdict(path: Path | None, key: str, gate: str, measure: Any) -> Any:
    hit = _read_cache(path).get(key)
    if isinstance(hit, dict) and hit.get("verdict") is not None:
        v = hit["verdict"]
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], bool) and isinstance(v[1], str):
            return tuple(v)
        if isinstance(v, str):
            return v
        # anything else (a hand-edited or foreign file) counted as a passed gate ("nonsense"[0] is true): measured
        log.warning("ignoring a malformed %s verdict in the choice cache %s: measuring again", gate, path)
    verdict = measure()
    if verdict is not None:
        _store(path, key, {"gate": gate, "verdict": list(verdict) if isinstance(verdict, tuple) else verdict}, "check")
    return verdict


# ---- all together -----------------------------------------------------------------------------------
def choose(bundle: "Bundle", backend: str = "auto", precision: str = "auto", target: str | None = None,
           device: str = "auto", threads: int = 0, use_cache: bool = True,
           facts: Facts | None = None) -> tuple[Choice, "Runner | None"]:
    """The (backend, precision, target) to run ``bundle`` with here, and, when it was just timed, its
    already active runner (else None: load it lazily). Raises :class:`BackendUnavailable` when nothing
    can run."""
    dev = device_info()
    if backend != "auto" and precision != "auto":
        c = Candidate(backend, precision, target if precision == "int8" else None)
        return _log(bundle, Choice(c, "pinned by the caller", "pinned", device=dev,
                                   notes=_pinned_int8_note(bundle, c, dev))), None
    request = choice_request(backend, precision, target, device, threads)
    path = cache_path() if use_cache else None
    key = cache_key(bundle, dev, request)
    # one choice at a time per key in this process: four threads loading one bundle at once each timed the candidates
    # against the others' timing (two got openvino int8, two bf16, with different labels); now the first times and
    # the others wait and take what it stored
    # and one at a time per key on this machine: four processes starting at once each timed the candidates against
    # the others' timing (12 s alone, 21-31 s each together; round one picked bf16, fp32, bf16 and int8); now the first
    # times and the others wait for it and read its choice from the cache
    with _key_lock(key), _across_processes(path, key, f"the backend choice for {bundle.name}"):
        return _choose(bundle, backend, precision, target, device, threads, use_cache, facts, dev, request, path, key)


def choice_request(backend: str, precision: str, target: str | None, device: str, threads: int) -> dict[str, Any]:
    """What was asked, as the cache keys it. ``threads`` 0 leaves ONNX Runtime to ``$OMP_NUM_THREADS`` where it is
    set (:func:`edgeseg._ort.resolve_threads`; OpenVINO ignores it): that count is part of the request then, since a
    choice timed with 2 ONNX Runtime threads was reused under ``OMP_NUM_THREADS=1`` (an audit). Unset, the request is
    what it was before, so caches written then still hold."""
    from .._ort import resolve_threads

    request: dict[str, Any] = {"backend": backend, "precision": precision, "target": target, "device": device,
                               "threads": threads}
    if not threads and resolve_threads(0):
        request["onnxruntime_threads"] = resolve_threads(0)
    return request


#: the longest a process waits for another one's choice or check of the same model (then it measures itself, said)
CHOICE_WAIT_S = 300.0


def _across_processes(path: Path | None, key: str, what: str, wait_s: float | None = None) -> Any:
    """An exclusive lock on ``.choice-<hash of key>.lock`` in the cache folder for the block (``_bundle_write._locked``), so
    that processes of this machine choosing (or checking) the same thing go one after the other; the lock files stay
    (a cache's files, a few bytes each). No cache (off, unwritable) or no locks on its file system: the block runs
    unlocked. A holder that takes over ``wait_s`` (:data:`CHOICE_WAIT_S`) is not waited for further."""
    from .._bundle_write import _locked

    if path is None:
        return contextlib.nullcontext()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _locked(path.parent / f".choice-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock",
                       wait_s=CHOICE_WAIT_S if wait_s is None else wait_s,
                       waiting=f"{what}: another process (or thread) is measuring it now; waiting for its result")
    except OSError as e:
        log.debug("no lock for %s (%s): unlocked", what, e)
        return contextlib.nullcontext()


_KEY_LOCKS: dict[str, threading.Lock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _KEY_LOCKS_GUARD:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


def _nothing_runs_fix(facts: Facts, backend: str, precision: str, target: str | None, device: str) -> str:
    """What to do when no candidate runs what was asked: the option that rules out what runs here, named."""
    if device not in ("auto", "cpu"):
        return "on the GPU edgeseg runs TensorRT: install it (NVIDIA's tensorrt wheel; JetPack ships it), or leave the " \
               "device to auto / cpu"
    if target:  # an option audit: --target tensorrt on a CPU was told "no runtime here runs int8"; the target rules it out
        here = sorted({c.target for c in list_candidates(facts, backend, precision, None, device)[0] if c.target})
        if here:
            return (f"the {target} INT8 model runs on {target}'s runtime, not here; --target {' / '.join(here)} "
                    f"run{'s' if len(here) == 1 else ''} here, or leave --target out (auto picks among what runs here)")
    if backend != "auto":
        return f"install what the line above says {backend} needs, or use backend auto (--backend auto)"
    if precision != "auto":
        return (f"no runtime here runs {precision}" + (" (TensorRT's precision: an NVIDIA GPU)" if precision == "fp16" else "")
                + ": leave the precision to auto (--precision auto), which picks among what runs here")
    return "pip install onnxruntime, or ask for another precision"


def _choose(bundle: "Bundle", backend: str, precision: str, target: str | None, device: str, threads: int,
            use_cache: bool, facts: Facts | None, dev: DeviceInfo, request: Mapping[str, Any], path: Path | None,
            key: str) -> tuple[Choice, "Runner | None"]:
    cached = _cached_choice(_read_cache(path).get(key), path, dev, bundle, request)
    retiming = cached is not None and cached.under_load > 0 and time.time() >= cached.retime_after
    if retiming and idle_now(threads):
        log.info("backend choice for %s: timing again (the cached one was measured while the machine was busy; it is "
                 "idle now)", bundle.name)
    elif cached is not None:
        log.info("backend choice for %s: %s (cached for this device: %s%s)", bundle.name, cached.candidate.label,
                 cached.reason, "" if not cached.under_load else "; measured while the machine was busy, kept until a "
                 "start finds it idle" + ("" if retiming else time.strftime(
                     " after %H:%M (timed again under load before)", time.localtime(cached.retime_after))))
        for note in cached.notes:
            if note.startswith(UNVERIFIED):
                log.warning("%s", note)
        return cached, None
    if cached is None and facts is None:  # the first start on a device is silent for 20-40 s otherwise (an audit)
        log.info("backend choice for %s: none cached for this device yet: checking what runs here (and how accurately "
                 "its reduced-precision models do) and timing the candidates side by side, once (remembered in %s)",
                 bundle.name,
                 path if path is not None else "this process only: the choice cache is off")
    facts = facts or gather_facts(bundle, backend, precision, threads, use_cache)
    cands, excluded = list_candidates(facts, backend, precision, target, device)
    for c, why in excluded:
        if "_Unwind_Resume" in why:  # edgeseg._unwind: the combination cannot work in this process
            log.warning("not using %s: %s", c.label, why)
    notes = tuple(_device_notes(bundle, dev))
    if not cands:
        raise BackendUnavailable(f"nothing can run {bundle.name} here (backend {backend}, precision {precision}"
                                 + (f", target {target}" if target else "")
                                 + (f", device {device}" if device not in ("auto", "cpu") else "") + "):\n    "
                                 + "\n    ".join(f"{c.label}: {why}" for c, why in excluded),
                                 fix=_nothing_runs_fix(facts, backend, precision, target, device))
    if len(cands) == 1:
        choice = Choice(cands[0], "the only candidate", "only candidate", excluded=tuple(excluded), device=dev,
                        notes=notes + _unverified_note(facts, cands[0]))
        return _log(bundle, choice), None
    runners, failed = activate_candidates(bundle, cands, device, threads)
    excluded += failed
    if not runners:
        raise BackendUnavailable(f"no candidate could be loaded for {bundle.name}:\n    "
                                 + "\n    ".join(f"{c.label}: {why}" for c, why in failed))
    best, busy, own = None, 0.0, 0.0
    try:
        if len(runners) > 1:
            timed_runners = list(runners.values())
            probe = LoadProbe().start(timed_runners)
            timings = timed(runners, timing_feed(bundle), excluded=excluded)
            demand = threads if threads > 0 else usable_cores()
            busy = probe.contended(demand)
            # another predictor of this process inferring meanwhile (load /proc/stat cannot tell from the timing's)
            own = probe.own_inference(demand, timed_runners)
            best, reason = decide(timings)
        else:
            timings, best = {next(iter(runners)): float("nan")}, next(iter(runners))
            reason = "the only candidate that loaded"
    finally:
        for c, r in runners.items():
            if c != best:
                r.deactivate()
    kept = ("remembered as measured under load: later starts use it while the machine stays busy, and time again "
            "once it is idle")
    if busy > BUSY_LIMIT:
        notes += (f"other processes took {busy:.0%} of the CPUs the candidates were timed on: this choice is {kept}",)
    elif own > BUSY_LIMIT:
        notes += (f"other inference in this process (another predictor's calls) took {own:.0%} of the CPUs the "
                  f"candidates were timed on: this choice is {kept}",)
    load = max(busy, own) if max(busy, own) > BUSY_LIMIT else 0.0
    short = [c for c, why in excluded if why.startswith(MEMORY_LEFT_OUT)]
    if short:  # not remembered: a start with more memory free times them all (one tight moment pinned FP32 for good)
        notes += (f"{len(short)} candidate(s) not timed for lack of memory: this choice is not cached",)
    # timed again because a look found it idle, and busy again: not for RETIME_BACKOFF_S (each try costs the start)
    again = time.time() + RETIME_BACKOFF_S if load and cached is not None and cached.under_load else 0.0
    choice = Choice(best, reason + " (measured here, side by side)", "measured", tuple(sorted(timings.items(), key=lambda kv: kv[1])),
                    tuple(excluded), dev, notes + _unverified_note(facts, best), under_load=load, retime_after=again)
    if not short:
        _write_cache(path, key, choice)
    return _log(bundle, choice), runners[best]


#: seconds a choice that was timed again under load is not timed again (module docstring, step 4)
RETIME_BACKOFF_S = 3600.0


def idle_now(threads: int = 0, look_s: float = 0.25) -> bool:
    """Whether other processes, and other inference of this process, leave the CPUs a timing of ``threads`` would use
    free now (a look of ``look_s``): a choice cached as measured under load is timed again only then."""
    probe = LoadProbe().start()
    time.sleep(look_s)
    demand = threads if threads > 0 else usable_cores()
    return probe.contended(demand) <= BUSY_LIMIT and probe.own_inference(demand) <= BUSY_LIMIT


def _cached_choice(hit: Any, path: Path | None, dev: DeviceInfo, bundle: "Bundle | None" = None,
                   request: Mapping[str, Any] | None = None) -> Choice | None:
    """The cache entry as a :class:`Choice`, or None when there is none, it is malformed (a precision the bundle
    has no model of, or that the request rules out: a hand-edited file ran a TensorRT-targeted model on the CPU),
    or its backend cannot run in this process (availability changes between processes on one device: the
    GStreamer import order, a GPU driver)."""
    if not isinstance(hit, dict):
        return None
    try:
        choice = Choice.from_dict(hit)
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring a malformed entry in the choice cache %s", path)
        return None
    c, req = choice.candidate, dict(request or {})
    fits = c.precision in PRECISIONS and all(req.get(k, "auto") in ("auto", None, getattr(c, k))
                                             for k in ("backend", "precision"))
    if fits and bundle is not None and c.precision == "int8":  # (bf16 and fp16 run the FP32 file)
        try:
            bundle.model_entry("int8", c.target)
        except Exception:  # noqa: BLE001 - no such model: the entry is not this bundle's
            fits = False
    if not fits:
        log.warning("ignoring a cached choice %s that does not fit %s or this request in %s: choosing again",
                    c.label, getattr(bundle, "name", "the bundle"), path)
        return None
    ok, why = _still_usable(choice.candidate)
    if not ok:
        log.warning("the cached choice %s cannot run in this process (%s): choosing again", choice.candidate.label, why)
        return None
    return Choice(choice.candidate, choice.reason, "cached", choice.timings_ms, choice.excluded, dev, choice.notes,
                  under_load=choice.under_load, retime_after=choice.retime_after)


def _still_usable(c: Candidate) -> tuple[bool, str]:
    """Whether a cached candidate's backend can run in this process (availability can change between
    processes with the same device: the GStreamer import order, a GPU driver)."""
    from .base import BACKENDS

    try:
        return BACKENDS.get(c.backend).is_available()
    except EdgesegError as e:
        return False, str(e)


#: how a note about an INT8 model run although its accuracy is not known to hold here begins (said as a warning on
#: every start that uses the choice, cached or not)
UNVERIFIED = "INT8 accuracy not verified here"


def _unverified_note(facts: Facts, c: Candidate) -> tuple[str, ...]:
    """A note when ``c`` is an INT8 model that runs only because ``--precision int8`` asked for it: its gate failed,
    or does not carry to this CPU (an audit: the reason was dropped and the model ran without a word)."""
    if c.precision != "int8":
        return ()
    passed, why = facts.int8_models.get(c.target, (False, "no gate recorded"))
    if passed and (c.target, c.backend) in facts.int8_unverified:
        passed, why = False, facts.int8_unverified[(c.target, c.backend)]
    return () if passed else (f"{UNVERIFIED} ({c.label}, run because INT8 was asked for): {why}",)


def _pinned_int8_note(bundle: "Bundle", c: Candidate, dev: DeviceInfo) -> tuple[str, ...]:
    """The :data:`UNVERIFIED` note of an INT8 model pinned with its backend (``--backend X --precision int8``), from
    what costs nothing to read: its recorded gate and whether this CPU adds INT8 sums as the gate's did (session 56:
    pinned together, the two checked nothing, where ``--precision int8`` alone warned). Nothing is measured here: a
    pinned choice starts at once."""
    if c.precision != "int8":
        return ()
    from .base import BACKENDS

    try:  # the model that backend's runner will load (without a target: the first of its own targets the bundle has)
        path = BACKENDS.get(c.backend).select_model(bundle, "int8", c.target)
    except EdgesegError:
        return ()  # no INT8 model it runs, or no such backend: the runner says so, with the fix
    target = next((m.target for m in bundle.manifest.models if m.precision == "int8" and bundle.root / m.file == path),
                  c.target)
    passed, why = int8_gate(bundle, target)
    if passed and (risk := int8_arithmetic_risk(bundle, target, dev, c.backend)) is not None:
        passed, why = False, risk
    label = Candidate(c.backend, "int8", target).label
    return () if passed else (f"{UNVERIFIED} ({label}, pinned with --backend and --precision): {why}",)


def _log(bundle: "Bundle", choice: Choice) -> Choice:
    log.info("backend choice for %s: %s (%s)", bundle.name, choice.candidate.label, choice.reason)
    for note in choice.notes:
        log.log(logging.WARNING if note.startswith(UNVERIFIED) else logging.INFO, "%s", note)
    return choice


def _device_notes(bundle: "Bundle", dev: DeviceInfo) -> Iterable[str]:
    """Say when the INT8 model's per-layer float/INT8 split was timed on another CPU (the model is timed here as it
    is; only a new ``edgeseg quantize`` would split it for this CPU)."""
    for target, entry in (bundle.report.get("int8") or {}).items():
        if target != "cpu":  # only the cpu target makes per-layer latency decisions (edgeseg quantize)
            continue
        made_on = entry.get("device") if isinstance(entry, dict) else None
        if isinstance(made_on, dict) and not dev.same_cpu(made_on):
            yield (f"the {target} INT8 model's layers were kept in float or quantized by timings on {made_on.get('cpu')} "
                   f"({', '.join(made_on.get('isa', ()))}); this is {dev.cpu} ({', '.join(dev.isa)}): the model as it is "
                   "is timed here against the others (edgeseg quantize on this CPU would split it for this CPU)")
        elif isinstance(entry, dict) and "latency_ms" in entry and made_on is None:
            yield (f"the {target} INT8 model's layers were kept in float or quantized by timings on an unrecorded CPU: "
                   "the model as it is is timed here against the others")


def describe(choice: Choice) -> Sequence[str]:
    """Lines for a person: the choice, the timing table and what was left out."""
    lines = [f"{choice.candidate.label}: {choice.reason} [{choice.how}]"]
    lines += [f"  {c.label:<28} {ms:8.2f} ms" for c, ms in choice.timings_ms]
    lines += [f"  {c.label:<28} left out: {why}" for c, why in choice.excluded]
    return lines

