"""Distillation (``--teacher``): the class map, the loss by hand, a teacher's argmax equal to its own
predictor's labels, teachers per mixture part (the same with loader workers), the loss the loop adds,
and the errors for bad teachers."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.data.mixture import Mixture  # noqa: E402
from edgeseg.data.synthetic import SyntheticDataset  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402
from edgeseg.structures import CAMVID_CLASSES, ImageShape, InputSpec  # noqa: E402
from edgeseg.train import TrainConfig, Trainer, seed_everything  # noqa: E402
from edgeseg.train.augment import AugmentConfig  # noqa: E402
from edgeseg.train.data import LoaderConfig, TrainSet, train_loader  # noqa: E402
from edgeseg.train.job import InMemory  # noqa: E402
from edgeseg.train.distill import (DistillConfig, Teacher, TeacherMember, class_map, distill_loss,  # noqa: E402
                                   open_teachers)

SIZE = ImageShape(120, 160)  # the shipped `shapes` bundle's network size
CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


@pytest.fixture(scope="module")
def shapes_data():
    torch.set_num_threads(1)
    return InMemory(SyntheticDataset(8, SIZE, seed=5, stream=0))


def test_class_map_by_name_and_through_cityscapes_to_camvid():
    m = class_map(("b", "a", "extra"), ("a", "b"))
    assert m.tolist() == [[0, 1, 0], [1, 0, 0]]  # by name; a teacher class the student lacks feeds nothing
    m = class_map(CITYSCAPES, CAMVID_CLASSES)
    fed = {CAMVID_CLASSES[s]: sorted(CITYSCAPES[t] for t in np.flatnonzero(m[s])) for s in range(len(CAMVID_CLASSES))}
    assert fed["building"] == ["building", "wall"]
    assert fed["pavement"] == ["sidewalk"]
    assert fed["car"] == ["bus", "car", "truck"]
    assert fed["bicyclist"] == ["bicycle", "motorcycle", "rider"]
    assert fed["sign_symbol"] == ["traffic light", "traffic sign"]
    assert fed["pedestrian"] == ["person"]
    dropped = [CITYSCAPES[t] for t in np.flatnonzero(m.sum(0) == 0)]
    assert dropped == ["terrain", "train"]  # void in CamVid's classes, as issue 14 maps them


def test_class_map_names_the_classes_no_teacher_class_feeds():
    with pytest.raises(InputError, match="class\\(es\\) c .*student classes: a, b, c"):
        class_map(("a", "b"), ("a", "b", "c"))


def test_distill_loss_by_hand():
    # one image, 2 classes, 3 pixels: student p = (1/4, 3/4) everywhere; teacher (1/2, 1/2) on a labelled pixel,
    # a pixel labelled 255 (ignored) and a pixel without a teacher (zeros: a mixture part with none)
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 1, 3).clone()
    soft = torch.tensor([[0.5, 0.9, 0.0], [0.5, 0.1, 0.0]]).view(1, 2, 1, 3)
    target = torch.tensor([[[0, 255, 1]]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.5 ln(4/3)
    assert float(distill_loss(logits, soft, target)) == pytest.approx(kl, abs=1e-6)
    # at T = 2 the same probabilities come from logits twice as far apart; the term is scaled by T^2
    assert float(distill_loss(2 * logits, soft, target, temperature=2.0)) == pytest.approx(4 * kl, abs=1e-6)
    assert float(distill_loss(logits, soft, torch.full_like(target, 255))) == 0.0


def test_teacher_argmax_equals_its_predictors_labels(shapes_data):
    from edgeseg.predictor import load

    member = TeacherMember("shapes", shapes_data.classes)
    with load("shapes", backend="onnxruntime", precision="fp32", device="cpu", threads=1) as pred:
        for k in range(3):
            img = shapes_data[k].image
            big = np.ascontiguousarray(np.repeat(np.repeat(img, 2, 0), 2, 1))  # another frame size: resized back
            for frame in (img, big):
                p = member.probs(frame)
                assert p.shape == (6, *frame.shape[:2])
                np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
                agree = float((p.argmax(0) == pred(frame).labels).mean())
                assert agree > 0.999
    # an ensemble of one bundle twice is that bundle; a flip-averaged teacher is mirror-symmetric
    one, two = Teacher([member]).probs(img), Teacher([member, member]).probs(img)
    np.testing.assert_allclose(one, two, atol=1e-6)
    f = Teacher([member], flip=True)
    np.testing.assert_allclose(f.probs(img), f.probs(np.ascontiguousarray(img[:, ::-1]))[:, :, ::-1], atol=1e-5)


def test_teachers_per_mixture_part_and_the_same_with_workers(shapes_data):
    mix = Mixture([(shapes_data, 1), (shapes_data, 1)], ["a", "b"])
    teachers = open_teachers(DistillConfig("none;shapes"), 2, shapes_data.classes)
    assert teachers[0] is None and teachers[1].name == "shapes"
    ts = TrainSet(mix, AugmentConfig(SIZE, scale=(0.75, 1.25)), InputSpec(size=SIZE), seed=1, teachers=teachers)
    _, labels, soft = ts[1]
    assert soft.shape == (6, *labels.shape) and not soft.any()  # part 0: no teacher
    _, labels, soft = ts[8 + 1]
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
    order = [1, 9, 10, 2]
    a = next(iter(train_loader(ts, LoaderConfig(batch_size=4, workers=0, seed=1), 0, order)))
    b = next(iter(train_loader(ts, LoaderConfig(batch_size=4, workers=2, seed=1), 0, order)))
    assert len(a) == 3
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert float(a[2][0].sum()) == 0 and float(a[2][1].sum()) == pytest.approx(SIZE.height * SIZE.width, rel=1e-4)


def test_the_loop_adds_the_weighted_distillation_term(shapes_data):
    from edgeseg.models import create_model
    from edgeseg.train.losses import LossConfig, build_loss

    seed_everything(0)
    model = create_model("test_fcn8s", num_classes=6)
    cfg = TrainConfig(epochs=1, size=SIZE, batch_size=8, lr=0.01, warmup_epochs=0.0, scale=(1.0, 1.0), jitter=0.0,
                      hflip=False, progress=False, threads=1, teacher="shapes", distill_weight=0.5,
                      distill_temperature=2.0)
    trainer = Trainer(model, shapes_data, cfg, loss=build_loss(LossConfig.parse("ce")))
    images, target, soft = next(iter(train_loader(trainer.train_set, trainer.loader_cfg, 0)))
    model.train()
    torch.manual_seed(0)  # the trainer seeds dropout with (seed, epoch) = (0, 0) the same way
    with torch.no_grad():
        logits = model(images)["logits"]
        ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
        want = float(ce + 0.5 * distill_loss(logits, soft, target, 2.0))
    res = trainer.train_epoch()  # one step: its loss is taken before the update
    assert res.steps == 1 and res.loss == pytest.approx(want, rel=1e-5)
    assert float(distill_loss(logits, soft, target, 2.0)) > 0.01


def test_bad_teachers_are_clear_errors(shapes_data):
    with pytest.raises(InputError, match="instance bundle"):
        TeacherMember("shapes-instance", shapes_data.classes)
    with pytest.raises(InputError, match="2 teachers for 3 parts"):
        open_teachers(DistillConfig("shapes;shapes"), 3, shapes_data.classes)
    with pytest.raises(InputError, match="no part of --data a teacher"):
        open_teachers(DistillConfig("none;-"), 2, shapes_data.classes)
    with pytest.raises(InputError, match="give no score"):
        TeacherMember("shapes", CAMVID_CLASSES)
    with pytest.raises(InputError, match="distill-weight"):
        DistillConfig("shapes", weight=0.0)
    with pytest.raises(InputError, match="--teacher-flip"):
        TrainConfig(epochs=1, size=SIZE, teacher_flip=True)
    with pytest.raises(Exception, match="no-such-bundle"):
        TeacherMember("no-such-bundle", shapes_data.classes)
