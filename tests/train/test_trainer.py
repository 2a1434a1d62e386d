"""The trainer learns, checkpoints round-trip bit-exactly, and resume equals an uninterrupted run."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.errors import InputError, ModelError  # noqa: E402
from edgeseg.structures import ImageShape  # noqa: E402
from edgeseg.train import TrainConfig, Trainer, seed_everything  # noqa: E402
from edgeseg.train.data import LoaderConfig, TrainSet, train_loader  # noqa: E402
from edgeseg.train.augment import AugmentConfig  # noqa: E402
from edgeseg.structures import InputSpec  # noqa: E402

SIZE = ImageShape(48, 64)
MODEL = "test_fcn8s"


def _config(**kw):
    base = dict(epochs=6, size=SIZE, batch_size=8, lr=0.2, warmup_epochs=0.5, scale=(0.75, 1.25), progress=False, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _model():
    from edgeseg.models import create_model

    seed_everything(0)
    return create_model(MODEL, num_classes=6)


def test_trainer_reduces_loss_and_improves_miou(data, tmp_path):
    train, val = data
    trainer = Trainer(_model(), train, _config(loss="ce+0.5*lovasz"), val_data=val, out_dir=tmp_path, model_name=MODEL)
    before = trainer.evaluate().miou
    result = trainer.fit()
    losses = [r.loss for r in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert result.final.miou is not None and result.final.miou > before + 0.15
    assert result.best_miou >= result.final.miou
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "model.safetensors").is_file()
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1, 2, 3, 4, 5, 6]
    assert hist["config"]["loss"] == "ce+0.5*lovasz"


def test_weights_round_trip_bit_exact(data, tmp_path):
    from edgeseg.models.checkpoint import load_checkpoint, read_checkpoint_meta

    train, _ = data
    trainer = Trainer(_model(), train, _config(epochs=1, weights_format="pt"), out_dir=tmp_path, model_name=MODEL)
    result = trainer.fit()
    loaded = load_checkpoint(result.weights)
    own = trainer.model.state_dict()
    assert set(loaded.state_dict()) == set(own)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, own[k].cpu()), k
    meta = read_checkpoint_meta(result.weights)
    assert meta.model_name == MODEL and meta.num_classes == 6 and meta.extra["epoch"] == 1
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # plain data only
    assert state["epoch"] == 1 and state["step"] == 3
    for k, v in state["model"].items():
        assert torch.equal(v, own[k]), k


def test_exporting_the_run_weights_gives_the_classes_palette_and_size_trained(data, tmp_path):
    """`edgeseg export runs/x/best.safetensors` (export --help's own example) made class_0.. at 480x360: the
    semantic trainer's weights did not carry the class names, palette and input size (the instance and panoptic
    trainers' did)."""
    from edgeseg.bundle import Bundle
    from edgeseg.cli import main

    class Painted(list):  # the training set with a palette, as folder datasets carry one
        pass

    train = Painted(data[0])
    train.classes = data[0].classes
    train.palette = [[10 * k, 255 - 10 * k, 7] for k in range(len(train.classes))]
    trainer = Trainer(_model(), train, _config(epochs=1), out_dir=tmp_path / "run", model_name=MODEL)
    weights = trainer.fit().weights
    assert main(["export", str(weights), "--out", str(tmp_path / "b.edgeseg")]) == 0
    m = Bundle.open(tmp_path / "b.edgeseg").manifest
    assert m.classes == tuple(train.classes) and m.input.size == SIZE
    assert [list(c) for c in m.palette] == train.palette


def test_resume_reproduces_uninterrupted_run(data, tmp_path):
    train, _ = data
    cfg = _config(epochs=3)
    full = Trainer(_model(), train, cfg).fit()

    first = Trainer(_model(), train, cfg, out_dir=tmp_path)
    first.fit(epochs=2)  # stop after epoch 2, as if interrupted
    other = _model()
    torch.nn.init.normal_(next(other.parameters()))  # whatever the fresh weights are, resume overwrites them
    resumed = Trainer(other, train, cfg, out_dir=tmp_path)
    result = resumed.fit(resume=tmp_path)
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.history[-1].loss == full.history[-1].loss  # bit-exact, not approximately
    assert [r.loss for r in result.history] == [r.loss for r in full.history]


def test_augmentation_independent_of_worker_count(data):
    train, _ = data
    ts = TrainSet(train, AugmentConfig(SIZE), InputSpec(size=SIZE), seed=5)
    a = next(iter(train_loader(ts, LoaderConfig(batch_size=4, workers=0, seed=5), epoch=2)))
    b = next(iter(train_loader(ts, LoaderConfig(batch_size=4, workers=2, seed=5), epoch=2)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = next(iter(train_loader(ts, LoaderConfig(batch_size=4, workers=0, seed=5), epoch=3)))
    assert not torch.equal(a[1], c[1])


def test_resume_errors_name_the_file(data, tmp_path):
    train, _ = data
    trainer = Trainer(_model(), train, _config(epochs=1))
    with pytest.raises(InputError, match="no checkpoint"):
        trainer.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ModelError, match="bad.pt: not an edgeseg training checkpoint"):
        trainer.load(bad)


def test_trains_a_plain_module_returning_a_tensor(data):
    """The loop is generic: any nn.Module mapping images to logits (e.g. a fake-quantized one) trains."""
    train, _ = data
    seed_everything(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 6, 1))
    result = Trainer(net, train, _config(epochs=3, lr=0.1)).fit()
    assert result.history[-1].loss < result.history[0].loss
    assert np.isfinite([r.loss for r in result.history]).all()
