"""edgeseg._lazy: one PEP 562 helper behind the lazy names of edgeseg and edgeseg.export."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture()
def pkg(tmp_path, monkeypatch):
    """A throw-away package ``lazypkg`` whose names resolve through lazy_module, counting imports."""
    root = tmp_path / "lazypkg"
    root.mkdir()
    (root / "__init__.py").write_text(
        "from edgeseg._lazy import lazy_module\n"
        "__getattr__, __dir__ = lazy_module(__name__, {'answer': '.deep:ANSWER', 'same': '.deep',"
        " 'dumps': 'json:dumps'})\n")
    (root / "deep.py").write_text("import builtins\nbuiltins.LAZY_IMPORTS = getattr(builtins, 'LAZY_IMPORTS', 0) + 1\n"
                                  "ANSWER = 42\nsame = 'attribute named like the key'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins

    monkeypatch.setattr(builtins, "LAZY_IMPORTS", 0, raising=False)
    yield __import__("lazypkg")
    for name in ("lazypkg", "lazypkg.deep"):
        sys.modules.pop(name, None)


def test_names_resolve_on_first_use_and_are_cached(pkg):
    import builtins

    assert "lazypkg.deep" not in sys.modules and builtins.LAZY_IMPORTS == 0
    assert pkg.answer == 42 and builtins.LAZY_IMPORTS == 1
    assert vars(pkg)["answer"] == 42  # cached: __getattr__ is not asked again
    assert pkg.same == "attribute named like the key"  # "module" alone: the attribute has the public name
    assert pkg.dumps is json.dumps  # absolute module
    assert {"answer", "same", "dumps"} <= set(dir(pkg))
    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'nope'"):
        pkg.nope


def test_edgeseg_and_export_use_it_and_stay_light():
    code = ("import sys, json, edgeseg, edgeseg.export as ex\n"
            "print(json.dumps([edgeseg.__getattr__.__module__, ex.__getattr__.__module__, 'torch' in sys.modules,"
            " 'load' in dir(edgeseg), 'import_onnx' in dir(ex), edgeseg.Bundle.__module__]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == ["edgeseg._lazy", "edgeseg._lazy", False, True, True, "edgeseg.bundle"]
