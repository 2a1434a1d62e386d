"""Training progress where no terminal shows a bar (``nohup ... > train.log``): timed log lines with the
step count, the running loss and an estimate of the time left, from both trainers."""
from __future__ import annotations

import io
import logging
import sys

import pytest

from edgeseg.train import progress as progress_mod
from edgeseg.train.progress import LogProgress, epoch_progress, format_remaining


class FakeClock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.step


def test_lines_come_every_interval_with_hand_computed_rates(caplog):
    clock = FakeClock(25.0)  # a step every 25 s, a line at most every 60 s
    caplog.set_level(logging.INFO, logger="edgeseg.train")
    train_log = logging.getLogger("edgeseg.train")
    with LogProgress("epoch 2/5", 10, "step", every_s=60.0, clock=clock, logger=train_log, seconds_each=True) as bar:
        for i in range(10):
            clock.tick()
            bar.set_postfix(loss=f"{1.0 / (i + 1):.4f}")
            bar.update(1)
    for _ in range(3):  # after close (the with block's end) no more lines, however long it takes
        clock.t += 600.0
        bar.n = 0
        bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    # at 75 s (3 steps), 150 s (6) and 225 s (9); none for the last step, the epoch summary follows it
    assert lines == [
        "epoch 2/5: 3/10 steps (30%), loss 0.3333; 25.00 s a step, about 3 min left",
        "epoch 2/5: 6/10 steps (60%), loss 0.1667; 25.00 s a step, about 100 s left",
        "epoch 2/5: 9/10 steps (90%), loss 0.1111; 25.00 s a step, about 25 s left",
    ]


def test_one_line_format_for_every_long_job():
    """The trainers' lines and the other jobs' (predict, eval, quantize, vos) come from one class (session 58: they
    were two near-copies with two formats); a pace under one a second reads as seconds each."""
    bar = LogProgress("edgeseg predict", 5000, "image", clock=lambda: 0.0)
    bar.n = 1200
    assert bar.line(1200 / 36.0) == "edgeseg predict: 1200/5000 images (24%); 36.0 a second, about 106 s left"
    bar.n = 2
    assert bar.line(5.0) == "edgeseg predict: 2/5000 images (0%); 2.50 s an image, about 3.5 h left"
    stream = LogProgress("stream", None, "frame", clock=lambda: 0.0)
    stream.n = 300
    assert stream.line(10.0) == "stream: 300 frames; 30.0 a second"


def test_remaining_time_units():
    assert [format_remaining(s) for s in (0, 119, 120, 7199, 7200, 9000)] == [
        "0 s", "119 s", "2 min", "120 min", "2.0 h", "2.5 h"]


def test_terminal_bar_log_lines_or_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(epoch_progress(5, "epoch 1/1"), LogProgress)
    off = epoch_progress(5, "epoch 1/1", enabled=False)  # --no-progress: a disabled bar, no lines
    assert not isinstance(off, LogProgress) and off.disable

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    bar = epoch_progress(5, "epoch 1/1")
    assert not isinstance(bar, LogProgress) and not bar.disable
    bar.close()


def test_both_trainers_log_progress_inside_an_epoch(monkeypatch, caplog, tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.data.synthetic import SyntheticDataset
    from edgeseg.models import create_model
    from edgeseg.structures import ImageShape
    from edgeseg.train import TrainConfig, Trainer, seed_everything
    from edgeseg.train.instance import InstanceTrainConfig, InstanceTrainer, synthetic_instances

    torch.set_num_threads(1)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_mod, "LOG_EVERY_S", 0.0)  # a line after every step but the last
    caplog.set_level(logging.INFO, logger="edgeseg.train")
    size = ImageShape(48, 64)

    seed_everything(0)
    ds = SyntheticDataset(24, size, seed=3, stream=0)
    cfg = TrainConfig(epochs=1, size=size, batch_size=8, lr=0.1, progress=True, threads=1)
    Trainer(create_model("test_fcn8s", num_classes=6), [ds[i] for i in range(24)], cfg, num_classes=6).fit()
    semantic = [r.getMessage() for r in caplog.records if "steps (" in r.getMessage()]
    assert [m.split(";")[0].split(", lr")[0].rsplit(", loss", 1)[0] for m in semantic] == [
        "epoch 1/1: 1/3 steps (33%)", "epoch 1/1: 2/3 steps (67%)"]
    assert all(", loss " in m and ", lr " in m and "s a step, about" in m for m in semantic)

    caplog.clear()
    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=3, thing_classes=["circle", "rectangle", "triangle"])
    icfg = InstanceTrainConfig(size=size, epochs=1, steps_per_epoch=3, batch_size=2, warmup_steps=1)
    InstanceTrainer(model, icfg, out_dir=tmp_path / "solo", model_name="test_solov2").fit(
        lambda start: synthetic_instances(size, seed=1, start=start, scenes=4))
    instance = [r.getMessage() for r in caplog.records if "steps (" in r.getMessage()]
    assert [m.split(", loss")[0] for m in instance] == ["epoch 1/1: 1/3 steps (33%)", "epoch 1/1: 2/3 steps (67%)"]
    assert all(", lr " in m and "s a step, about" in m for m in instance)
