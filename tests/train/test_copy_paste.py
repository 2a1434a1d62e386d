"""Simple Copy-Paste for instance training: a hand-made paste (pixels, occlusion, dropped instances),
the random choice of pasted instances, and the trainer's batches (off by default, seeded per sample)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from edgeseg.data.synthetic import THING_CLASSES
from edgeseg.errors import InputError
from edgeseg.models import create_model
from edgeseg.structures import ImageShape
from edgeseg.train.instance import (
    InstanceSample, InstanceTrainConfig, InstanceTrainer, augment_sample, copy_paste, paste_instances,
    synthetic_instances,
)


def _mask(y0, y1, x0, x1, shape=(8, 10)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _sample(colour, masks, labels, shape=(8, 10)):
    image = np.full((*shape, 3), colour, np.uint8)
    masks = np.stack(masks) if masks else np.zeros((0, *shape), bool)
    return InstanceSample(image, masks, np.asarray(labels, np.int64))


def test_paste_by_hand():
    # target: instance A (rows 0-3, cols 0-3, 16 px) and B (rows 5-6, cols 5-6, 4 px), grey 10
    target = _sample(10, [_mask(0, 4, 0, 4), _mask(5, 7, 5, 7)], [0, 1])
    # source: C covers A's lower-right 2x2 (rows 2-5, cols 2-5), D covers all of B; E is not chosen; white 200
    source = _sample(200, [_mask(2, 6, 2, 6), _mask(4, 8, 4, 8), _mask(0, 1, 9, 10)], [2, 1, 0])
    out = paste_instances(target, source, np.array([True, True, False]))
    cover = _mask(2, 6, 2, 6) | _mask(4, 8, 4, 8)
    assert np.array_equal(out.image[..., 0], np.where(cover, 200, 10))  # source pixels exactly where pasted
    assert out.image[0, 9, 0] == 10  # E was not chosen: its pixel stays the target's
    # A keeps 16 - 4 = 12 pixels; B is covered entirely and dropped; C and D follow
    assert out.labels.tolist() == [0, 2, 1]
    assert [int(m.sum()) for m in out.masks] == [12, 16, 16]
    assert np.array_equal(out.masks[0], _mask(0, 4, 0, 4) & ~_mask(2, 4, 2, 4))
    assert not (out.masks[0] & out.masks[1]).any()  # the kept part of A is never under a pasted instance
    # nothing chosen: the target unchanged
    assert paste_instances(target, source, np.zeros(3, bool)) is target


def test_paste_refuses_samples_of_two_sizes():
    with pytest.raises(InputError, match="copy-paste needs samples of one size"):
        paste_instances(_sample(0, [], []), _sample(0, [_mask(0, 2, 0, 2, (6, 6))], [0], (6, 6)), np.array([True]))


def test_random_choice_takes_each_instance_with_probability_half_and_at_least_one():
    target = _sample(0, [], [])
    source = _sample(255, [_mask(i, i + 1, 0, 10) for i in range(4)], [0, 1, 2, 0])
    counts = []
    for seed in range(2000):
        out = copy_paste(target, source, np.random.default_rng(seed))
        counts.append(len(out.labels))
        assert out.image[..., 0].sum() == 255 * 10 * len(out.labels)  # one full row per pasted instance
    counts = np.asarray(counts)
    assert counts.min() == 1 and counts.max() == 4
    # P(k) = C(4, k) / 16 for k >= 2; k = 1 also takes the empty draw: (4 + 1) / 16
    expected = {1: 5 / 16, 2: 6 / 16, 3: 4 / 16, 4: 1 / 16}
    for k, p in expected.items():
        assert abs(np.mean(counts == k) - p) < 0.03, (k, np.mean(counts == k), p)
    # a source with no instance leaves the target as it is
    assert copy_paste(source, target, np.random.default_rng(0)) is source


def _trainer(p):
    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3, thing_classes=list(THING_CLASSES))
    return InstanceTrainer(model, InstanceTrainConfig(size=ImageShape(48, 64), batch_size=4, copy_paste=p))


def test_trainer_pastes_within_the_batch_and_is_seeded_per_sample():
    frames = list(itertools.islice(synthetic_instances(ImageShape(48, 64), seed=3, scenes=4), 4))
    _, plain = _trainer(0.0).prepare(frames, 8)
    _, always = _trainer(1.0).prepare(frames, 8)
    _, again = _trainer(1.0).prepare(frames, 8)
    for a, b in zip(always, again):  # a function of (seed, sample index): resume sees the same batch
        assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    changed = 0
    for j, (p, a) in enumerate(zip(plain, always)):
        # each sample equals its plain augmentation with instances of one other sample pasted on it
        sources = [paste_instances(p, plain[k], chosen) for k in range(4) if k != j
                   for chosen in itertools.product([False, True], repeat=len(plain[k].labels)) if any(chosen)]
        if not any(len(plain[k].labels) for k in range(4) if k != j):
            assert np.array_equal(a.image, p.image)
            continue
        assert any(np.array_equal(a.image, s.image) and np.array_equal(a.masks, s.masks)
                   and np.array_equal(a.labels, s.labels) for s in sources), j
        changed += len(a.labels) > len(p.labels) or not np.array_equal(a.image, p.image)
    assert changed >= 2
    # p = 0: each sample is its own augmentation from its own stream (seed, 31, index), untouched by pasting
    cfg = _trainer(0.0).config
    for j, (image, result) in enumerate(frames):
        own = augment_sample(image, result, THING_CLASSES, cfg.size, np.random.default_rng((cfg.seed, 31, 8 + j)),
                             cfg.scale, cfg.hflip)
        assert np.array_equal(plain[j].image, own.image) and np.array_equal(plain[j].masks, own.masks)


def test_copy_paste_must_be_a_probability():
    with pytest.raises(InputError, match="copy_paste is a probability"):
        InstanceTrainConfig(size=ImageShape(48, 64), copy_paste=1.5)
    with pytest.raises(InputError, match="the batch is 1") as e:
        InstanceTrainConfig(size=ImageShape(48, 64), batch_size=1, copy_paste=0.5)
    assert "--batch 2" in str(e.value.fix)


# ---- semantic: rare-class copy-paste (edgeseg.train.copy_paste) ---------------------------------
from corner_frames import corner_frames  # noqa: E402
from edgeseg.train.copy_paste import RareClassPaste, paste_classes  # noqa: E402

# 4 frames x 4 classes: 0 and 1 common, 2 in frames 1 and 3, 3 a speck in frame 2 (shares 190, 164, 45, 9 of 408)
PIXELS = np.array([[60, 40, 0, 0], [40, 40, 20, 0], [60, 39, 0, 1], [30, 45, 25, 8]])


def test_paste_classes_by_hand():
    image, labels = np.full((2, 3, 3), 10, np.uint8), np.array([[0, 0, 1], [255, 1, 1]], np.uint8)
    d_image = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) + 100
    d_labels = np.array([[2, 0, 3], [3, 255, 1]], np.uint8)
    out_image, out_labels = paste_classes(image, labels, d_image, d_labels, np.array([2, 3]))
    assert out_labels.tolist() == [[2, 0, 3], [3, 1, 1]]  # void under a pasted pixel takes the donor's class
    assert out_image[0, 0].tolist() == [100, 101, 102] and out_image[0, 2].tolist() == [106, 107, 108]
    assert out_image[1, 0].tolist() == [109, 110, 111]
    assert (out_image[0, 1] == 10).all() and (out_image[1, 1:] == 10).all()
    with pytest.raises(InputError, match="copy-paste needs frames of one size"):
        paste_classes(image, labels, d_image[:1], d_labels[:1], np.array([2]))


def test_rare_classes_and_donors_by_hand():
    p = RareClassPaste.from_pixels(PIXELS, 0.5)
    assert p.classes.tolist() == [2, 3]  # shares 45/408 and 9/408 are below 1/4
    assert p.donors.tolist() == [1, 2, 3]  # frame 2 holds class 3 on 1 % of its pixels
    assert RareClassPaste.from_pixels(PIXELS, 0.5, min_share=0.05).donors.tolist() == [1, 3]
    assert RareClassPaste.from_pixels(PIXELS, 1.0, classes=[1]).donors.tolist() == [0, 1, 2, 3]
    draws = [p.donor(np.random.default_rng(s)) for s in range(4000)]
    pasted = [d for d in draws if d is not None]
    assert abs(len(pasted) / 4000 - 0.5) < 0.03
    assert np.bincount(pasted, minlength=4)[1:] / len(pasted) == pytest.approx([1 / 3] * 3, abs=0.04)
    for bad, match in (({"probability": 0.0}, "probability"), ({"probability": 1.0, "classes": [4]}, "class indices"),
                       ({"probability": 1.0, "classes": []}, "class indices")):
        with pytest.raises(InputError, match=match):
            RareClassPaste.from_pixels(PIXELS, **bad)
    with pytest.raises(InputError, match="copy-paste: the training labels hold no labelled pixel"):
        RareClassPaste.from_pixels(np.zeros((2, 3), np.int64), 0.5)
    with pytest.raises(InputError, match=r"copy-paste needs per-frame class counts \[N, C\]"):
        RareClassPaste.from_pixels(np.zeros((0, 3), np.int64), 0.5)
    with pytest.raises(InputError, match="no training frame holds"):
        RareClassPaste.from_pixels(np.array([[10, 0], [10, 0]]), 1.0, classes=[1])


def _frames():
    return corner_frames(4, rare_at=3)  # frame k: grey 40k, class 0 but for class 1 in a 4x4 corner of frame 3


def test_trainer_pastes_rare_classes_from_donors():
    from edgeseg.models import create_model
    from edgeseg.train import TrainConfig, Trainer
    from edgeseg.train.augment import augment

    data = _frames()
    cfg = TrainConfig(epochs=1, size=ImageShape(16, 16), batch_size=4, scale=(0.8, 1.2), hflip=True, jitter=0.0,
                      progress=False, threads=1, copy_paste=1.0, seed=5)
    trainer = Trainer(create_model("test_fcn8s", num_classes=2), data, cfg)
    paste = trainer.train_set.paste
    assert paste.classes.tolist() == [1] and paste.donors.tolist() == [3]
    ts = trainer.train_set
    ts.set_epoch(2)
    for i in range(4):
        x, lab = ts[i]
        # by hand: the sample's own augmentation, then the donor's with the paste stream, pasted
        image, labels = augment(data[i].image, data[i].labels, ts.cfg, np.random.default_rng([5, 2, i]))
        prng = np.random.default_rng([5, 2, i, 41])
        assert paste.donor(prng) == 3
        d_image, d_labels = augment(data[3].image, data[3].labels, ts.cfg, prng)
        want_image, want_labels = paste_classes(image, labels, d_image, d_labels, np.array([1]))
        assert np.array_equal(lab, want_labels) and (lab == 1).sum() == (d_labels == 1).sum() > 0
        assert np.allclose(x, ts.spec.normalize(want_image).transpose(2, 0, 1))
    x0, lab0 = ts[0]
    assert np.array_equal(ts[0][1], lab0)  # a function of (seed, epoch, index)
    ts.paste = None  # off: the plain augmentation, the sample's own stream untouched
    assert not (ts[0][1] == 1).any()
    with pytest.raises(InputError, match="copy-paste probability"):
        TrainConfig(epochs=1, size=ImageShape(16, 16), copy_paste=2.0)


def test_named_paste_classes():
    from dataclasses import replace

    from edgeseg.models import create_model
    from edgeseg.train import TrainConfig, Trainer

    cfg = TrainConfig(epochs=1, size=ImageShape(16, 16), batch_size=4, progress=False, threads=1, copy_paste=0.5,
                      paste_classes=("common",))
    trainer = Trainer(create_model("test_fcn8s", num_classes=2), _frames(), cfg)
    assert trainer.train_set.paste.classes.tolist() == [0] and trainer.train_set.paste.donors.tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="--paste-classes pole: not classes of the training data") as e:
        Trainer(create_model("test_fcn8s", num_classes=2), _frames(), replace(cfg, paste_classes=("pole",)))
    assert "common, rare" in str(e.value.fix)
    with pytest.raises(InputError, match="copy-paste is off"):
        replace(cfg, copy_paste=0.0)
