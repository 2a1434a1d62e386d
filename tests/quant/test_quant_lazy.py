"""``edgeseg.quant`` resolves its names lazily (edgeseg._lazy): importing it, and even reaching
``quantize_bundle``, loads neither onnx, onnxruntime nor torch."""
import subprocess
import sys


def test_quant_names_are_lazy():
    code = ("import sys, edgeseg.quant as q\n"
            "assert 'edgeseg.quant.api' not in sys.modules\n"
            "f = q.quantize_bundle\n"
            "assert f.__module__ == 'edgeseg.quant.api' and q.__dict__['quantize_bundle'] is f\n"
            "assert 'get_profile' in dir(q) and q.find_recipe('synthetic').name == 'synthetic.toml'\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
