"""How the CPU runs a training step (``--cpu-precision``, ``--memory-format``): bf16 autocast where the
CPU has native bf16 and channels-last tensors, decided by timing on the machine that trains, recorded
with the run and kept on resume."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402
from edgeseg.models import create_model  # noqa: E402
from edgeseg.train.precision import MIN_GAIN, autocast_for, choose_cpu_step, cpu_bf16_supported, to_memory_format  # noqa: E402

CPU = torch.device("cpu")
NATIVE = cpu_bf16_supported()


def test_autocast_lowers_convolutions_only_when_asked():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with autocast_for(CPU, amp=True, cpu_bf16=False):  # amp is CUDA's float16: nothing on the CPU
        assert conv(x).dtype == torch.float32
    with autocast_for(CPU, amp=False, cpu_bf16=True):
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
    expected = {"fp32/contiguous", "fp32/channels_last"} | ({"bf16/contiguous", "bf16/channels_last"} if NATIVE else set())
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
