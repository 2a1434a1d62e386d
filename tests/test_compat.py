"""The runtime stays importable on Python 3.8 (JetPack 5's system Python, which its TensorRT and GStreamer
bindings are built for) and 3.10 (JetPack 6's). Session 38 ran the runtime tests under pyenv's 3.8.18 and
3.10.13 (docs/streaming.md, "Jetson"); this guard keeps what made them pass from coming back: the grammar of
every module, and the 3.9+ calls and run-time generics that broke the import there."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgeseg"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
#: 3.9+ methods, with the edgeseg._compat function that replaces each
NEWER_METHODS = {"removeprefix": "removeprefix", "removesuffix": "removesuffix", "is_relative_to": "is_relative_to"}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _rel(p: Path) -> str:
    return p.relative_to(PACKAGE.parent).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_every_module_parses_as_python_3_8(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


def _runtime_generic(node: ast.AST) -> bool:
    """``list[...]`` (etc.) evaluated when the module runs (not inside an annotation)."""
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS


def _type_checking_nodes(tree: ast.AST) -> set:
    """Nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    out: set = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def test_no_python_3_9_calls_or_run_time_builtin_generics():
    found = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        annotated = False
        for node in ast.walk(tree):  # annotations are strings under `from __future__ import annotations`
            for ann in [getattr(node, "annotation", None), getattr(node, "returns", None)]:
                if ann is not None:
                    annotated = True
                    skip.update(id(n) for n in ast.walk(ann))
        future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
                     for n in tree.body)
        if annotated and not future:  # then its annotations are evaluated at import, builtin generics and all
            found.append(f"{_rel(path)}: annotations without `from __future__ import annotations`")
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS and path.name != "_compat.py" \
                    and getattr(node.value, "id", None) != "_compat":
                found.append(f"{_rel(path)}:{node.lineno}: .{node.attr}() is Python 3.9+ "
                             f"(use edgeseg._compat.{NEWER_METHODS[node.attr]})")
            elif _runtime_generic(node):
                found.append(f"{_rel(path)}:{node.lineno}: {node.value.id}[...] evaluated at run time is Python 3.9+ "
                             "(use typing's List, Dict, Tuple...)")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):  # singledispatch by annotation evaluates it
                for d in node.decorator_list:
                    if isinstance(d, ast.Attribute) and d.attr == "register" and getattr(d.value, "id", None) != "atexit":
                        found.append(f"{_rel(path)}:{node.lineno}: @{getattr(d.value, 'id', '...')}.register reads the "
                                     "annotations; register the class explicitly")
    assert not found, "\n".join(found)


def test_the_compat_functions_match_the_methods_they_stand_for():
    from pathlib import PurePosixPath

    from edgeseg._compat import is_relative_to, removeprefix, removesuffix

    for text, affix in (("road.edgeseg", ".edgeseg"), ("road", ".edgeseg"), ("", ""), ("abc", ""), (".edgeseg", ".edgeseg")):
        assert removesuffix(text, affix) == text.removesuffix(affix)
        assert removeprefix(text, affix) == text.removeprefix(affix)
    for a, b in (("/a/bundle-abc/x", "/a/bundle-ab"), ("/a/b/c", "/a/b"), ("/a/b", "/a/b"), ("/a", "/a/b")):
        assert is_relative_to(PurePosixPath(a), b) == PurePosixPath(a).is_relative_to(b)
