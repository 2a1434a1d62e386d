"""What makes a way of running a bundle trustworthy here: the accuracy evidence behind each candidate
of :mod:`edgeseg.backends.choice`.

* INT8: the gate ``edgeseg quantize`` recorded (:func:`int8_gate`), if it holds on this CPU's INT8
  arithmetic (:func:`int8_arithmetic_risk`) and, for a runtime other than the one the gate scored,
  if that runtime computes the same labels here (:func:`other_runtime_gate`); where either proxy
  refuses and the bundle's dataset is on this machine, the task metric measured here decides
  (:func:`task_metric_gate`).
* bf16: the CPU has it and its task metric on the bundle's dataset stays within the INT8 budget
  (:func:`task_metric_gate`), or without that dataset its labels agree with FP32 here (:func:`bf16_gate`).

Label agreement (:func:`label_agreement`) is measured on the bundle's parity images (two synthetic
scenes at the network size) with the real runtimes; :data:`MIN_AGREEMENT` is the export parity
check's threshold.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EdgesegError
from .device import DeviceInfo

log = logging.getLogger("edgeseg.backends")

if TYPE_CHECKING:
    from ..bundle import Bundle
    from .choice import Candidate

#: the runtimes that run an INT8 model of each quantization target, the one its gate scored first
INT8_RUNTIMES = {"cpu": ("onnxruntime", "openvino"), "openvino": ("openvino", "onnxruntime"), "tensorrt": ("tensorrt",)}
MIN_AGREEMENT = 0.99  # label agreement that carries a measured accuracy over (the export parity check's threshold)


def int8_gate(bundle: "Bundle", target: str | None) -> tuple[bool, str]:
    """Whether the INT8 model of ``target`` passed the accuracy gate ``edgeseg quantize`` recorded."""
    entry = (bundle.report.get("int8") or {}).get(target or "cpu")
    scores = (entry.get("fp32"), entry.get("int8")) if isinstance(entry, dict) else (None, None)
    if "met_budget" not in (entry or {}) or not all(isinstance(v, (int, float)) for v in scores):
        return False, f"no accuracy measured for the {target} INT8 model (edgeseg quantize ... --eval DATA records it)"
    fig = f"{entry.get('metric') or 'metric'} {scores[0]:.2f} -> {scores[1]:.2f}"
    if not entry["met_budget"]:
        return False, f"the {target} INT8 model failed its accuracy gate ({fig}, budget {entry.get('max_drop')})"
    return True, fig


def label_agreement(bundle: "Bundle", a: Candidate, b: Candidate, threads: int = 0) -> float:
    """Fraction of pixels whose labels two ways of running ``bundle`` agree on, over its parity images
    (two synthetic scenes at the network size), measured on this device. Raises when either cannot run.

    Semantic bundles only: the first output is read as logits ``[N, C, H, W]`` (argmax over C) or labels.
    The gates do not call it for instance/panoptic bundles (:func:`_not_comparable`): a panoptic model's
    first output is its semantic logits, which can agree while its instance heads drift."""
    import numpy as np

    from ..data.synthetic import SceneGenerator
    from ..errors import InputError
    from .base import BACKENDS

    size = bundle.manifest.input.size
    if size is None:
        raise InputError("the bundle has no fixed network size to compare runtimes on")
    gen = SceneGenerator(size, seed=0)
    feeds = [network_feed(bundle, gen.render_semantic(t * 37)[0]) for t in range(2)]
    labels = []
    for c in (a, b):
        with BACKENDS.get(c.backend).load(bundle, precision=c.precision, threads=threads, target=c.target) as r:
            outs = [next(iter(r.infer(f).values())) for f in feeds]
        labels.append([o.argmax(axis=1) if o.ndim == 4 else o for o in outs])
    return float(np.mean([np.mean(x == y) for x, y in zip(*labels)]))


def bf16_gate(bundle: "Bundle", threads: int = 0) -> tuple[bool, str]:
    """bf16 on OpenVINO: offered where the CPU plugin has BF16, and accepted when its task metric is
    within the bundle's INT8 budget of FP32's on the dataset its accuracy was recorded on
    (:func:`task_metric_gate`), where that dataset is on this machine; otherwise, for semantic bundles,
    when its labels agree with FP32 on >= 99% of the pixels of the bundle's parity images. Measured on
    this device. Never raises."""
    from .choice import Candidate
    from .openvino.settings import precisions_here

    if "bf16" not in precisions_here():
        return False, "this CPU has no BF16 (OpenVINO lists no BF16 capability)"
    measured = task_metric_gate(bundle, "bf16", threads)
    if measured is not None:
        return measured
    why = _not_comparable(bundle)
    if why:
        return False, f"bf16 is not checked for this bundle: {why}; pin --precision bf16 to use it"
    try:
        agree = label_agreement(bundle, Candidate("openvino", "fp32"), Candidate("openvino", "bf16"), threads)
    except Exception as e:  # a failed check leaves bf16 out, with the reason
        return False, f"bf16 check failed: {e}"
    if agree < MIN_AGREEMENT:
        return False, f"bf16 labels agree with FP32 on {agree:.2%} of pixels (< {MIN_AGREEMENT:.0%})"
    return True, f"bf16 labels agree with FP32 on {agree:.2%} of pixels"


def other_runtime_gate(bundle: "Bundle", target: str, backend: str, threads: int = 0) -> str | None:
    """None when ``backend`` runs the INT8 model of ``target`` as its gated runtime does (labels agree on
    >= 99% of the parity images' pixels, measured here), else why not. The gate scored the model on
    the target's own runtime (:data:`INT8_RUNTIMES`, first); another runtime inherits the gate only
    when it computes the same labels (an NNCF model agreed 58% between OpenVINO and ONNX Runtime on
    an AVX2-only CPU). Never raises."""
    from .choice import Candidate

    native = INT8_RUNTIMES.get(target, ("onnxruntime",))[0]
    if backend == native:
        return None
    why = _not_comparable(bundle)
    if why:
        return f"its accuracy gate scored it on {native}, and another runtime is not checked for this bundle: {why}"
    try:
        agree = label_agreement(bundle, Candidate(native, "int8", target), Candidate(backend, "int8", target), threads)
    except Exception as e:  # a failed check leaves it out, with the reason
        return f"could not compare it with {native}, which its accuracy gate scored: {e}"
    if agree < MIN_AGREEMENT:
        return (f"its labels agree with {native}'s (which the accuracy gate scored) on {agree:.2%} of pixels here "
                f"(< {MIN_AGREEMENT:.0%})")
    return None


GATE_FRAMES = 40  # frames of the recorded dataset a reduced-precision check scores (both precisions)
DEFAULT_MAX_DROP = 0.5  # the budget where the bundle records no INT8 gate


class _First:
    """The first ``n`` samples of a dataset, with its attributes (classes, categories, ignore index)."""

    def __init__(self, dataset, n: int):
        self._dataset, self._n = dataset, n

    def __iter__(self):
        import itertools

        return itertools.islice(iter(self._dataset), self._n)

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def task_metric_gate(bundle: "Bundle", precision: str = "bf16", threads: int = 0, target: str | None = None,
                     backend: str = "openvino") -> tuple[bool, str] | None:
    """The bundle's task metric (mIoU, mask AP, PQ: what its report records), measured here on the
    first :data:`GATE_FRAMES` frames of the dataset its FP32 accuracy was recorded on, for OpenVINO
    ``bf16`` against OpenVINO FP32, or for ``precision="int8"`` the INT8 model of ``target`` on
    ``backend`` against FP32 on that runtime; accepted when the drop is within the bundle's INT8 budget
    (the target's, else the smallest recorded, else :data:`DEFAULT_MAX_DROP`). None where the report
    names no dataset or it does not open here (then the proxies decide). Label agreement on synthetic
    parity scenes is only a proxy: ``road`` in bf16 agreed with FP32 on 98.54% of their pixels (refused)
    and scores 55.29 mIoU on CamVid ``val`` against FP32's 55.26. Never raises."""
    acc = ((bundle.report.get("accuracy") or {}).get("fp32")) or {}
    spec = acc.get("data")
    if not isinstance(spec, str) or not spec:
        return None
    from ..data import open_dataset
    from ..data.base import relative_paths

    if relative_paths(spec):  # relative to the folder the bundle was made in, not known here: it could open other data
        log.debug("%s: its accuracy was recorded on %s, a path relative to where it was made: not scored here",
                  bundle.name, spec)
        return None

    try:
        dataset = open_dataset(spec, split=acc.get("split") or "val")
    except Exception:  # noqa: BLE001  (another machine's path, a missing folder: fall back, never fail)
        return None
    task = bundle.manifest.task
    if task not in ("semantic", "instance", "panoptic"):
        return None
    entries = {t: e for t, e in (bundle.report.get("int8") or {}).items()
               if isinstance(e, dict) and isinstance(e.get("max_drop"), (int, float))}
    own = entries.get(target or "cpu") if precision == "int8" else None
    budget = own["max_drop"] if own else min((e["max_drop"] for e in entries.values()), default=DEFAULT_MAX_DROP)
    if precision == "int8":  # the INT8 model on the runtime asked for, against FP32 on the same runtime
        runs, what = ((backend, "fp32", None), (backend, "int8", target)), f"INT8 ({target or 'cpu'}) on {backend}"
    else:
        runs, what = (("openvino", "fp32", None), ("openvino", precision, None)), precision
    try:
        samples = list(_First(dataset, GATE_FRAMES))
        base = _fp32_baseline(bundle, dataset, samples, runs[0][0], threads, (spec, acc.get("split") or "val"))
        reduced = _task_metric(bundle, dataset, samples, *runs[1], threads)
    except Exception as e:  # noqa: BLE001  (a failed check leaves the precision out, with the reason)
        return False, f"{what} accuracy check failed: {e}"
    name = {"semantic": "mIoU", "instance": "mask AP", "panoptic": "PQ"}[task]
    verdict = f"{what} {name} {reduced:.2f} vs FP32 {base:.2f} on {len(samples)} frames of {spec.split(':')[0]} here"
    if base - reduced > budget:
        return False, f"{verdict}: drop {base - reduced:.2f} > budget {budget:g}"
    return True, f"{verdict} (budget {budget:g})"


#: FP32 task metrics already measured in this process: the bf16 check and an INT8 re-check on the same
#: runtime compare with the same FP32 score (keyed by the FP32 model file, dataset, runtime and threads)
_BASELINES: dict[tuple, float] = {}


def _fp32_baseline(bundle: "Bundle", dataset, samples: list, backend: str, threads: int, data_key: tuple) -> float:
    path = bundle.model_path("fp32")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, data_key, len(samples), backend, threads)
    if key not in _BASELINES:
        _BASELINES[key] = _task_metric(bundle, dataset, samples, backend, "fp32", None, threads)
    return _BASELINES[key]


#: detections an instance check keeps (as ``edgeseg eval`` and the quantizer's gate do for mask AP)
AP_SCORE_THRESHOLD = 0.001


def _task_metric(bundle: "Bundle", dataset, samples: list, backend: str, precision: str, target: str | None,
                 threads: int) -> float:
    """The bundle's task metric (%) on ``samples`` of ``dataset``, run by the real runtime here and
    decoded as the predictor decodes: mIoU, mask AP (detections above :data:`AP_SCORE_THRESHOLD`) or
    PQ, the numbers ``edgeseg eval`` prints and the quantizer gates on."""
    import numpy as np

    from ..decode import decode
    from ..eval import MaskAPAccumulator, PanopticMetric, SemanticMetric, category_map, class_map
    from .base import BACKENDS

    manifest, spec = bundle.manifest, bundle.manifest.input
    task = manifest.task
    options = manifest.decoder_options.replace(score_threshold=AP_SCORE_THRESHOLD) if task == "instance" else None
    with BACKENDS.get(backend).load(bundle, precision=precision, threads=threads, target=target) as runner:
        def results():
            for s in samples:
                x, meta = spec.preprocess(s.image if task == "semantic" else s.image())
                yield decode(runner.infer({spec.name: x}), meta, manifest, options)

        if task == "semantic":
            classes = tuple(getattr(dataset, "classes", ()) or manifest.classes)
            cmap = class_map(manifest.classes, classes)
            metric = SemanticMetric(len(classes), int(getattr(dataset, "ignore_index", 255)), boundary=False, classes=classes)
            for r, s in zip(results(), samples):
                metric.update(cmap(r.labels), np.asarray(s.labels))
            miou = metric.compute().miou
            return 0.0 if np.isnan(miou) else 100.0 * miou
        if task == "instance":
            acc = MaskAPAccumulator(dataset.categories,
                                    class_to_category=category_map(manifest.classes, dataset.categories).to_category)
            for r, s in zip(results(), samples):
                acc.add(s.image_id, r, s.truth)
            ap = acc.compute().stats[0]
            return 0.0 if ap < 0 else 100.0 * ap
        pq = PanopticMetric({int(c.id): bool(c.isthing) for c in getattr(dataset, "categories", {}).values()})
        for r, s in zip(results(), samples):
            pq.update(r, s.panoptic, s.crowd_ids)
        return 100.0 * pq.compute().pq


def _not_comparable(bundle: "Bundle") -> str | None:
    """Why :func:`label_agreement` cannot vouch for ``bundle`` (None for semantic bundles). Label
    agreement compares class labels only: an instance or panoptic model's other heads (boxes, mask
    coefficients, centres, offsets) go unchecked. ``shapes-panoptic`` in bf16 agreed with FP32 on >= 99%
    of its semantic labels while its PQ fell 1.3 (things 2.6) on an AVX-512 BF16 EPYC."""
    task = bundle.manifest.task
    if task == "semantic":
        return None
    return f"label agreement covers semantic bundles, and this one is {task} (its other heads would go unchecked)"


def network_feed(bundle: "Bundle", image) -> dict[str, Any]:
    """``{input name: tensor}`` for an RGB image, through the bundle's input spec."""
    spec = bundle.manifest.input
    x, _ = spec.preprocess(image)
    return {spec.name: x}


def int8_arithmetic_risk(bundle: "Bundle", target: str | None, dev: DeviceInfo, backend: str = "onnxruntime") -> str | None:
    """Why the INT8 accuracy recorded for ``target`` does not hold for ``backend`` on this CPU, or None.

    INT8 kernels add products differently by CPU: with VNNI (``vpdpbusd``, AMX) in exact int32; without
    it (``vpmaddubsw``) pairs of u8*s8 products go through int16. Measured on this AVX2-only EPYC against
    the VNNI machine the shipped bundles were gated on: ONNX Runtime ``shapes`` 88.36 -> 87.97 and
    ``road`` 55.61 -> 55.46 (its int16 sums saturate with full-range weights), OpenVINO 88.32 and 55.47;
    and an NNCF model of an ESPNet-like network ran at 58% label agreement with FP32 on OpenVINO here
    (97% on ONNX Runtime), with or without NNCF's 7-bit overflow fix. So:

    * ONNX Runtime: a gate from a VNNI CPU does not hold on a CPU without it, unless the model's weights
      fit in 7 bits (:func:`weights_fit_7bit`): then no pair can saturate and both compute the same sums.
      A gate from a CPU without VNNI is kept on VNNI CPUs: exact sums are what the INT8 model means (and
      what TensorRT computes), though the score moves (shipped bundles on an AVX-512 VNNI EPYC: -0.25 to
      +0.04 against their AVX2 gates, every one inside its budget; ``tests/test_zoo.py``).
    * OpenVINO: a gate holds only on the INT8 arithmetic it was measured on.

    A gate with no recorded device is trusted as before (bundles made before edgeseg recorded it). A gate whose
    CPU flags were not recorded (``edgeseg quantize`` on Windows or macOS, which have no ``/proc/cpuinfo``), or a CPU
    here whose flags cannot be read, is not known to add as this CPU does: unless the two are the same CPU, ONNX
    Runtime keeps it only with 7-bit weights and OpenVINO not (then the task metric is scored here where the data is)."""
    from .device import architecture, int8_arithmetic

    if backend not in ("onnxruntime", "openvino"):  # a GPU runtime: the host CPU's arithmetic does not matter
        return None
    entry = (bundle.report.get("int8") or {}).get(target or "cpu")
    # the CPU whose INT8 arithmetic produced the recorded scores: the re-scoring's, where the decoding changed
    made_on = None if not isinstance(entry, dict) else ((entry.get("rescored") or {}).get("device") or entry.get("device"))
    if not isinstance(made_on, dict) or not made_on or "isa" not in made_on:  # nothing recorded: as before
        return None
    gated, here = int8_arithmetic(made_on.get("isa")), dev.int8_arithmetic
    arch = architecture(made_on.get("machine"))
    same_arch = arch in ("", architecture(dev.machine))
    if backend == "openvino" and not same_arch:
        return (f"its accuracy gate ran on {made_on.get('cpu')} ({arch}); OpenVINO runs other INT8 kernels on "
                f"{architecture(dev.machine)}: re-quantize on such a CPU to gate it here")
    # exact int32 sums are the same sums on any CPU; 16-bit ones (x86 without VNNI saturates, aarch64 without dot
    # products wraps) are the same only on the same architecture
    if "unknown" in (gated, here):
        if dev.same_cpu(made_on) or (backend == "onnxruntime" and here == "vnni"):  # the same CPU; exact sums here:
            return None  # what the INT8 model means, whatever the gate's CPU added (as for a saturating gate below)
        where = (f"its accuracy gate ran on {made_on.get('cpu') or 'a CPU'} ({_flags_said(gated, 'that')}); "
                 f"this CPU: {_flags_said(here, 'this')}")
    elif gated == here and (same_arch or gated == "vnni"):
        return None
    else:
        where = (f"its accuracy gate ran on {made_on.get('cpu')} ({gated} INT8 sums); this CPU's are {here}" if same_arch
                 else f"its accuracy gate ran on {made_on.get('cpu')} ({arch}, {gated} INT8 sums); this CPU's are {here} "
                      f"({architecture(dev.machine)})")
    if backend == "openvino":
        return (f"{where}, and OpenVINO's INT8 results {'may ' if 'unknown' in (gated, here) else ''}differ between "
                "the two: re-quantize on such a CPU to gate it here")
    if gated == "saturating" and here == "vnni":
        return None  # exact sums here: what the INT8 model means (see above)
    try:
        path = bundle.model_path("int8", target)
    except EdgesegError:
        return None
    if weights_fit_7bit(path):
        return None
    return (f"{where}, and with 8-bit weights ONNX Runtime's 16-bit INT8 sums can overflow where exact ones do not, "
            "so that accuracy is not known to hold here: re-quantize (edgeseg quantize --target cpu, whose weights fit 7 bits) to "
            "make it valid on every CPU")


def _flags_said(arithmetic: str, which: str) -> str:
    """``unknown`` INT8 sums said as what they are: flags not recorded / not readable."""
    if arithmetic != "unknown":
        return f"{arithmetic} INT8 sums"
    return "its CPU flags were not recorded" if which == "that" else "INT8 sums not known (its CPU flags cannot be read)"


@functools.lru_cache(maxsize=32)
def _weights_fit_7bit(path: str, stamp: tuple[int, int]) -> bool:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path, load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    if not weights:
        return False
    for w in weights:
        a = numpy_helper.to_array(w)
        if a.size and (int(a.max()) > 64 or int(a.min()) < -64):
            return False
    return True


def weights_fit_7bit(path: str | Path) -> bool:
    """Whether every int8 weight of a Q/DQ model lies in [-64, 64] (ONNX Runtime's ``reduce_range``, which the
    ``cpu`` profile uses): then a pair of ``u8 * s8`` products is at most 255 * 64 * 2 = 32640 in magnitude and
    never saturates int16. Never raises."""
    try:
        st = Path(path).stat()
        return _weights_fit_7bit(str(path), (st.st_size, st.st_mtime_ns))
    except Exception:  # unreadable model: not known to be safe
        return False
