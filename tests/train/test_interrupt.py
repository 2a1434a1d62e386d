"""Ctrl-C / SIGTERM inside an epoch: the trainer finishes the step, saves, and a resume trains the rest of
the epoch exactly as an uninterrupted run would (real signals through the real handlers)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgeseg.errors import InputError, ModelError  # noqa: E402
from edgeseg.structures import ImageShape, InputSpec  # noqa: E402
from edgeseg.train import TrainConfig, Trainer, seed_everything  # noqa: E402
from edgeseg.train.augment import AugmentConfig  # noqa: E402
from edgeseg.train.data import LoaderConfig, TrainSet, collate_train, train_loader  # noqa: E402
from edgeseg.train.interrupt import StopRequest, TrainingStopped  # noqa: E402

SIZE = ImageShape(48, 64)
MODEL = "test_fcn8s"
STEPS = 6  # 24 frames, batch 4


def _interactive() -> None:
    """In the child: SIGINT as a terminal delivers it (a test run in the background, e.g. under nohup, starts its
    children with SIGINT ignored, which they would keep)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _sigint_delivered():
    """These tests send SIGINT to this process: a suite run in the background (nohup, CI) starts with SIGINT
    ignored, which the trainer respects; give it Python's own handler for the test, as a terminal run has."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _config(**kw):
    base = dict(epochs=2, size=SIZE, batch_size=4, lr=0.2, warmup_epochs=0.5, scale=(0.75, 1.25), progress=False,
                threads=1, checkpoint_minutes=0)
    base.update(kw)
    return TrainConfig(**base)


def _model(dropout: bool = True):
    from edgeseg.models import create_model

    seed_everything(0)
    m = create_model(MODEL, num_classes=6)
    if dropout:  # the global torch RNG matters: a resumed epoch must draw the same dropout masks
        m.head_dropout = torch.nn.Dropout2d(0.3)
        inner = m.forward

        def forward(x):
            out = inner(x)
            return {"logits": m.head_dropout(out["logits"])}
        m.forward = forward
    return m


class SignalAt:
    """A cross-entropy loss that sends this process ``signum`` (``times`` times) during call ``at``."""

    def __init__(self, at: int | None, signum=signal.SIGINT, times: int = 1):
        self.calls, self.at, self.signum, self.times = 0, at, signum, times

    def __call__(self, logits, target):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.times):
                signal.raise_signal(self.signum)
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=255)


@pytest.fixture(scope="module")
def full(data):
    """The uninterrupted two-epoch run every stopped-and-resumed run must equal: (history, weights)."""
    t = Trainer(_model(), data[0], _config(), loss=SignalAt(None))
    history = t.fit().history
    return history, {k: v.clone() for k, v in t.model.state_dict().items()}


def test_skipping_batches_gives_the_rest_of_the_same_epoch(data):
    from torch.utils.data import DataLoader

    train, _ = data
    ts = TrainSet(train, AugmentConfig(SIZE), InputSpec(size=SIZE), seed=5)
    cfg = LoaderConfig(batch_size=4, workers=0, seed=5)
    g = torch.Generator().manual_seed(cfg.seed * 100003 + 2)
    ts.set_epoch(2)  # the loader torch would build for shuffle=True: the order must not change for old runs
    plain = list(DataLoader(ts, batch_size=4, shuffle=True, generator=g, collate_fn=collate_train, drop_last=True))
    full = list(train_loader(ts, cfg, epoch=2))
    tail = list(train_loader(ts, cfg, epoch=2, skip_batches=4))
    assert len(full) == len(plain) == 6 and len(tail) == 2
    for a, b in zip(plain, full):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full[4:], tail):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    picked = list(range(23, -1, -1))  # rare-class sampling hands the loader its own order
    assert torch.equal(list(train_loader(ts, cfg, 2, picked, skip_batches=5))[0][1],
                       list(train_loader(ts, cfg, 2, picked))[5][1])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_and_resume_equals_uninterrupted(data, full, tmp_path, signum):
    train, _ = data
    history, weights = full
    before = signal.getsignal(signum)

    first = Trainer(_model(), train, _config(), loss=SignalAt(STEPS + 3, signum), out_dir=tmp_path)
    with pytest.raises(TrainingStopped) as stopped:
        first.fit()
    e = stopped.value
    assert str(e) == signal.Signals(signum).name and e.where == f"epoch 2, step 3 of {STEPS}"
    assert e.checkpoint == tmp_path / "last.pt"
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["partial"][0]) == (1, STEPS + 3, 3)
    assert signal.getsignal(signum) is before  # the handler is given back

    resumed = Trainer(_model(), train, _config(), loss=SignalAt(None), out_dir=tmp_path)
    result = resumed.fit(resume=tmp_path)
    assert [r.epoch for r in result.history] == [1, 2]
    assert result.history[0].loss == history[0].loss
    assert result.history[1].steps == STEPS
    assert result.history[1].loss == pytest.approx(history[1].loss, rel=1e-12)
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_periodic_checkpoint_inside_an_epoch_resumes_exactly(data, full, tmp_path):
    """A kill -9 between epochs' ends loses at most checkpoint_minutes of steps: last.pt is written inside
    the epoch and resuming from the last one gives the same weights."""
    _, weights = full
    train, _ = data
    t = Trainer(_model(), train, _config(checkpoint_minutes=1e-9), loss=SignalAt(None), out_dir=tmp_path)
    t.fit(epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["epoch"], state["partial"][0]) == (1, 0)  # the epoch's end, not a partial record of all its steps
    # replay: stop by signal after step 2 of epoch 1 with periodic saves on, then resume
    out = tmp_path / "b"
    first = Trainer(_model(), train, _config(checkpoint_minutes=1e-9), loss=SignalAt(2), out_dir=out)
    with pytest.raises(TrainingStopped):
        first.fit()
    resumed = Trainer(_model(), train, _config(checkpoint_minutes=1e-9), loss=SignalAt(None), out_dir=out)
    resumed.fit(resume=out)
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_signal_during_evaluation_keeps_the_epoch_and_evaluates_on_resume(data, tmp_path):
    train, val = data
    cfg = _config(epochs=1)
    t = Trainer(_model(), train, cfg, val_data=val, loss=SignalAt(None), out_dir=tmp_path, model_name=MODEL)
    inner = t.evaluate

    def evaluate(data=None):  # the signal arrives while the validation pass runs
        signal.raise_signal(signal.SIGINT)
        return inner(data)
    t.evaluate = evaluate
    with pytest.raises(TrainingStopped) as stopped:
        t.fit()
    assert "evaluation after epoch 1" in stopped.value.where
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["eval_pending"] and state["history"][0]["miou"] is None

    resumed = Trainer(_model(), train, cfg, val_data=val, loss=SignalAt(None), out_dir=tmp_path, model_name=MODEL)
    result = resumed.fit(resume=tmp_path)
    reference = Trainer(_model(), train, cfg, val_data=val, loss=SignalAt(None)).fit()
    assert result.history[0].miou == reference.history[0].miou and result.best_epoch == 1
    assert (tmp_path / "best.safetensors").is_file()


def test_a_second_signal_stops_at_once(data, tmp_path):
    train, _ = data
    t = Trainer(_model(), train, _config(), loss=SignalAt(2, times=2), out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt) as e:
        t.fit()
    assert not isinstance(e.value, TrainingStopped)
    assert not (tmp_path / "last.pt").exists()  # nothing finished to save: periodic saves are off here


def test_stop_request_outside_the_main_thread_installs_nothing():
    import threading

    seen = []

    def run():
        with StopRequest() as r:
            seen.append((r.requested, dict(r._previous)))
    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert seen == [(False, {})]


def test_bad_checkpoint_interval_and_partial_records_are_refused(data, tmp_path):
    train, smaller = data
    with pytest.raises(InputError, match="checkpoint interval"):
        _config(checkpoint_minutes=float("nan"))
    with pytest.raises(InputError, match="checkpoint interval"):
        _config(checkpoint_minutes=-1)
    t = Trainer(_model(), train, _config(), loss=SignalAt(3), out_dir=tmp_path)
    with pytest.raises(TrainingStopped):
        t.fit()
    bigger = Trainer(_model(), train, _config(batch_size=12), loss=SignalAt(None), out_dir=tmp_path)
    with pytest.raises(ModelError, match="batch_size 4 then, 12 now"):  # another setting: refused first (session 45)
        bigger.fit(resume=tmp_path)
    fewer = Trainer(_model(), smaller, _config(), loss=SignalAt(None), out_dir=tmp_path)  # 8 images: 2 steps an epoch
    with pytest.raises(ModelError, match="3 steps done inside epoch 1, which has 2"):
        fewer.fit(resume=tmp_path)


def test_cli_ctrl_c_mid_epoch_then_resume(tmp_path):
    """``edgeseg train`` in a real process: SIGINT inside the epoch, exit 130 with the resume line, then
    ``--resume`` finishes the run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeseg", "train", MODEL, "--data", "synthetic:600,size=64x48", "--size", "64x48",
           "--epochs", "1", "--batch", "2", "--threads", "1", "--out", str(out), "--no-progress",
           "--checkpoint-minutes", "1e-6", "--val-data", "synthetic:8,size=64x48"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         preexec_fn=_interactive)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "history.json").exists() and p.poll() is None:
        time.sleep(0.02)  # the first step's checkpoint (--checkpoint-minutes 1e-6: one after every step)
    p.send_signal(signal.SIGINT)  # at once: 300 steps to go, so the epoch cannot end first even on a fast CPU
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "continue with the same command plus --resume" in err and "stopped at epoch 1, step" in err
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Path(out / "model.safetensors").is_file()


class SignalOnStep:
    """Wraps a trainer's ``_step`` to send this process SIGINT during step ``at`` (1-based, this process)."""

    def __init__(self, trainer, at: int):
        inner, self.n = trainer._step, 0

        def step(*a, **k):
            self.n += 1
            if self.n == at:
                signal.raise_signal(signal.SIGINT)
            return inner(*a, **k)
        trainer._step = step


def _instance(out):
    from edgeseg.models import create_model
    from edgeseg.train.instance import InstanceTrainConfig, InstanceTrainer

    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3, thing_classes=["circle", "rectangle", "triangle"])
    cfg = InstanceTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=3, batch_size=2, warmup_steps=1)
    return InstanceTrainer(model, cfg, out_dir=out, model_name="test_solov2")


def _panoptic(out):
    from edgeseg.models import create_model
    from edgeseg.train.panoptic import PanopticTrainConfig, PanopticTrainer

    torch.manual_seed(0)
    from edgeseg.data.synthetic import CLASSES

    m = create_model("test_panoptic_deeplab", num_classes=len(CLASSES), class_names=list(CLASSES), thing_classes=[3, 4, 5])
    cfg = PanopticTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=3, batch_size=2, warmup_steps=1)
    return PanopticTrainer(m, cfg, out_dir=out, model_name="test_panoptic_deeplab")


@pytest.mark.parametrize("kind", ["instance", "panoptic"])
def test_instance_and_panoptic_trainers_stop_mid_epoch_and_resume_exactly(tmp_path, kind):
    from edgeseg.train.instance import synthetic_instances
    from edgeseg.train.panoptic import synthetic_panoptic

    torch.set_num_threads(1)
    make = _instance if kind == "instance" else _panoptic
    stream = synthetic_instances if kind == "instance" else synthetic_panoptic
    data = lambda start: stream(ImageShape(48, 64), 1, start, scenes=4)  # noqa: E731
    straight = make(tmp_path / "a")
    straight.fit(data)
    first = make(tmp_path / "b")
    SignalOnStep(first, 5)  # epoch 2, step 2 of 3
    with pytest.raises(TrainingStopped) as stopped:
        first.fit(data)
    assert first.step == 5 and stopped.value.checkpoint == tmp_path / "b" / "last.pt"
    resumed = make(tmp_path / "b")
    history = resumed.fit(data, resume=tmp_path / "b")
    assert [h.epoch for h in history] == [1, 2] and resumed.step == 6
    assert history[1].loss == pytest.approx(straight.history[1].loss, rel=1e-9)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_a_signal_the_process_ignores_stays_ignored():
    """nohup and a shell's background jobs start the process with SIGINT ignored: the trainer keeps it so."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as r:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.SIGINT not in r._previous
            assert signal.SIGTERM in r._previous
    finally:
        signal.signal(signal.SIGINT, before)
