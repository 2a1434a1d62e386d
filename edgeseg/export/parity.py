"""Parity check: the PyTorch model and the exported ONNX (in ONNX Runtime) on real-looking inputs.

Inputs are frames of :class:`edgeseg.data.synthetic.SceneGenerator` (textured scenes with moving
objects) passed through the bundle's own ``InputSpec.preprocess``, so both sides see exactly the
tensor the runtime will feed. The graph is checked against the model it was exported from — the
Conv-BN-folded copy — and, when given, the original (unfolded) model too:

* ``argmax_agreement``: fraction of pixels whose arg-max class is the same (ONNX vs folded).
* ``max_abs_logit_error``: ``max |torch - onnx|`` over all logits; None for label graphs.
* ``max_rel_logit_error``: that divided by ``max |torch|`` (the logits' dynamic range).
* ``source_argmax_agreement`` / ``source_max_rel_logit_error``: the same against the original
  model. Folding changes rounding; in networks that route values by max-pooling indices (SegNet) a
  near-tie can then move a value by one pixel, so these can be larger while the arg-max agrees.

Models that route values by pooling switches (``index_routed = True``: SegNet, DeconvNet) are judged
on arg-max agreement alone: ONNX Runtime and PyTorch round convolutions differently, a near-tie in a
deep pooling window then breaks the other way and moves a whole unpooled value, so the largest logit
difference says nothing about the export's health (DeconvNet at 480x360: 6.6 % max relative error,
99.98 % of the arg-max the same). The logit errors are still measured and reported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._ort import make_session
from ..errors import ExportError
from ..structures import ImageShape, InputSpec

MIN_AGREEMENT = 0.999          # a healthy export
MAX_REL_ERROR = 1e-3
FAIL_AGREEMENT = 0.99          # below this (or above FAIL_REL_ERROR) export raises ExportError
FAIL_REL_ERROR = 1e-2


@dataclass(frozen=True)
class ParityReport:
    images: int
    size: str                      # "WxH", the network input size
    argmax_agreement: float
    max_abs_logit_error: float | None
    max_rel_logit_error: float | None
    source_argmax_agreement: float | None
    source_max_rel_logit_error: float | None
    passed: bool
    inputs: str                    # where the images came from
    thresholds: dict
    index_routed: bool = False     # judged on arg-max agreement only (see the module doc)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def failed_badly(self) -> bool:
        rel, src = self.max_rel_logit_error, self.source_argmax_agreement
        if self.index_routed:
            rel = None
        return (self.argmax_agreement < FAIL_AGREEMENT or (rel is not None and not rel <= FAIL_REL_ERROR)
                or (src is not None and src < FAIL_AGREEMENT))


def parity_images(size: ImageShape, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """``count`` real-looking RGB uint8 frames of ``size`` (synthetic scenes, frames far apart)."""
    try:
        from ..data.synthetic import SceneGenerator
    except ImportError:
        return smooth_random_images(size, count, seed)
    gen = SceneGenerator(size, seed=seed)
    return [gen.render_semantic(t * 37)[0] for t in range(count)]


def smooth_random_images(size: ImageShape, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Fallback inputs: random colour fields at 1/16 resolution, bilinearly upsampled."""
    import cv2

    rng = np.random.default_rng(seed)
    small = ImageShape(max(2, size.height // 16), max(2, size.width // 16))
    return [cv2.resize(rng.integers(0, 256, (*small.hw, 3), dtype=np.uint8), size.wh, interpolation=cv2.INTER_LINEAR)
            for _ in range(count)]


def ort_session(path: Path):
    """A CPU ONNX Runtime session for the exported file (:func:`edgeseg._ort.make_session`)."""
    return make_session(path)


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x))["logits"].float().numpy()


def _compare(refs: list[np.ndarray], gots: list[np.ndarray], kind: str, where: Path) -> tuple[float, float | None, float | None]:
    """(argmax agreement, max abs error, max relative error) of ONNX outputs against torch logits."""
    agree = total = 0
    max_abs, max_ref = 0.0, 0.0
    for ref, got in zip(refs, gots):
        ref_labels = ref.argmax(1)
        got_labels = got if kind == "labels" else got.argmax(1)
        if got_labels.shape != ref_labels.shape:
            raise ExportError(f"{where}: ONNX output shape {list(got.shape)} does not match PyTorch's {list(ref.shape)}")
        agree += int((got_labels.astype(np.int64) == ref_labels).sum())
        total += ref_labels.size
        max_ref = max(max_ref, float(np.abs(ref).max()))
        if kind == "logits":
            max_abs = max(max_abs, float(np.abs(got.astype(np.float64) - ref).max()))
    if kind != "logits":
        return agree / max(total, 1), None, None
    return agree / max(total, 1), max_abs, max_abs / max(max_ref, 1e-12)


def check_parity(model, onnx_path: Path, input_spec: InputSpec, *, kind: str = "logits", images: list[np.ndarray] | None = None,
                 batch: int = 1, source_model=None) -> ParityReport:
    """Compare ``model`` (PyTorch, eval; the folded copy that was exported) with ``onnx_path`` in
    ONNX Runtime, and ``source_model`` (the original) if given. ``kind``: the ONNX output, ``logits``
    or ``labels``. ``batch`` > 1 feeds the frames in batches (dynamic batch)."""
    assert input_spec.size is not None
    inputs = "edgeseg.data.synthetic.SceneGenerator" if images is None else "caller"
    if images is None:
        images = parity_images(input_spec.size, count=max(2, batch))
    tensors = [input_spec.preprocess(img)[0] for img in images]
    feeds = [np.concatenate(tensors[i : i + batch]) for i in range(0, len(tensors) - batch + 1, batch)]
    session = ort_session(Path(onnx_path))
    in_name = session.get_inputs()[0].name
    gots = [session.run(None, {in_name: x})[0] for x in feeds]
    agreement, abs_err, rel_err = _compare([_torch_logits(model.eval(), x) for x in feeds], gots, kind, Path(onnx_path))
    src_agreement = src_rel = None
    if source_model is not None:
        src_refs = [_torch_logits(source_model.eval(), x) for x in feeds]
        src_agreement, _, src_rel = _compare(src_refs, gots, kind, Path(onnx_path))
    routed = bool(getattr(source_model if source_model is not None else model, "index_routed", False))
    passed = agreement >= MIN_AGREEMENT and (routed or rel_err is None or rel_err <= MAX_REL_ERROR) \
        and (src_agreement is None or src_agreement >= MIN_AGREEMENT)
    return ParityReport(
        images=len(images), size=str(input_spec.size), argmax_agreement=agreement, max_abs_logit_error=abs_err,
        max_rel_logit_error=rel_err, source_argmax_agreement=src_agreement, source_max_rel_logit_error=src_rel,
        passed=passed, inputs=inputs,
        thresholds={"min_agreement": MIN_AGREEMENT, "max_rel_error": MAX_REL_ERROR,
                    "fail_agreement": FAIL_AGREEMENT, "fail_rel_error": FAIL_REL_ERROR},
        index_routed=routed,
    )


def panoptic_agreement(a, b, min_area: int = 64) -> tuple[float, float]:
    """``(share of pixels with the same category, smallest IoU of a segment of a with its best
    match of the same category in b)`` for two :class:`PanopticResult` of one frame; segments of
    ``a`` smaller than ``min_area`` pixels are not held to the IoU (a one-pixel sliver may vanish)."""
    pixels = float(np.mean(a.semantic(void=-1) == b.semantic(void=-1)))
    ga, gb = a.segment_ids.astype(np.int64).ravel(), b.segment_ids.astype(np.int64).ravel()
    pairs, inter = np.unique(ga * (1 << 32) + gb, return_counts=True)
    ia, ib = pairs >> 32, pairs & ((1 << 32) - 1)
    area_a = dict(zip(*np.unique(ga, return_counts=True)))
    area_b = dict(zip(*np.unique(gb, return_counts=True)))
    cat_a = {s.id: s.category_id for s in a.segments}
    cat_b = {s.id: s.category_id for s in b.segments}
    best: dict[int, float] = {}
    for x, y, n in zip(ia.tolist(), ib.tolist(), inter.tolist()):
        if x in cat_a and cat_b.get(y) == cat_a[x]:
            best[x] = max(best.get(x, 0.0), n / (area_a[x] + area_b[y] - n))
    ious = [best.get(x, 0.0) for x in cat_a if area_a.get(x, 0) >= min_area]
    return pixels, min(ious, default=1.0)
