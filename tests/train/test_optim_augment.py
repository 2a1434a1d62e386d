"""Poly schedule values by hand, optimizer groups, augmentation and the FLOP counter."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from edgeseg.errors import InputError  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402
from edgeseg.train.augment import AugmentConfig, augment, color_jitter, pad_to, random_crop  # noqa: E402
from edgeseg.train.flops import count_flops  # noqa: E402
from edgeseg.train.optim import PolySchedule, build_sgd, param_groups  # noqa: E402


def test_poly_schedule_hand_values():
    s = PolySchedule(total=10, power=1.0, warmup=2, start=0.1)
    # step 0: (1 - 0) * 0.1; step 1: 0.9 * (0.1 + 0.9 * 1/2); then plain (1 - step/10)
    expected = [0.1, 0.9 * 0.55, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert [s.factor(i) for i in range(11)] == pytest.approx(expected, abs=1e-12)
    assert s.factor(25) == 0.0  # clamped past the end
    s9 = PolySchedule(total=100, power=0.9)
    assert s9.factor(50) == pytest.approx(0.5**0.9)  # 0.535886731...
    assert s9.factor(50) == pytest.approx(0.5358867312681466)
    with pytest.raises(InputError):
        PolySchedule(total=0)


def test_schedule_applies_to_optimizer_groups():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_sgd(m, lr=0.2, momentum=0.9, weight_decay=5e-4)
    s = PolySchedule(total=4, power=1.0)
    s.apply(opt, 2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1])
    s.apply(opt, 1)  # from initial_lr, not compounding
    assert opt.param_groups[0]["lr"] == pytest.approx(0.15)


def test_no_weight_decay_on_bias_and_norm():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))
    decay, no_decay = param_groups(m, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias)}


def test_pad_and_crop_pad_labels_with_ignore():
    img = np.full((2, 3, 3), 7, np.uint8)
    lab = np.ones((2, 3), np.uint8)
    pi, pl = pad_to(img, lab, ImageShape(4, 5), pad_value=(1, 2, 3))
    assert pl.shape == (4, 5) and (pl[:2, :3] == 1).all() and (pl[2:] == 255).all() and (pl[:, 3:] == 255).all()
    assert pi[3, 4].tolist() == [1, 2, 3] and pi[0, 0].tolist() == [7, 7, 7]
    ci, cl = random_crop(img, lab, ImageShape(2, 2), np.random.default_rng(0))
    assert ci.shape == (2, 2, 3) and cl.shape == (2, 2) and (cl == 1).all()


def test_color_jitter_identity_and_brightness_factor():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_jitter(img, np.random.default_rng(0), 0, 0, 0), img)
    # brightness only: the factor is the uniform draw after the permutation draw
    r = np.random.default_rng(3)
    r.permutation(3)
    f = r.uniform(0.5, 1.5)
    ref = np.rint(np.clip(img.astype(np.float32) * np.float32(f), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(color_jitter(img, np.random.default_rng(3), 0.5, 0, 0), ref)


def test_augment_keeps_image_and_labels_aligned_and_is_seeded():
    # 4 colour blocks; the image encodes its label, so geometry must move both together
    lab = np.zeros((60, 80), np.uint8)
    lab[:30, 40:] = 1
    lab[30:, :40] = 2
    lab[30:, 40:] = 3
    img = np.repeat((lab * 60)[..., None], 3, axis=2).astype(np.uint8)
    cfg = AugmentConfig(ImageShape(48, 64), scale=(0.5, 2.0), brightness=0, contrast=0, saturation=0)
    for seed in range(5):
        a_img, a_lab = augment(img, lab, cfg, np.random.default_rng(seed))
        assert a_img.shape == (48, 64, 3) and a_lab.shape == (48, 64)
        valid = a_lab != 255
        # bilinear image vs nearest labels differ only along block edges (about one pixel wide)
        agree = np.rint(a_img[..., 0] / 60.0).astype(int) == a_lab.astype(int)
        assert agree[valid].mean() > 0.97
    x1 = augment(img, lab, cfg, np.random.default_rng(9))
    x2 = augment(img, lab, cfg, np.random.default_rng(9))
    np.testing.assert_array_equal(x1[1], x2[1])
    np.testing.assert_array_equal(x1[0], x2[0])


def test_flop_counter_hand_count():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, stride=2),  # out 8x4x5 -> 160 elems x 3 x 9 = 4320 MACs
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 160 x 1 x 9 = 1440
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # in 160 elems x 4 x 4 = 2560
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),  # 24
    )
    fc = count_flops(m, ImageShape(8, 10))
    assert fc.macs == 4320 + 1440 + 2560 + 24
    assert fc.flops == 2 * fc.macs
    assert fc.params == sum(p.numel() for p in m.parameters())


def test_aspect_change_stretches_within_its_range_and_keeps_the_area():
    lab = np.zeros((100, 100), np.uint8)
    lab[30:70, 30:70] = 1  # a 40x40 square, centred
    img = np.repeat((lab * 200)[..., None], 3, axis=2).astype(np.uint8)
    cfg = AugmentConfig(ImageShape(100, 100), scale=(1.0, 1.0), hflip=False, brightness=0, contrast=0,
                        saturation=0, aspect=0.5)
    ratios = []
    for seed in range(40):
        _, a_lab = augment(img, lab, cfg, np.random.default_rng(seed))
        ys, xs = np.nonzero(a_lab == 1)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        ratios.append(w / h)
        assert h * w == pytest.approx(1600, rel=0.08)  # the area is kept (up to rounding)
    assert 1 / 1.5 - 0.05 <= min(ratios) < 0.85 and 1.2 < max(ratios) <= 1.5 + 0.05  # both ways, within 1+a
    plain = AugmentConfig(ImageShape(100, 100), scale=(1.0, 1.0), hflip=False, brightness=0, contrast=0, saturation=0)
    _, same = augment(img, lab, plain, np.random.default_rng(0))
    assert (same == lab).all()  # aspect 0: no stretch
    with pytest.raises(InputError, match="aspect"):
        AugmentConfig(ImageShape(100, 100), aspect=-0.1)


def test_bad_augmentation_settings_fail_when_the_run_is_configured():
    # before the datasets are opened and cached (minutes for a large mix), not at the trainer
    from edgeseg.train.trainer import TrainConfig

    with pytest.raises(InputError, match="aspect change must be in"):
        TrainConfig(epochs=1, size=ImageShape(64, 64), aspect=-0.5)
    with pytest.raises(InputError, match="scale range"):
        TrainConfig(epochs=1, size=ImageShape(64, 64), scale=(2.0, 1.0))
    cfg = TrainConfig(epochs=1, size=ImageShape(64, 64), aspect=0.3, jitter=0.1)
    assert cfg.augment_config().aspect == 0.3 and cfg.augment_config().brightness == 0.1
