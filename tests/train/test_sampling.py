"""Rare-class sampling: DAFormer's class probabilities on a hand-computed case, the frames each class
draws from, determinism per (seed, epoch), and the trainer feeding exactly the sampled frames."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from edgeseg.data.base import Sample
from edgeseg.errors import InputError
from edgeseg.train.class_weights import ClassStats, class_stats, class_weights, frame_class_pixels, label_counts
from edgeseg.train.sampling import RareClassSampler

from corner_frames import corner_frames

# 4 frames x 3 classes: class 0 everywhere, class 1 only in frame 0, class 2 in frames 2 and 3
PIXELS = np.array([[90, 10, 0], [100, 0, 0], [50, 0, 50], [99, 0, 1]])


def test_class_probabilities_by_hand():
    s = RareClassSampler.from_pixels(PIXELS, temperature=0.5)
    share = [339 / 400, 10 / 400, 51 / 400]
    e = [math.exp((1 - f) / 0.5) for f in share]
    assert s.class_probs == pytest.approx([v / sum(e) for v in e], abs=1e-12)
    assert [f.tolist() for f in s.frames] == [[0, 1, 2, 3], [0], [2, 3]]
    p = s.class_probs
    assert s.frame_probs() == pytest.approx([p[0] / 4 + p[1], p[0] / 4, p[0] / 4 + p[2] / 2, p[0] / 4 + p[2] / 2])


def test_min_share_drops_specks_but_keeps_a_class_that_only_has_specks():
    s = RareClassSampler.from_pixels(PIXELS, temperature=0.5, min_share=0.05)
    assert s.frames[2].tolist() == [2]  # 1 pixel in 100 is a speck at 5 %
    only_specks = np.array([[999, 1], [1000, 0]])
    assert RareClassSampler.from_pixels(only_specks, 0.5, min_share=0.05).frames[1].tolist() == [0]


def test_absent_class_is_never_drawn_and_low_temperature_favours_the_rarest():
    pixels = np.array([[900, 100, 0], [1000, 0, 0]])
    s = RareClassSampler.from_pixels(pixels, temperature=0.01)
    assert s.class_probs[2] == 0 and s.frames[2].size == 0
    assert s.class_probs[1] > 0.9999
    assert set(s.indices(0, 0, 200)) == {0}


def test_draws_follow_the_frame_probabilities_and_depend_only_on_seed_and_epoch():
    s = RareClassSampler.from_pixels(PIXELS, temperature=0.5)
    draws = s.indices(seed=3, epoch=1, n=40000)
    assert np.bincount(draws, minlength=4) / 40000 == pytest.approx(s.frame_probs(), abs=0.01)
    assert s.indices(3, 1) == s.indices(3, 1) and len(s.indices(3, 1)) == 4
    assert s.indices(3, 1, 50) != s.indices(3, 2, 50)


def test_bad_inputs_name_the_fix():
    with pytest.raises(InputError, match="temperature"):
        RareClassSampler.from_pixels(PIXELS, 0.0)
    with pytest.raises(InputError, match="no labelled pixel"):
        RareClassSampler.from_pixels(np.zeros((2, 3), np.int64), 0.1)
    with pytest.raises(InputError, match="number of classes"):
        label_counts(np.array([[0, 7]], np.uint8), 3)


def test_frame_counts_ignore_void_and_agree_with_class_stats():
    labels = [np.array([[0, 1, 255], [1, 1, 2]], np.uint8), np.array([[255, 255], [2, 2]], np.uint8)]
    data = [Sample(image=np.zeros((2, 3 - i, 3), np.uint8), labels=lab) for i, lab in enumerate(labels)]
    pixels = frame_class_pixels(data, 3)
    assert pixels.tolist() == [[1, 3, 1], [0, 0, 2]]
    stats = class_stats(labels, 3)
    assert stats.pixels.tolist() == pixels.sum(0).tolist()
    assert stats.image_pixels.tolist() == [5, 5, 7]
    from_frames = ClassStats.from_frame_pixels(pixels)
    assert from_frames.pixels.tolist() == [1, 3, 3] and from_frames.image_pixels.tolist() == [5, 5, 7]

    class Data(list):
        classes = ("a", "b", "c")

    # ENet weights from the one label pass: w_c = 1 / ln(1.02 + p_c), p = (1, 3, 3) / 7
    assert class_weights(Data(data), "enet") == pytest.approx([1 / math.log(1.02 + k / 7) for k in (1, 3, 3)])


def test_trainer_feeds_the_sampled_frames():
    torch = pytest.importorskip("torch")
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape
    from edgeseg.train import TrainConfig, Trainer

    size = ImageShape(16, 16)
    frames = corner_frames(6, rare_at=5)  # frame k is all class 0 except frame 5, which holds the rare class 1
    cfg = TrainConfig(epochs=1, size=size, batch_size=6, scale=(1.0, 1.0), hflip=False, jitter=0.0, progress=False,
                      threads=1, rare_sampling=0.01)
    trainer = Trainer(create_model("test_fcn8s", num_classes=2), frames, replace(cfg, loss="wce"))
    # the class weights come from the same label pass as the sampler: 16 rare pixels of 1,536
    hand = [1 / math.log(1.02 + 1520 / 1536), 1 / math.log(1.02 + 16 / 1536)]
    assert class_weights(frames, "enet") == pytest.approx(hand)
    logits, target = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(1, 4, 4).long()
    target[0, :2] = 1
    want = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor(hand, dtype=torch.float32))
    assert float(trainer.loss_fn(logits, target)) == pytest.approx(float(want), rel=1e-5)
    order = trainer._epoch_indices()
    assert order == trainer.sampler.indices(0, 0) and len(order) == 6 and order.count(5) >= 5
    from edgeseg.train.data import train_loader

    images, target = next(iter(train_loader(trainer.train_set, trainer.loader_cfg, 0, order)))
    assert [int(t.sum()) for t in target] == [16 if i == 5 else 0 for i in order]
    with pytest.raises(InputError, match="rare-sampling"):
        TrainConfig(epochs=1, size=size, rare_sampling=-1.0)
    assert torch.is_tensor(images)


def test_resume_under_rare_class_sampling_equals_an_uninterrupted_run(tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.data.synthetic import SyntheticDataset
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape
    from edgeseg.train import TrainConfig, Trainer, seed_everything

    size = ImageShape(48, 64)
    ds = SyntheticDataset(16, size, seed=3, stream=0)

    class Data(list):
        classes = ds.classes

    data = Data(ds[i] for i in range(len(ds)))
    cfg = TrainConfig(epochs=2, size=size, batch_size=8, lr=0.2, warmup_epochs=0.5, scale=(0.75, 1.25),
                      progress=False, threads=1, rare_sampling=0.05)

    def model():
        seed_everything(0)
        return create_model("test_fcn8s", num_classes=6)

    torch.set_num_threads(1)
    full = Trainer(model(), data, cfg).fit()
    Trainer(model(), data, cfg, out_dir=tmp_path).fit(epochs=1)
    resumed = Trainer(model(), data, cfg, out_dir=tmp_path).fit(resume=tmp_path)
    assert [r.loss for r in resumed.history] == [r.loss for r in full.history]
