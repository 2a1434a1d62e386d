"""LPSNet training: samples from panoptic results, mask-based FCOS targets and border-ness on a
hand-computed two-instance case, the losses against direct formulas; through the shared panoptic
trainer: its samples equal the direct path, a few steps on synthetic scenes lower the loss, resume
equals an uninterrupted run, and the CLI trains, checkpoints, initialises the encoder and resumes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.data import SceneGenerator
from edgeseg.errors import InputError
from edgeseg.models import create_model
from edgeseg.structures import ImageShape, PanopticResult, Segment
from edgeseg.train.lpsnet import (LPSNetEpoch, LPSNetTargets, PanopticSample, border_distance, borderness,
                                  giou_loss_ltrb, lpsnet_loss, lpsnet_targets, panoptic_sample)
from edgeseg.train.panoptic import PanopticTrainConfig, PanopticTrainer, synthetic_panoptic

CATEGORY_TO_CLASS = {10: 0, 11: 1, 13: 3, 14: 4, 15: 5}
THINGS = (3, 4, 5)
STRIDES = (8, 16, 32)
RANGES = ((0.0, 16.0), (16.0, 32.0), (32.0, math.inf))
SHAPES = [(4, 6), (2, 3), (1, 2)]  # a 32 x 48 image at strides 8, 16, 32


def _two_instances() -> PanopticResult:
    """32 x 48: row 0 void; stuff (cat 10) elsewhere; thing A (cat 13 -> class 3, thing 0) rows 2..13 x
    cols 2..21; thing B (cat 15 -> class 5, thing 2) rows 14..31 x cols 22..45 with a stuff hole (cat 11)
    rows 18..27 x cols 32..39; a crowd region (cat 14) rows 24..31 x cols 0..9."""
    seg = np.ones((32, 48), np.int32)
    seg[0] = 0
    seg[2:14, 2:22] = 2
    seg[14:32, 22:46] = 3
    seg[18:28, 32:40] = 5
    seg[24:32, 0:10] = 4
    segments = (Segment(1, 10, False), Segment(2, 13, True), Segment(3, 15, True), Segment(4, 14, True),
                Segment(5, 11, False))
    return PanopticResult(seg, segments)


# ---- samples ------------------------------------------------------------------------------------
def test_panoptic_sample_semantic_things_and_crowd():
    s = panoptic_sample(_two_instances(), CATEGORY_TO_CLASS, THINGS, crowd_ids=[4])
    assert s.masks.shape == (2, 32, 48) and s.labels.tolist() == [0, 2]
    assert s.masks[0].sum() == 12 * 20 and s.masks[1].sum() == 18 * 24 - 10 * 8
    assert s.crowd.sum() == 8 * 10 and s.crowd[30, 3] and not s.crowd[30, 12]
    # semantic: void -> 255, classes mapped from categories; the crowd keeps its class
    assert [int(s.semantic[p]) for p in [(0, 5), (1, 40), (5, 5), (20, 35), (20, 25), (30, 3)]] == [255, 0, 3, 1, 5, 4]


def test_panoptic_sample_errors_name_the_segment():
    with pytest.raises(InputError, match="category 15 is not in the category -> class map"):
        panoptic_sample(_two_instances(), {k: v for k, v in CATEGORY_TO_CLASS.items() if k != 15}, THINGS)
    with pytest.raises(InputError, match="segment 2 is a thing but its class 3 is not one of"):
        panoptic_sample(_two_instances(), CATEGORY_TO_CLASS, (4, 5))
    with pytest.raises(InputError, match="segment 5 is stuff but its class 1 is one of"):
        panoptic_sample(_two_instances(), CATEGORY_TO_CLASS, (1, 3, 4, 5))


# ---- targets ------------------------------------------------------------------------------------
def test_targets_on_a_hand_computed_two_instance_case():
    sample = panoptic_sample(_two_instances(), CATEGORY_TO_CLASS, THINGS, crowd_ids=[4])
    t = lpsnet_targets(sample, SHAPES, STRIDES, RANGES, num_things=3)
    assert len(t.labels) == 24 + 6 + 2
    # Locations: level 0 pixels rows (4, 12, 20, 28) x cols (4, 12, ..., 44) -> index 6 i + j; level 1
    # rows (8, 24) x cols (8, 24, 40) -> 24 + 3 i + j; level 2 (16, 16) -> 30 and (16, 48) (outside) -> 31.
    # A (box x 2..22, y 2..14): in-mask level-0 locations with max(l,t,r,b) <= 16 are (4,12) and (12,12);
    #   (4,4), (12,4) (max 17.5) and (4,20), (12,20) (18.5) fit no level; (8,8) at level 1 has 13.5 < 16.
    # B (box x 22..46, y 14..32): level 0 (28,36) (max 14.5); level 1 (24,24) (21.5) and (24,40) (18.5).
    #   (20,36) is inside B's box with max 14.5 but falls in the hole: negative (mask-based positives).
    # Crowd: level 0 (28,4) and level 1 (24,8) are ignored (-1).
    expected = np.full(32, 3)
    expected[[1, 7]] = 0
    expected[[22, 28, 29]] = 2
    expected[[18, 27]] = -1
    assert t.labels.tolist() == expected.tolist()
    assert t.positive.tolist() == [1, 7, 22, 28, 29]
    assert t.owner[[1, 7, 22, 28, 29]].tolist() == [0, 0, 1, 1, 1]
    assert (np.delete(t.owner, [1, 7, 22, 28, 29]) == -1).all()
    assert t.labels[16] == 3  # the hole location
    # (l, t, r, b) from the location (pixel centre: x = col + 0.5, y = row + 0.5)
    np.testing.assert_array_equal(t.ltrb[[1, 7, 22, 28, 29]], [[10.5, 2.5, 9.5, 9.5], [10.5, 10.5, 9.5, 1.5],
                                                               [14.5, 14.5, 9.5, 3.5], [2.5, 10.5, 21.5, 7.5],
                                                               [18.5, 10.5, 5.5, 7.5]])
    assert (np.delete(t.ltrb, [1, 7, 22, 28, 29], 0) == 0).all()
    # border-ness = d / (min(w, h) / 2): A is 20 x 12 (half 6), B is 24 x 18 (half 9). d: (4,12) is 3 px
    # below row 1 -> 2.5; (12,12) is 2 px above row 14 -> 1.5; (28,36) and (24,40) touch the hole -> 0.5;
    # (24,24) is 3 px right of column 21 -> 2.5.
    np.testing.assert_allclose(t.border[[1, 7, 22, 28, 29]], [2.5 / 6, 1.5 / 6, 0.5 / 9, 2.5 / 9, 0.5 / 9], rtol=1e-6)
    assert (np.delete(t.border, [1, 7, 22, 28, 29]) == 0).all()
    assert t.semantic is sample.semantic


def test_overlapping_masks_go_to_the_smaller_one():
    big = np.zeros((16, 16), bool)
    big[0:16, 0:16] = True  # area 256; at location (4,4): max(l,t,r,b) = 11.5
    small = np.zeros((16, 16), bool)
    small[2:8, 2:10] = True  # area 48; at (4,4): (2.5, 2.5, 5.5, 3.5)
    for order in ([big, small], [small, big]):
        labels = np.array([1, 0]) if order[0] is big else np.array([0, 1])
        sample = PanopticSample(np.zeros((16, 16), np.int64), np.stack(order), labels, np.zeros((16, 16), bool))
        t = lpsnet_targets(sample, [(2, 2)], [8], [(0.0, math.inf)], num_things=2)
        small_index = 1 if order[0] is big else 0
        assert t.labels.tolist() == [0, 1, 1, 1]
        assert t.owner.tolist() == [small_index, 1 - small_index, 1 - small_index, 1 - small_index]
        np.testing.assert_array_equal(t.ltrb[0], [2.5, 2.5, 5.5, 3.5])


def test_a_crop_without_instances_is_all_background_but_the_crowd():
    semantic = np.zeros((32, 48), np.int64)
    crowd = np.zeros((32, 48), bool)
    crowd[24:32, 0:10] = True
    t = lpsnet_targets(PanopticSample(semantic, np.zeros((0, 32, 48), bool), np.zeros(0, np.int64), crowd),
                       SHAPES, STRIDES, RANGES, num_things=3)
    expected = np.full(32, 3)
    expected[[18, 27]] = -1  # the crowd locations of the two-instance case
    assert t.labels.tolist() == expected.tolist() and (t.owner == -1).all() and not t.ltrb.any() and not t.border.any()


def test_border_distance_against_scipy_and_by_hand():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(3):
        mask = ndimage.binary_dilation(rng.random((30, 40)) > 0.8, iterations=2)
        ref = np.where(mask, ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] - 0.5, 0)
        np.testing.assert_allclose(border_distance(mask), ref, atol=1e-5)
    b = _two_instances().segment_ids == 3
    d = border_distance(b)
    assert math.isclose(float(d[29, 31]), math.sqrt(5) - 0.5, rel_tol=1e-6)  # nearest outside: hole corner (27, 32)
    assert d[31, 30] == 0.5 and d[20, 35] == 0  # next to the image edge (counts as border); in the hole


def test_borderness_on_a_rectangle_is_min_ltrb_over_half_the_short_side():
    mask = np.zeros((20, 30), bool)
    mask[3:15, 5:25] = True  # 20 x 12 box
    ys, xs = np.nonzero(mask)
    d = border_distance(mask)[ys, xs]
    cx, cy = xs + 0.5, ys + 0.5
    np.testing.assert_allclose(d, np.minimum.reduce([cx - 5, cy - 3, 25 - cx, 15 - cy]), atol=1e-6)
    got = borderness(d, 20.0, 12.0)
    # the deepest pixel centres of a 12-high box are 5.5 px from its border (even height: no centre row)
    assert math.isclose(float(got.max()), 5.5 / 6, rel_tol=1e-6)
    assert math.isclose(float(got.min()), 0.5 / 6, rel_tol=1e-6)
    assert borderness(7.0, 20.0, 12.0) == 1.0 and math.isclose(float(borderness(3.0, 20.0, 12.0)), 0.5)


# ---- losses -------------------------------------------------------------------------------------
def _giou_xyxy(a: np.ndarray, b: np.ndarray) -> float:
    """GIoU of two xyxy boxes (Rezatofighi et al., 2019), written from the definition."""
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area(a) + area(b) - inter
    enclose = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (enclose - union) / enclose


def _xyxy(ltrb: np.ndarray) -> np.ndarray:
    """The box of distances ``(l, t, r, b)`` from a location at the origin."""
    return np.array([-ltrb[0], -ltrb[1], ltrb[2], ltrb[3]])


def test_giou_loss_by_hand_and_against_the_xyxy_definition():
    # pred [-1, 1]^2 (area 4), target x [-2, 1] y [-0.5, 0.5] (area 3): inter 2, union 5, hull 6
    got = giou_loss_ltrb(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.5, 1.0, 0.5]]))
    assert math.isclose(float(got[0]), 1 - (0.4 - 1 / 6), rel_tol=1e-6)
    rng = np.random.default_rng(0)
    p, t = rng.uniform(0.1, 20, (50, 4)), rng.uniform(0.1, 20, (50, 4))
    ref = [1 - _giou_xyxy(_xyxy(a), _xyxy(b)) for a, b in zip(p, t)]
    np.testing.assert_allclose(giou_loss_ltrb(torch.tensor(p), torch.tensor(t)).numpy(), ref, rtol=1e-9)


def test_losses_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(1, 2, 2, 2, generator=g)  # one level 2 x 2, T = 2 things
    ltrb = torch.rand(1, 4, 2, 2, generator=g) * 10 + 1
    border = torch.randn(1, 1, 2, 2, generator=g)
    semantic = torch.randn(1, 3, 2, 2, generator=g)
    labels = np.array([0, 2, -1, 1])  # positive, background, ignored, positive
    box_t = np.array([[3, 4, 5, 6], [0, 0, 0, 0], [0, 0, 0, 0], [2, 2, 8, 1]], np.float32)
    border_t = np.array([0.25, 0, 0, 0.75], np.float32)
    sem_t = np.array([[0, 1, 2, 255]] * 4, np.int64)
    target = LPSNetTargets(labels, np.array([0, -1, -1, 1]), box_t, border_t, sem_t)
    out = {"cls_logits": [cls], "box_ltrb": [ltrb], "border_logits": [border], "semantic": semantic}
    got = lpsnet_loss(out, [target])
    # focal loss over the 3 non-ignored locations x 2 classes, divided by the 2 positives
    z = cls.flatten(2)[0].T.double().numpy()  # [4, 2]
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], float)
    p = 1 / (1 + np.exp(-z))
    pt = np.where(y == 1, p, 1 - p)
    at = np.where(y == 1, 0.25, 0.75)
    focal = (at * (1 - pt) ** 2 * -np.log(pt))[[0, 1, 3]].sum() / 2
    pred = ltrb.flatten(2)[0].T.double().numpy()
    box = np.mean([1 - _giou_xyxy(_xyxy(a), _xyxy(b)) for a, b in zip(pred[[0, 3]], box_t[[0, 3]].astype(float))])
    o = border.flatten()[[0, 3]].double().numpy()
    q = 1 / (1 + np.exp(-o))
    bce = np.mean(-(border_t[[0, 3]] * np.log(q) + (1 - border_t[[0, 3]]) * np.log(1 - q)))
    up = F.interpolate(semantic, size=(4, 4), mode="bilinear", align_corners=False)[0].double().numpy()
    logp = up - np.log(np.exp(up).sum(0, keepdims=True))
    ce = np.mean([-logp[sem_t[i, j], i, j] for i in range(4) for j in range(4) if sem_t[i, j] != 255])
    for key, ref in (("cls", focal), ("box", box), ("border", bce), ("semantic", ce)):
        assert math.isclose(float(got[key]), ref, rel_tol=1e-5), key
    assert math.isclose(float(got["loss"]), focal + box + bce + ce, rel_tol=1e-5)


def test_loss_without_positives_is_finite_and_differentiable():
    cls = torch.zeros(1, 2, 2, 2, requires_grad=True)
    ltrb, border = torch.ones(1, 4, 2, 2, requires_grad=True), torch.zeros(1, 1, 2, 2, requires_grad=True)
    semantic = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = LPSNetTargets(np.full(4, 2), np.full(4, -1), np.zeros((4, 4), np.float32), np.zeros(4, np.float32),
                           np.full((4, 4), 255, np.int64))
    out = {"cls_logits": [cls], "box_ltrb": [ltrb], "border_logits": [border], "semantic": semantic}
    got = lpsnet_loss(out, [target])
    got["loss"].backward()
    # all-background focal loss at p = 0.5: 8 terms of 0.75 * 0.25 * ln 2, divided by max(0 positives, 1)
    assert math.isclose(float(got["cls"]), 8 * 0.75 * 0.25 * math.log(2), rel_tol=1e-6)
    assert float(got["box"]) == float(got["border"]) == float(got["semantic"]) == 0.0


# ---- training through the shared panoptic trainer -----------------------------------------------
SIZE = ImageShape(64, 96)
AT_SIZE = {"scale": (1.0, 1.0), "hflip": False, "jitter": 0.0}  # augmentation off: frames stay as rendered


def _trainer(size: ImageShape = SIZE, **kw) -> PanopticTrainer:
    torch.manual_seed(0)
    model = create_model("test_lpsnet")  # the synthetic classes: 3 stuff, things 3, 4, 5
    cfg = {"epochs": 1, "steps_per_epoch": 1000, "batch_size": 2, "lr": 3e-3, "warmup_steps": 0, **kw}
    return PanopticTrainer(model, PanopticTrainConfig(size=size, **cfg))


def test_the_trainer_feeds_lpsnet_the_direct_samples():
    trainer = _trainer(**AT_SIZE)
    assert trainer.arch == "lpsnet" and trainer.parts == ("loss", "cls", "box", "border", "semantic")
    frames = [SceneGenerator(SIZE, seed=0).render(t) for t in (10, 60)]
    unknown = frames[1].panoptic.segments[-1]  # a thing of a category the model does not know: ignored, like void
    segments = frames[1].panoptic.segments[:-1] + (Segment(unknown.id, 99, True),)
    samples = [(frames[0].image, frames[0].panoptic, frozenset()),
               (frames[1].image, PanopticResult(frames[1].panoptic.segment_ids, segments), frozenset())]
    x, targets = trainer.prepare(samples, 0, augment=False)
    np.testing.assert_array_equal(x.numpy(), np.concatenate([trainer.spec.preprocess(f.image)[0] for f in frames]))
    identity = {c: c for c in range(6)}
    direct = panoptic_sample(frames[0].panoptic, identity, (3, 4, 5))
    for name in ("semantic", "masks", "labels", "crowd"):
        np.testing.assert_array_equal(getattr(targets[0], name), getattr(direct, name))
    full = panoptic_sample(frames[1].panoptic, identity, (3, 4, 5))
    gone = frames[1].panoptic.segment_ids == unknown.id
    assert gone.sum() > 0 and (targets[1].semantic[gone] == 255).all()
    np.testing.assert_array_equal(targets[1].semantic[~gone], full.semantic[~gone])
    np.testing.assert_array_equal(targets[1].masks, full.masks[:-1])
    assert unknown.isthing and targets[1].labels.tolist() == full.labels[:-1].tolist()


def test_a_few_steps_on_synthetic_scenes_lower_the_loss():
    size = ImageShape(96, 128)
    trainer = _trainer(size, **AT_SIZE)
    gen = SceneGenerator(size, seed=0)
    batch = [(f.image, f.panoptic, frozenset()) for f in (gen.render(10), gen.render(60))]
    assert sum(len(t.labels) for t in trainer.prepare(batch, 0)[1]) == 11
    history = [trainer.train_step(batch, 0) for _ in range(10)]  # the same batch each time; loss x 0.39
    assert set(history[0]) == {"loss", "cls", "box", "border", "semantic", "lr"}
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    for key in ("cls", "box", "border", "semantic"):
        assert last[key] < first[key], (key, first, last)


def _fit(tmp_path, name, losses: dict, **kw) -> PanopticTrainer:
    """A 2 x 2-step run on synthetic scenes at 96 x 64 (crop 64 x 48) that writes every step's
    losses into ``losses`` under its first sample index."""
    trainer = _trainer(crop=ImageShape(48, 64), epochs=2, steps_per_epoch=2, warmup_steps=1)
    trainer.out_dir, trainer.model_name, trainer.checkpoint_every = tmp_path / name, "test_lpsnet", 1
    step = trainer._step  # keyed by the step's first sample index (the key is read before the step runs)
    trainer._step = lambda x, targets: losses.setdefault(trainer.step * 2, step(x, targets))
    trainer.fit(lambda start: synthetic_panoptic(SIZE, 0, start), **kw)
    return trainer


def test_resume_equals_an_uninterrupted_run(tmp_path):
    full_losses, part_losses, resumed_losses = {}, {}, {}
    full = _fit(tmp_path, "a", full_losses)
    part = _fit(tmp_path, "b", part_losses, max_steps=3)  # stops mid-epoch 2
    assert part.step == 3 and part.epoch == 1 and sorted(part_losses) == [0, 2, 4]
    resumed = _fit(tmp_path, "c", resumed_losses, resume=tmp_path / "b")
    assert sorted(resumed_losses) == [6] and resumed.step == full.step == 4
    assert {**part_losses, **resumed_losses} == full_losses  # the same losses for the same sample indices
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    strip = lambda h: [(r.epoch, r.loss, r.cls, r.box, r.border, r.semantic, r.lr) for r in h]  # noqa: E731
    assert all(isinstance(r, LPSNetEpoch) for r in resumed.history) and strip(resumed.history) == strip(full.history)
    assert resumed.history[1].loss == pytest.approx((full_losses[4]["loss"] + full_losses[6]["loss"]) / 2, rel=1e-12)
    hist = json.loads((tmp_path / "c" / "history.json").read_text())
    assert [sorted(r) for r in hist["history"]] == [sorted(LPSNetEpoch.__dataclass_fields__)] * 2


def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "train_panoptic.py"
    spec = importlib.util.spec_from_file_location("train_panoptic", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_cli_trains_lpsnet_checkpoints_initialises_the_encoder_and_resumes(tmp_path, caplog):
    from edgeseg.data.synthetic import CLASSES
    from edgeseg.models import load_checkpoint

    tool = _tool()
    out = tmp_path / "run"
    args = ["--model", "test_lpsnet", "--data", "synthetic", "--size", "96x64", "--epochs", "3", "--steps-per-epoch", "1",
            "--batch", "4", "--lr", "1e-2", "--warmup", "0", "--threads", "1", "--eval-frames", "2", "--out", str(out)]
    assert tool.main(args) == 0
    history = json.loads((out / "history.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[2]["loss"] < 0.9 * history[0]["loss"], history  # 4.72 -> 3.71 (3 different batches)
    model = load_checkpoint(out / "model.safetensors")
    extra = model.checkpoint_meta.extra
    assert extra["task"] == "panoptic" and extra["classes"] == list(CLASSES) and extra["thing_classes"] == [3, 4, 5]
    assert extra["category_ids"] == list(range(6)) and extra["input_spec"]["size"] == {"height": 64, "width": 96}
    assert type(model).__name__ == "LPSNet" and model.thing_classes == (3, 4, 5)
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, last[k]) for k, v in model.state_dict().items())
    report = json.loads((out / "eval.json").read_text())
    assert report["frames"] == 2 and 0.0 <= report["all"]["pq"] <= 1.0
    # --init-encoder from that checkpoint: every encoder tensor (LPSNet's encoder is model.encoder too)
    encoder = [k for k in last if k.startswith("encoder.")]
    caplog.set_level("INFO", logger="train_panoptic")
    init = args[:-1] + [str(tmp_path / "init"), "--epochs", "1", "--eval-frames", "0", "--init-encoder",
                        str(out / "model.safetensors")]
    assert tool.main(init) == 0
    assert f"encoder: {len(encoder)} tensors from {out / 'model.safetensors'}" in caplog.messages
    # resume: one more epoch continues the run
    run = json.loads((out / "run.json").read_text())
    run["epochs"] = 4
    (out / "run.json").write_text(json.dumps(run))
    assert tool.main(["--out", str(out), "--resume", "--eval-frames", "0", "--threads", "1"]) == 0  # threads: process-wide
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())["history"]] == [1, 2, 3, 4]
