"""The INT8 accuracy gate scores exactly as ``edgeseg eval`` does: the runtime decoder (letterbox
crop at the output's stride, bilinear logits upsampling, argmax at the image's size), class matching
by name, extra model classes counted as misses.

Model: the quickly trained tiny net (tests/quant/quant_tiny.py), exported with its logits
average-pooled to stride 2 and a letterbox input spec; images are 32x48, so the decoder must crop
the padding at the output's stride and upsample.
"""
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import edgeseg  # noqa: E402
from edgeseg.bundle import Bundle  # noqa: E402
from edgeseg.eval import evaluate  # noqa: E402
from edgeseg.quant import accuracy as acc  # noqa: E402
from edgeseg.quant import quantize_bundle  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec  # noqa: E402

import quant_tiny as qt  # noqa: E402

LETTERBOX = InputSpec(size=ImageShape(qt.SIZE, qt.SIZE), resize="letterbox")
GOOD = [s.image for s in qt.scenes(16, seed=5)]


def _wide(n: int, seed: int) -> list:
    """32x48 (height x width) scenes: letterboxed into the 32x32 network with 5 rows of padding."""
    return [qt.Sample(s.image[8:40], s.labels[8:40], s.name) for s in qt.scenes(n, seed, size=48)]


VAL = qt.Dataset(_wide(10, seed=7))


@pytest.fixture(scope="module")
def stride2(tiny_net, tmp_path_factory):
    return qt.export_bundle(tiny_net, tmp_path_factory.mktemp("s2") / "s2.edgeseg", spec=LETTERBOX, stride=2)


def _eval(bundle, **kw):
    with edgeseg.load(bundle, backend="onnxruntime", threads=1, **kw) as p:
        return evaluate(p, VAL, progress=False, boundary=False)


def test_gate_scores_equal_edgeseg_eval(stride2, tmp_path):
    dst = shutil.copytree(stride2, tmp_path / "b.edgeseg")
    r = quantize_bundle(dst, GOOD, target="cpu", method="minmax", eval_dataset=VAL, threads=1, progress=False,
                        latency=False)
    fp32, int8 = _eval(dst), _eval(dst, precision="int8", target="cpu")
    assert r.fp32_score == 100.0 * fp32.miou  # exactly: same preprocessing, decoder, matching and metric
    assert r.int8_score == 100.0 * int8.miou
    # trained: 97.6 at stride 1 on 32x32 scenes; 73.0 here (2/3 letterbox down-scale, stride-2 logits)
    assert r.fp32_score > 65
    rep = Bundle.open(dst).report["int8"]["cpu"]
    assert rep["fp32"] == r.fp32_score and rep["int8"] == r.int8_score
    from edgeseg.backends.device import device_info

    assert rep["device"]["key"] == device_info().key and device_info().same_cpu(rep["device"])  # where it was gated


def test_scorer_matches_classes_by_name(stride2):
    fp32 = Bundle.open(stride2).model_path("fp32")
    manifest = Bundle.open(stride2).manifest
    straight = acc.DatasetScorer(VAL, manifest, threads=1).scores(fp32)
    # the same truth with the class list in reverse order (ids renumbered to match the names)
    flip = np.array([3, 2, 1, 0] + [255] * 252, np.uint8)
    rev = qt.Dataset([qt.Sample(s.image, flip[s.labels], s.name) for s in VAL], classes=qt.CLASSES[::-1])
    reversed_ = acc.DatasetScorer(rev, manifest, threads=1).scores(fp32)
    assert reversed_.per_class_iou == straight.per_class_iou[::-1]
    assert reversed_.miou == pytest.approx(straight.miou, rel=1e-12)


def test_extra_model_class_counts_as_miss(stride2):
    """The dataset knows bg, red, blue (green pixels are labelled bg): the model's "green" predictions
    are misses. Reference IoU computed by hand from the predictor's own labels, by class name."""
    b = Bundle.open(stride2)
    names = ("bg", "red", "blue")
    to_ds = np.array([0, 1, 0, 2], np.uint8)  # truth: green -> bg
    ds = qt.Dataset([qt.Sample(s.image, to_ds[s.labels], s.name) for s in VAL], classes=names)
    got = acc.DatasetScorer(ds, b.manifest, threads=1)(b.model_path("fp32"))
    with edgeseg.load(stride2, backend="onnxruntime", threads=1) as p:
        preds = [p(s.image).labels for s in ds]
    ious, ious_dropping_misses = [], []
    for c, n in enumerate(names):
        m = qt.CLASSES.index(n)
        tp = sum(int(((s.labels == c) & (q == m)).sum()) for s, q in zip(ds, preds))
        union = sum(int(((s.labels == c) | (q == m)).sum()) for s, q in zip(ds, preds))
        # the old gate dropped pixels predicted as a class the dataset lacks (model "green")
        kept = sum(int((((s.labels == c) | (q == m)) & (q != 2)).sum()) for s, q in zip(ds, preds))
        ious.append(tp / union)
        ious_dropping_misses.append(tp / kept)
    assert got == pytest.approx(100 * np.mean(ious), rel=1e-12)
    assert got < 100 * np.mean(ious_dropping_misses) - 1  # misses cost: green predictions are wrong


def test_agreement_scorer_decodes_like_the_runtime(stride2):
    b = Bundle.open(stride2)
    frames = [s.image for s in VAL[:4]]
    scorer = acc.AgreementScorer(frames, b.manifest, b.model_path("fp32"), threads=1)
    assert scorer(b.model_path("fp32")) == 100.0
    with edgeseg.load(stride2, backend="onnxruntime", threads=1) as p:
        ref = [p(f).labels for f in frames]
    assert [r.shape for r in ref] == [(32, 48)] * 4
    assert all(np.array_equal(a, r) for a, r in zip(scorer._ref, ref))


class _FloatLayerScore:
    """A scorer with hand-set numbers: 90 + 3 per layer of ``key`` left in float + 0.5 per other float
    layer (a compute node whose weight is not dequantized; ``fixed`` ones, always float, do not count),
    read from the model file itself."""

    name = "hand-set score"

    def __init__(self, key, fixed):
        self.key, self.fixed = set(key), set(fixed)

    def __call__(self, path):
        import onnx

        m = onnx.load(str(path))
        made_by = {o: n.op_type for n in m.graph.node for o in n.output}
        floats = {n.name for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose")
                  and made_by.get(n.input[1]) != "DequantizeLinear"}
        return 90.0 + 3.0 * len(floats & self.key) + 0.5 * len(floats - self.key - self.fixed)


def test_accuracy_control_keeps_the_fewest_most_sensitive_layers(trained, tmp_path):
    from edgeseg.quant.api import _accuracy_control

    q, full, fixed, convs = qt.cpu_quantizer(trained, GOOD[:4], tmp_path)  # the cpu profile keeps ConvTranspose in float
    prepared = q.prepared
    assert len(convs) == 4 and len(fixed) == 1
    key = [convs[2], convs[0]]  # the two layers that matter
    score = _FloatLayerScore(key, fixed)
    assert score(full.path) == 90.0 and score(prepared) == 97.0
    gate = _accuracy_control(q, full, score, None, 100.0, 90.0, sensitivity=False, max_drop=4.0, work=tmp_path,
                             progress=False)
    # ranked: the two key layers (gain 3) first; 1 float layer -> 93 (drop 7), 2 -> 96 (drop 4 <= 4)
    assert [s.gain for s in gate.sensitivity] == [3.0, 3.0, 0.5, 0.5]
    assert {s.name for s in gate.sensitivity[:2]} == set(key)
    assert gate.met and gate.int8_score == 96.0 and gate.curve == ((0, 90.0), (1, 93.0), (2, 96.0))
    assert {f.name for f in gate.float_nodes} == set(key) | fixed and score(gate.model) == 96.0
    # sensitivity only: the curve doubles the float layers, k = 1, 2, 4
    only = _accuracy_control(q, full, score, None, 100.0, 90.0, sensitivity=True, max_drop=None, work=tmp_path,
                             progress=False)
    assert only.model == full.path and only.int8_score == 90.0 and only.float_nodes == full.float_nodes
    assert only.curve == ((0, 90.0), (1, 93.0), (2, 96.0), (4, 97.0))
