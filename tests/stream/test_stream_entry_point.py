"""``edgeseg.stream(...)`` works whether or not ``edgeseg.stream`` (the package) was imported first."""
import subprocess
import sys

CODE = """
import numpy as np
{pre}
import edgeseg
from handmade_bundles import conv_bundle
p = __import__('pathlib').Path({tmp!r}); p.mkdir(parents=True); b = conv_bundle(p)
n = sum(1 for _ in edgeseg.stream('synthetic://?seed=0&size=64x48&frames=3', b))
print(n)
"""


def _run(pre, tmp_path):
    code = CODE.format(pre=pre, tmp=str(tmp_path))
    tests = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_stream_function_before_and_after_package_import(tmp_path):
    assert _run("", tmp_path / "a") == 3
    assert _run("import edgeseg.stream.pipeline", tmp_path / "b") == 3
