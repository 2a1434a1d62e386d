"""CPU training precision (``--cpu-precision``): bf16 autocast where the CPU has native bf16, decided by
timing on the machine that trains, recorded with the run and kept on resume."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402
from edgeseg.models import create_model  # noqa: E402
from edgeseg.train.precision import MIN_GAIN, autocast_for, choose_cpu_bf16, cpu_bf16_supported  # noqa: E402

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


def test_fp32_decides_nothing_and_bf16_needs_native_support():
    assert choose_cpu_bf16("fp32", CPU) == (False, {"cpu_precision": "fp32", "bf16": False})
    if NATIVE:
        assert choose_cpu_bf16("bf16", CPU)[0] is True
    else:  # emulated bf16 would be slower than float32: refused with the way out
        with pytest.raises(InputError, match="no native bf16") as e:
            choose_cpu_bf16("bf16", CPU)
        assert "auto" in e.value.fix
    with pytest.raises(InputError, match="cpu_precision must be one of"):
        choose_cpu_bf16("fp16", CPU)


def test_auto_times_a_copy_and_keeps_bf16_only_when_it_pays():
    torch.manual_seed(0)
    model = create_model("test_deeplabv3plus_resnet", num_classes=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, target = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    use, info = choose_cpu_bf16("auto", CPU, model, (images, target), torch.nn.functional.cross_entropy)
    if not NATIVE:
        assert use is False and info["why"] == "no native bf16 on this CPU"
        return
    assert info["step_s_fp32"] > 0 and info["step_s_bf16"] > 0
    assert use == (info["step_s_fp32"] / info["step_s_bf16"] >= MIN_GAIN)
    # the run's own weights and batch-norm statistics are untouched by the timing
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_cli_trains_in_bf16_records_it_and_resume_keeps_it(tmp_path):
    base = ["train", "test_fcn8s", "--data", "synthetic:16,size=64x48,seed=1", "--size", "64x48", "--batch", "8",
            "--threads", "1", "--no-progress", "--cache", "--out", str(tmp_path / "run")]
    assert main([*base, "--epochs", "1", "--cpu-precision", "bf16", "--json", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())["training"]
    assert a["precision"] == {"cpu_precision": "bf16", "bf16": True} and a["config"]["cpu_precision"] == "bf16"
    assert a["final"]["loss"] > 0 and a["final"]["miou"] is not None
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # float32 master weights
    # resumed with the default setting, the run continues in the precision it was started in
    assert main([*base, "--epochs", "2", "--resume", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())["training"]
    assert b["precision"]["bf16"] is True and len(b["history"]) == 2


def test_cli_refuses_an_unknown_precision(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "test_fcn8s", "--data", "synthetic:8", "--epochs", "1", "--out", str(tmp_path), "--cpu-precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
