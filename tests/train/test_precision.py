"""How the CPU runs a training step (``--cpu-precision``, ``--memory-format``): bf16 autocast where the
CPU has native bf16 and channels-last tensors, decided by timing on the machine that trains, recorded
with the run and kept on resume."""
from __future__ import annotations

import itertools
import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402
from edgeseg.models import create_model  # noqa: E402
from edgeseg.train.precision import (  # noqa: E402
    MIN_GAIN, autocast_for, channels_last_hazard, choose_cpu_step, cpu_bf16_supported, to_memory_format)

CPU = torch.device("cpu")
NATIVE = cpu_bf16_supported()


def test_autocast_lowers_convolutions_only_when_asked():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with autocast_for(CPU, amp=True, bf16=False):  # amp is CUDA's float16: nothing on the CPU
        assert conv(x).dtype == torch.float32
    with autocast_for(CPU, amp=False, bf16=True):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and conv.weight.dtype == torch.float32  # weights stay float32
    # bf16 keeps 8 bits of mantissa: the result is float32's to about 1 %
    assert torch.allclose(y.float(), conv(x), rtol=0.02, atol=0.02)


def test_fixed_settings_decide_without_timing_and_bf16_needs_native_support():
    assert choose_cpu_step("fp32", "contiguous", CPU) == {"cpu_precision": "fp32", "memory_format": "contiguous",
                                                          "bf16": False, "channels_last": False}
    assert choose_cpu_step("fp32", "channels_last", CPU)["channels_last"] is True
    if NATIVE:
        assert choose_cpu_step("bf16", "contiguous", CPU)["bf16"] is True
    else:  # emulated bf16 would be slower than float32: refused with the way out
        with pytest.raises(InputError, match="no native bf16") as e:
            choose_cpu_step("bf16", "contiguous", CPU)
        assert "auto" in e.value.fix
        # auto without native bf16 leaves a single candidate: nothing to time
        assert choose_cpu_step("auto", "contiguous", CPU)["why"] == "no native bf16 on this CPU"
    with pytest.raises(InputError, match="cpu_precision must be one of"):
        choose_cpu_step("fp16", "contiguous", CPU)
    with pytest.raises(InputError, match="memory_format must be one of"):
        choose_cpu_step("fp32", "nhwc", CPU)


def test_channels_last_is_the_same_computation():
    torch.manual_seed(0)
    model = create_model("test_deeplabv3plus", num_classes=4).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        ref = model(x)["logits"]
        cl = to_memory_format(model, True)
        got = cl(to_memory_format(x, True))["logits"]
    convs = [m.weight for m in cl.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert to_memory_format(torch.zeros(3, 4), True).shape == (3, 4)  # not 4-D: unchanged


def test_auto_times_copies_and_leaves_the_plain_step_only_for_a_real_gain():
    torch.manual_seed(0)
    model = create_model("test_deeplabv3plus_resnet", num_classes=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, target = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    info = choose_cpu_step("auto", "auto", CPU, model, (images, target), torch.nn.functional.cross_entropy)
    cl_ok = channels_last_hazard(model) is None  # (not on an AVX2 CPU: this ResNet's shortcuts have 4-channel inputs)
    expected = {"fp32/contiguous"} | ({"fp32/channels_last"} if cl_ok else set()) | (
        {"bf16/contiguous"} | ({"bf16/channels_last"} if cl_ok else set()) if NATIVE else set())
    if len(expected) == 1:  # nothing left to time
        assert not info["bf16"] and not info["channels_last"] and info["channels_last_refused"]
        return
    assert set(info["step_s"]) == expected and all(t > 0 for t in info["step_s"].values())
    chosen = f"{'bf16' if info['bf16'] else 'fp32'}/{'channels_last' if info['channels_last'] else 'contiguous'}"
    plain, fastest = info["step_s"]["fp32/contiguous"], min(info["step_s"].values())
    if chosen == "fp32/contiguous":
        assert plain / fastest < MIN_GAIN
    else:
        assert info["step_s"][chosen] == fastest and plain / fastest >= MIN_GAIN
    # the run's own weights, batch-norm statistics and layout are untouched by the timing
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_cli_trains_in_bf16_channels_last_records_it_and_resume_keeps_it(tmp_path):
    base = ["train", "test_fcn8s", "--data", "synthetic:16,size=64x48,seed=1", "--size", "64x48", "--batch", "8",
            "--threads", "1", "--no-progress", "--cache", "--out", str(tmp_path / "run")]
    assert main([*base, "--epochs", "1", "--cpu-precision", "bf16", "--memory-format", "channels_last",
                 "--json", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())["training"]
    assert a["precision"] == {"cpu_precision": "bf16", "memory_format": "channels_last", "bf16": True,
                              "channels_last": True}
    assert a["config"]["cpu_precision"] == "bf16" and a["final"]["loss"] > 0 and a["final"]["miou"] is not None
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # float32 master weights
    # resumed with the default settings, the run continues the way it was started
    assert main([*base, "--epochs", "2", "--resume", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())["training"]
    assert b["precision"]["bf16"] is True and b["precision"]["channels_last"] is True and len(b["history"]) == 2


def test_cli_trains_channels_last_and_exports_with_parity(tmp_path):
    """Any CPU: a channels-last run's weights export (layout is not part of the graph) with parity."""
    from edgeseg.bundle import Bundle

    assert main(["train", "test_fcn8s", "--data", "synthetic:8,size=64x48,seed=1", "--size", "64x48", "--batch", "4",
                 "--epochs", "1", "--threads", "1", "--no-progress", "--cache", "--memory-format", "channels_last",
                 "--out", str(tmp_path / "run"), "--export", str(tmp_path / "m.edgeseg")]) == 0
    b = Bundle.open(tmp_path / "m.edgeseg")
    assert b.report["training"]["precision"]["channels_last"] is True and b.report["parity"]["passed"]


def test_cli_refuses_an_unknown_precision(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "test_fcn8s", "--data", "synthetic:8", "--epochs", "1", "--out", str(tmp_path), "--cpu-precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


# ---- the instance and panoptic trainers (losses over the whole output, not logits) -----------------
def test_float_outputs_casts_floating_tensors_at_any_depth():
    from edgeseg.train.precision import float_outputs

    out = float_outputs({"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.ones(1, dtype=torch.bfloat16), 3],
                         "c": (torch.arange(3),)})
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float32 and out["b"][1] == 3
    assert out["c"][0].dtype == torch.int64 and isinstance(out["c"], tuple)


def _panoptic_trainer(out_dir=None, **cfg):
    from edgeseg.data.synthetic import CLASSES
    from edgeseg.structures import ImageShape
    from edgeseg.train.panoptic import PanopticTrainConfig, PanopticTrainer

    torch.manual_seed(0)
    model = create_model("test_panoptic_deeplab", num_classes=len(CLASSES), class_names=list(CLASSES),
                         thing_classes=[3, 4, 5])
    config = PanopticTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=2, batch_size=2, warmup_steps=1, **cfg)
    return PanopticTrainer(model, config, out_dir=out_dir, model_name="test_panoptic_deeplab", checkpoint_every=1)


def _panoptic_data(start):
    from edgeseg.structures import ImageShape
    from edgeseg.train.panoptic import synthetic_panoptic

    return synthetic_panoptic(ImageShape(48, 64), 0, start)


def _instance_trainer(out_dir=None, **cfg):
    from edgeseg.data.synthetic import THING_CLASSES
    from edgeseg.structures import ImageShape
    from edgeseg.train.instance import InstanceTrainConfig, InstanceTrainer

    torch.manual_seed(0)
    model = create_model("test_solov2", num_classes=len(THING_CLASSES), thing_classes=list(THING_CLASSES))
    config = InstanceTrainConfig(size=ImageShape(48, 64), epochs=2, steps_per_epoch=2, batch_size=2, warmup_steps=1, **cfg)
    return InstanceTrainer(model, config, out_dir=out_dir, model_name="test_solov2")


def _instance_data(start):
    from edgeseg.structures import ImageShape
    from edgeseg.train.instance import synthetic_instances

    return synthetic_instances(ImageShape(48, 64), seed=1, start=start, scenes=4)


TRAINERS = {"panoptic": (_panoptic_trainer, _panoptic_data), "instance": (_instance_trainer, _instance_data)}


def _one_step_each(task: str, **variant):
    """A plain trainer and one with ``variant`` config, each deciding its levers and taking one step on
    the same batch: (plain, other, plain's step, other's step)."""
    make, data = TRAINERS[task]
    plain, other = make(), make(**variant)
    batch = list(itertools.islice(data(0), 2))
    for t in (plain, other):
        t.choose_precision(batch, 0)
    return plain, other, plain.train_step(batch, 0), other.train_step(batch, 0)


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_a_channels_last_step_is_the_contiguous_step(task):
    plain, cl, a, b = _one_step_each(task, memory_format="channels_last")
    hazard = channels_last_hazard(cl.model)
    if hazard is not None:  # (an AVX2 CPU and a strided 1x1 convolution of 2-7 channels: trained contiguous, said)
        assert not cl.precision["channels_last"] and cl.precision["channels_last_refused"] == hazard
        assert b["loss"] == a["loss"]
        return
    assert cl.precision["channels_last"] and not plain.precision["channels_last"]
    convs = [m.weight for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    # the same gradients, summed in another order (compared before Adam's first step, which is about
    # +-lr for any gradient however small, so it amplifies rounding near zero)
    scale = max(float(p.grad.abs().max()) for p in plain.model.parameters() if p.grad is not None)
    for (k, p), q in zip(plain.model.named_parameters(), cl.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5 * scale), k


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_auto_is_timed_recorded_and_kept_on_resume(task, tmp_path):
    make, data = TRAINERS[task]
    first = make(tmp_path / "run", cpu_precision="auto", memory_format="auto")
    first.fit(data, epochs=1)
    info = first.precision
    cl_ok = channels_last_hazard(first.model) is None
    expected = {"fp32/contiguous"} | ({"fp32/channels_last"} if cl_ok else set()) | (
        {"bf16/contiguous"} | ({"bf16/channels_last"} if cl_ok else set()) if NATIVE else set())
    if len(expected) > 1:
        assert set(info["step_s"]) == expected and info["speedup"] >= 1.0
        chosen = f"{'bf16' if info['bf16'] else 'fp32'}/{'channels_last' if info['channels_last'] else 'contiguous'}"
        assert chosen == "fp32/contiguous" or info["step_s"]["fp32/contiguous"] / info["step_s"][chosen] >= MIN_GAIN
    else:  # one candidate on this CPU: nothing timed, the refusal recorded
        assert not info["channels_last"] and info["channels_last_refused"]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["precision"] == info
    # a resumed run keeps the decision whatever its own config says, and times nothing again
    again = make(tmp_path / "run")
    again.fit(data, resume=tmp_path / "run")
    assert again.precision == info and again.epoch == 2


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_a_bf16_step_trains_float32_weights_to_about_the_float32_loss(task):
    plain, low, a, b = _one_step_each(task, cpu_precision="bf16")
    assert low.precision["bf16"] and b["loss"] == pytest.approx(a["loss"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in low.model.parameters())


def test_the_training_tools_take_the_levers(tmp_path):
    import importlib.util
    from pathlib import Path

    tools = Path(__file__).resolve().parents[2] / "tools"

    def tool(name):
        spec = importlib.util.spec_from_file_location(name, tools / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    common = ["--size", "64x48", "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--threads", "1",
              "--eval-frames", "0", "--memory-format", "channels_last"]
    assert tool("train_panoptic").main(["--model", "test_panoptic_deeplab", "--data", "synthetic", *common,
                                        "--sigma", "2.5", "--out", str(tmp_path / "p")]) == 0
    assert tool("train_instance").main(["--model", "test_solov2", "--scenes", "4", *common, "--out", str(tmp_path / "i")]) == 0
    for run, model in (("p", "test_panoptic_deeplab"), ("i", "test_solov2")):
        assert json.loads((tmp_path / run / "run.json").read_text())["memory_format"] == "channels_last"
        cl_ok = channels_last_hazard(create_model(model)) is None  # (an AVX2 CPU and test_solov2's shortcut: refused)
        assert torch.load(tmp_path / run / "last.pt", weights_only=False)["precision"]["channels_last"] is cl_ok
    assert json.loads((tmp_path / "p" / "run.json").read_text())["sigma"] == 2.5  # the centre Gaussian, recorded
    assert torch.load(tmp_path / "p" / "last.pt", weights_only=False)["config"]["sigma"] == 2.5


@pytest.mark.parametrize("config", ["semantic", "instance", "panoptic"])
def test_bf16_without_native_support_is_refused_when_the_config_is_built(config):
    """Before any data loads (the tools and `edgeseg train` build the config first)."""
    from edgeseg.structures import ImageShape
    from edgeseg.train.instance import InstanceTrainConfig
    from edgeseg.train.panoptic import PanopticTrainConfig
    from edgeseg.train.trainer import TrainConfig

    make = {"semantic": lambda **k: TrainConfig(epochs=1, size=ImageShape(48, 64), **k),
            "instance": lambda **k: InstanceTrainConfig(size=ImageShape(48, 64), **k),
            "panoptic": lambda **k: PanopticTrainConfig(size=ImageShape(48, 64), **k)}[config]
    if NATIVE:
        assert make(cpu_precision="bf16").cpu_precision == "bf16"
    else:
        with pytest.raises(InputError, match="no native bf16") as e:
            make(cpu_precision="bf16")
        assert "auto" in e.value.fix
    assert make(cpu_precision="auto").cpu_precision == "auto"  # auto measures: fine on any CPU
    if config == "semantic":  # bf16 is a CPU lever: a CUDA run's config does not depend on this CPU
        assert make(cpu_precision="bf16", device="cuda").cpu_precision == "bf16"


def test_candidates_are_timed_in_turns_and_a_shared_timing_is_flagged(monkeypatch, caplog):
    """A load that stops during the timing: the first turn's times are inflated for the candidates timed
    first; the second turn (each candidate's fastest counts) puts them right. A failing candidate is left
    out, and a timing other processes shared is logged with the settings to pass instead."""
    import logging

    from edgeseg._timing import LoadProbe
    from edgeseg.train.precision import time_candidates

    model = torch.nn.Conv2d(3, 4, 3)
    seen = []
    turns = {  # seconds per step the fake timer reports, per turn
        (False, False): [2.0, 0.50], (False, True): [2.1, 0.40], (True, False): [0.9, 0.95], (True, True): None,
    }

    def timer(probe, bf16, cl):
        assert probe is not model and probe.training
        seen.append((bf16, cl))
        if turns[(bf16, cl)] is None:
            raise RuntimeError("no bf16 kernel for this layout\nmore")
        return turns[(bf16, cl)][sum(1 for s in seen if s == (bf16, cl)) - 1]

    cands = [(False, False), (False, True), (True, False), (True, True)]
    timings, busy = time_candidates(model, cands, timer)
    assert timings == {"fp32/contiguous": 0.5, "fp32/channels_last": 0.4, "bf16/contiguous": 0.9}
    assert seen == cands + cands[:3]  # in turns; the failing one is not timed again
    assert 0.0 <= busy <= 1.0
    # timed one after the other, the first turn alone would have chosen bf16 (0.9 against 2.0 and 2.1)

    monkeypatch.setattr(LoadProbe, "contended", lambda self, demand: 0.44)
    seen.clear()
    caplog.set_level(logging.INFO, logger="edgeseg.train.precision")
    info = choose_cpu_step("fp32", "auto", CPU, model, timer=timer)
    assert info["channels_last"] is True and info["busy"] == 0.44 and info["step_s"]["fp32/channels_last"] == 0.4
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "other processes took 44% of the CPUs" in warn[0]
    assert "--cpu-precision fp32 --memory-format channels_last" in warn[0]


def test_channels_last_is_refused_where_torchs_onednn_corrupts_memory(monkeypatch):
    """Session 55's CI on an AVX2 EPYC: the channels-last backward of a 1x1 stride-2 convolution with 4 input channels
    (the test SOLOv2's shortcut) aborted the process ("corrupted size vs. prev_size") or gave wrong weight gradients.
    On x86 without AVX-512 such a model trains contiguous, said and recorded; elsewhere, or without such a layer, as
    asked."""
    import platform

    bad = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1, stride=2))
    fine = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 1, stride=2),
                               torch.nn.Conv2d(4, 8, 1), torch.nn.Conv2d(1, 8, 1, stride=2))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert "strided 1x1 convolution with 4 input channels in channels-last (1)" in channels_last_hazard(bad)
    assert channels_last_hazard(fine) is None
    choice = choose_cpu_step("fp32", "channels_last", CPU, bad)
    assert not choice["channels_last"] and "oneDNN" in choice["channels_last_refused"]
    assert choose_cpu_step("fp32", "channels_last", CPU, fine)["channels_last"]
    for capability, machine in (("AVX512", "x86_64"), ("DEFAULT", "aarch64")):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        assert channels_last_hazard(bad) is None


def test_a_channels_last_instance_run_on_this_cpu_does_not_crash(tmp_path):
    """The process that crashed (one thread: 3 of 4 runs aborted before the guard), run as a user would, three times."""
    import subprocess
    import sys

    code = ("import itertools, sys; sys.path.insert(0, %r)\nimport test_precision as tp\n"
            "make, data = tp.TRAINERS['instance']\nt = make(memory_format='channels_last')\n"
            "batch = list(itertools.islice(data(0), 2))\nt.choose_precision(batch, 0)\n"
            "for i in range(3):\n    t.train_step(batch, i)\nprint('ok', t.precision['channels_last'])\n") % str(
                __import__("pathlib").Path(__file__).parent)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0 and r.stdout.startswith("ok"), (r.returncode, r.stderr[-1500:])


def test_a_resumed_channels_last_run_trains_contiguous_here_and_a_gpu_choice_is_left_alone(monkeypatch):
    """(The review) a run decided channels-last on another CPU, resumed on one without AVX-512, trains contiguous here,
    said and recorded; a GPU's channels-last choice is cuDNN's and is kept."""
    import platform

    from edgeseg.train.precision import CpuStepLevers

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    run = CpuStepLevers()
    run.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1, stride=2))
    run.keep_precision({"cpu_precision": "fp32", "memory_format": "channels_last", "bf16": False, "channels_last": True})
    assert run.precision["channels_last"] is False and "oneDNN" in run.precision["channels_last_refused"]
    assert all(p.is_contiguous() for p in run.model.parameters())
    run.keep_precision({"device": "cuda:0", "bf16": True, "channels_last": True})
    assert run.precision["channels_last"] is True and "channels_last_refused" not in run.precision
