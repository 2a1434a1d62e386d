"""How a training step runs on the CPU: float32 or bfloat16 autocast, contiguous or channels-last tensors.

Two measured levers, both decided on the machine that trains:

* **bf16 autocast.** CPUs with AMX or AVX-512 BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and
  later) run convolutions and matrix products in bf16 through oneDNN. Under ``torch.autocast("cpu",
  dtype=torch.bfloat16)`` a training step of a ResNet-18 DeepLabV3+ ran 1.9x faster than in float32
  on the Intel Xeon with AMX these sessions used; a MobileNetV3 one gained little (depthwise
  convolutions are memory-bound). On a CPU without native bf16 it is slower, so ``bf16`` is refused
  there. The loss, the optimiser, the float32 master weights and evaluation are unchanged.
* **Channels-last memory format** (NHWC) for the model and its inputs. oneDNN's depthwise and 1x1
  convolutions prefer it: a MobileNetV3 DeepLabV3+ step ran 1.3-1.6x faster on the same CPU, a
  ResNet-18 one no faster. Results are the same computation in another summation order.

``cpu_precision`` (``fp32`` | ``bf16`` | ``auto``) and ``memory_format`` (``contiguous`` |
``channels_last`` | ``auto``) each fix their lever or leave it to measurement: the candidates are timed
on a copy of the run's model with its first batch (forward and backward, :func:`step_seconds`), and
the fastest is kept when it beats the plain one (float32, contiguous, or the fixed lever) by at least
:data:`MIN_GAIN`. The candidates are timed in turns (:func:`time_candidates`), and a timing that other
processes shared (:class:`~edgeseg._timing.LoadProbe` above :data:`~edgeseg._timing.BUSY_LIMIT`) is
logged as a warning that names the settings to pass instead: in session 24 an ``auto`` instance run,
timed while an evaluation started beside it, measured fp32 channels-last 2.04 s and bf16
channels-last 0.72 s a step back to back and chose bf16, where the same model's idle timing (session
17) had chosen fp32 channels-last. The decision is recorded with the run (with ``busy``, the share
taken) and kept on resume.
"""
from __future__ import annotations

import copy
import itertools
import logging
import time
from contextlib import nullcontext
from typing import Any, Callable

from .._timing import BUSY_LIMIT, LoadProbe
from ..errors import InputError

log = logging.getLogger(__name__)
CPU_PRECISIONS = ("fp32", "bf16", "auto")
MEMORY_FORMATS = ("contiguous", "channels_last", "auto")
MIN_GAIN = 1.15  # auto leaves the plain step only for one at least this much faster
TIMING_ROUNDS = 2  # turns over all candidates; each candidate's time is its fastest


def add_precision_options(parser) -> None:
    """``--cpu-precision`` and ``--memory-format`` on an argparse parser (the training commands and tools)."""
    parser.add_argument("--cpu-precision", default="fp32", choices=list(CPU_PRECISIONS),
                        help="on the CPU: bf16 autocast (needs AVX-512 BF16 or AMX); auto times both on the first "
                             f"batch and keeps bf16 when it is >= {MIN_GAIN}x faster (default fp32)")
    parser.add_argument("--memory-format", default="contiguous", choices=list(MEMORY_FORMATS),
                        help="tensor layout on the CPU; auto times both (with --cpu-precision auto: all four "
                             f"combinations) on the first batch and keeps the fastest at >= {MIN_GAIN}x (default contiguous)")


def step_key(bf16: bool, channels_last: bool) -> str:
    """A training step's name, as timings are recorded: ``fp32/contiguous``, ``bf16/channels_last``, ..."""
    return f"{'bf16' if bf16 else 'fp32'}/{'channels_last' if channels_last else 'contiguous'}"


def step_summary(choice: dict[str, Any] | None) -> str:
    """One line for logs: ``fp32/channels_last (1.18x)``."""
    if not choice:
        return "-"
    key = step_key(bool(choice.get("bf16")), bool(choice.get("channels_last")))
    return f"{key} ({choice['speedup']}x)" if "speedup" in choice else key


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_cpu_precision(value: str, on_cpu: bool = False) -> None:
    """A known value; with ``on_cpu`` (the run trains on the CPU) ``bf16`` also needs native bf16 here, so
    a config is refused when it is built, before any data loads."""
    if value not in CPU_PRECISIONS:
        raise InputError(f"cpu_precision must be one of {', '.join(CPU_PRECISIONS)}, got {value!r}")
    if on_cpu and value == "bf16" and not cpu_bf16_supported():
        raise InputError("--cpu-precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); "
                         "autocast would emulate it, slower than float32",
                         fix="use --cpu-precision auto (it measures) or fp32")


def check_memory_format(value: str) -> None:
    if value not in MEMORY_FORMATS:
        raise InputError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {value!r}")


def autocast_for(device: Any, amp: bool, bf16: bool = False):
    """``torch.autocast`` in float16 on CUDA when ``amp``, else in bfloat16 when ``bf16`` (on the CPU or
    on CUDA: the instance and panoptic trainers' GPU step); a no-op context otherwise."""
    import torch

    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if bf16 and device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_memory_format(x, channels_last: bool):
    """A module or a 4-D tensor in channels-last layout when asked (other tensors unchanged)."""
    import torch

    if not channels_last:
        return x
    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    return x.to(memory_format=torch.channels_last)


def best_seconds(run_once: Callable[[], Any], steps: int = 3) -> float:
    """The fastest of ``steps`` calls of ``run_once`` (after one warm-up call), in s."""
    best = float("inf")
    for k in range(steps + 1):
        t = time.perf_counter()
        run_once()
        if k:
            best = min(best, time.perf_counter() - t)
    return best


def float_outputs(out: Any) -> Any:
    """A model's outputs with every floating tensor (in dicts, lists and tuples) in float32: losses are
    taken in float32 after a bf16 autocast forward."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: float_outputs(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(float_outputs(v) for v in out)
    return out


def train_forward(model, images):
    """``model(images)`` in training mode; a batch too small for a BatchNorm after global pooling (one image per
    batch: ``--batch 1``, or a one-image dataset) is an :class:`InputError` saying so, not torch's ValueError."""
    try:
        return model(images)
    except ValueError as e:
        if "more than 1 value per channel" not in str(e):
            raise
        raise InputError(f"a batch of {images.shape[0]} image cannot train this model: a BatchNorm after its global "
                         "pooling (the ASPP's image-level branch) needs 2 or more images per batch",
                         fix="train with --batch 2 or more on at least 2 images (a one-image dataset cannot train it)"
                         ) from None


def step_seconds(model, images, target, loss_fn: Callable, cpu_bf16: bool, steps: int = 3) -> float:
    """The fastest of ``steps`` forward + backward passes of ``model`` (after one warm-up), in s."""
    from .loop import logits_of

    device = images.device

    def once() -> None:
        with autocast_for(device, False, cpu_bf16):
            logits = logits_of(train_forward(model, images), tuple(target.shape[-2:]))
        loss_fn(logits.float(), target).backward()
        model.zero_grad(set_to_none=True)

    return best_seconds(once, steps)


def channels_last_hazard(model) -> str | None:
    """Why training ``model`` in channels-last is unsafe on this CPU, or None. torch 2.13's oneDNN, on x86 CPUs
    without AVX-512 (torch's CPU capability ``AVX2``), corrupts memory in the backward pass of a 1x1 convolution with a
    stride above 1 and 2-7 input channels in channels-last: glibc aborts the process ("corrupted size vs. prev_size")
    or the weight gradients come out wrong; found by the CI of session 55 on an AVX2 EPYC (a ResNet shortcut of 4
    channels; 8 or more, stride 1, other kernels, or oneDNN turned off: exact). Such a run trains contiguous."""
    import platform

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86") or model is None:
        return None
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return None
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1 \
                and 2 <= m.in_channels // m.groups <= 7:
            return (f"on this CPU (no AVX-512) torch's oneDNN corrupts memory in the backward pass of a strided 1x1 "
                    f"convolution with {m.in_channels // m.groups} input channels in channels-last ({name or 'the model'})")
    return None


def choose_cpu_step(precision: str, memory_format: str, device: Any, model=None, batch: tuple | None = None,
                    loss_fn: Callable | None = None, *,
                    timer: Callable[[Any, bool, bool], float] | None = None) -> dict[str, Any]:
    """How to run the training step: ``{"bf16": bool, "channels_last": bool, ...}`` plus what decided it
    (recorded with the run).

    ``precision`` ``bf16`` needs a CPU with native bf16 (:class:`~edgeseg.errors.InputError` otherwise);
    ``auto`` values are decided by timing a copy of ``model`` (its weights and batch-norm statistics are
    untouched) on ``batch`` = (images, target) with ``loss_fn``, or by ``timer(copy, bf16, channels_last)``
    (seconds per step; for models whose loss takes more than logits, e.g. instance and panoptic heads).
    Off the CPU both levers are off."""
    check_cpu_precision(precision)
    check_memory_format(memory_format)
    info: dict[str, Any] = {"cpu_precision": precision, "memory_format": memory_format}
    if device.type != "cpu":
        return {**info, "bf16": False, "channels_last": False}
    check_cpu_precision(precision, on_cpu=True)
    native = cpu_bf16_supported()
    precisions = [False, True] if precision == "auto" and native else [precision == "bf16"]
    formats = [False, True] if memory_format == "auto" else [memory_format == "channels_last"]
    if precision == "auto" and not native:
        info["why"] = "no native bf16 on this CPU"
    if True in formats and (hazard := channels_last_hazard(model)) is not None:
        formats, info["channels_last_refused"] = [False], hazard
        log.warning("training contiguous, not channels-last: %s", hazard)
    candidates = list(itertools.product(precisions, formats))
    if len(candidates) == 1:
        return {**info, "bf16": candidates[0][0], "channels_last": candidates[0][1]}
    if model is None or (timer is None and (batch is None or loss_fn is None)):
        raise InputError("an auto training precision or memory format needs the model, a batch and the loss to time")
    if timer is None:
        images, target = batch

        def timer(probe, bf16: bool, cl: bool) -> float:
            return step_seconds(probe, to_memory_format(images, cl), target, loss_fn, bf16)

    timings, busy = time_candidates(model, candidates, timer)
    plain = step_key(*candidates[0])
    if plain not in timings:
        raise InputError(f"the training step fails in its plain form ({plain})", fix="run it once without auto to see why")
    best = min(timings, key=timings.get)
    if timings[plain] / timings[best] < MIN_GAIN:
        best = plain
    bf16, cl = best.startswith("bf16"), best.endswith("channels_last")
    log.info("training step: %s (seconds per step: %s)", best, timings)
    if busy > BUSY_LIMIT:
        log.warning("other processes took %.0f%% of the CPUs while the training step was timed, so %s may not be "
                    "the fastest on an idle machine: to fix the step, pass --cpu-precision %s --memory-format %s "
                    "(or time it again when the machine is idle)", 100 * busy, best, best.split("/")[0],
                    best.split("/")[1])
    return {**info, "bf16": bf16, "channels_last": cl, "step_s": timings,
            "speedup": round(timings[plain] / timings[best], 3), "busy": round(busy, 3)}


def time_candidates(model, candidates: list[tuple[bool, bool]], timer: Callable[[Any, bool, bool], float],
                    rounds: int = TIMING_ROUNDS) -> tuple[dict[str, float], float]:
    """Seconds per step of each ``(bf16, channels_last)`` candidate (the fastest of ``rounds`` calls of
    ``timer`` on its own copy of ``model``, the rounds taken in turn over all candidates, so a load that
    starts or stops during the timing reaches every candidate rather than the ones timed last), and the
    share of the CPUs other processes took meanwhile (:class:`~edgeseg._timing.LoadProbe`). A candidate
    that fails (an op without a kernel for that layout or dtype) is left out and logged."""
    import torch

    probes = {step_key(bf16, cl): (bf16, cl, to_memory_format(copy.deepcopy(model).train(), cl))
              for bf16, cl in candidates}
    timings: dict[str, float] = {}
    load = LoadProbe().start()
    for _ in range(rounds):
        for key, (bf16, cl, probe) in list(probes.items()):
            try:
                t = timer(probe, bf16, cl)
            except RuntimeError as e:
                log.info("training step %s not possible here: %s", key, str(e).splitlines()[0])
                del probes[key]
                timings.pop(key, None)
                continue
            timings[key] = round(min(t, timings.get(key, float("inf"))), 4)
    busy = load.contended(torch.get_num_threads())
    probes.clear()
    return timings, busy


class CpuStepLevers:
    """The two levers for trainers whose loss takes a model's whole output (the instance and panoptic
    trainers). The trainer has ``model``, ``config`` (with ``cpu_precision`` and ``memory_format``) and
    ``precision`` (None until decided; recorded in its checkpoints)."""

    model: Any
    config: Any
    precision: dict[str, Any] | None = None

    def forward(self, model, x, bf16: bool | None = None, channels_last: bool | None = None):
        """``model(x)`` under bf16 autocast and in channels-last layout as decided (or as given), with
        every floating output in float32 for the loss."""
        p = self.precision or {}
        bf16 = bool(p.get("bf16")) if bf16 is None else bf16
        channels_last = bool(p.get("channels_last")) if channels_last is None else channels_last
        with autocast_for(x.device, False, bf16):
            out = train_forward(model, to_memory_format(x, channels_last))
        return float_outputs(out)

    def decide_precision(self, x, loss_of: Callable[[Any], Any]) -> dict[str, Any]:
        """Decide the levers (an ``auto`` one by timing copies of the model on the batch ``x`` with
        ``loss_of(outputs)`` -> loss tensor) and put the model in the chosen layout."""
        import torch

        c, cpu = self.config, torch.device("cpu")
        if "auto" not in (c.cpu_precision, c.memory_format):
            choice = choose_cpu_step(c.cpu_precision, c.memory_format, cpu, self.model)
        else:
            def timer(probe, bf16: bool, cl: bool) -> float:
                def once() -> None:
                    loss_of(self.forward(probe, x, bf16, cl)).backward()
                    probe.zero_grad(set_to_none=True)
                return best_seconds(once)

            choice = choose_cpu_step(c.cpu_precision, c.memory_format, cpu, self.model, timer=timer)
        self.keep_precision(choice)
        return choice

    def keep_precision(self, choice: dict[str, Any] | None) -> None:
        """Use ``choice`` (a decision, e.g. a resumed run's); None leaves it undecided."""
        if choice is None:
            return
        self.precision = dict(choice)
        on_cpu = str(self.precision.get("device", "cpu")).startswith("cpu") and all(
            p.device.type == "cpu" for p in self.model.parameters())  # (a GPU's channels-last is cuDNN's: not this)
        if self.precision.get("channels_last") and on_cpu and (hazard := channels_last_hazard(self.model)) is not None:
            # (a run decided, or begun, on another CPU: the same computation, contiguous)
            self.precision.update(channels_last=False, channels_last_refused=hazard)
            log.warning("training contiguous, not channels-last: %s", hazard)
        self.model = to_memory_format(self.model, bool(self.precision.get("channels_last")))
