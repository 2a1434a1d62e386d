"""Package dependencies flow one way (DESIGN.md, as built; see docs/architecture.md).

Walks every ``import`` in ``edgeseg/`` (module level and inside functions) and fails on an edge
between top-level packages that the table below does not allow, so a new back-edge is caught in
review rather than discovered as an import cycle on a device.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgeseg"
BASE = {"errors", "_registry", "_io", "_lazy", "paths", "__version__", "_ort", "_timing", "_memory", "_progress", "_recipes", "_unwind", "_compat", "_openvino", "_imagefile"}  # leaves everyone may use

# package -> packages it may import (besides BASE). Lower layers never import higher ones.
ALLOWED: dict[str, set[str]] = {
    "structures": set(),
    "bundle": {"structures"},
    "data": {"structures"},
    "eval": {"structures", "data"},
    "ops": {"structures"},
    "models": {"structures", "ops"},
    "decode": {"structures"},  # (the manifest types are structures: decoders never open a bundle)
    # models only inside the torch backend, lazily; data for the synthetic frames the bf16 check runs on;
    # decode and eval for the on-device task-metric check of bf16 and INT8 (gates.task_metric_gate)
    "backends": {"structures", "bundle", "models", "data", "decode", "eval"},
    # decode: an imported instance model is decoded once on a test frame before its bundle is written
    "export": {"structures", "bundle", "data", "ops", "models", "decode"},
    # wire: the frames-in, results-out format of `edgeseg serve`, shared by its replicas and its client
    "wire": {"structures"},
    # remote: the client of `edgeseg serve` (no Ray); load("http://...") returns it, lazily
    "remote": {"structures", "wire"},
    "predictor": {"structures", "bundle", "backends", "decode", "remote"},
    "quant": {"structures", "bundle", "data", "eval", "decode", "backends", "predictor", "export"},
    "video": {"structures", "decode"},
    "stream": {"structures", "bundle", "data", "decode", "backends", "predictor", "video"},
    # decode: a training run's closing PQ decodes the model's outputs with the runtime's own decoder
    "train": {"structures", "bundle", "data", "eval", "models", "ops", "export", "predictor", "decode"},
    "demo": {"structures", "bundle", "data", "eval", "predictor", "stream", "paths"},
    # the Ray Serve side of scale-out; nothing imports it but the CLI
    "serve": {"structures", "bundle", "backends", "predictor", "decode", "stream", "remote", "wire"},
    # `edgeseg doctor`: what the runtimes and the stream's GStreamer offer here; nothing imports it but the CLI
    "environment": {"backends", "stream"},
}
TOP_ONLY = {"cli", "<root>", "__main__"}  # the CLI and edgeseg/__init__ may import anything
# private modules of a package's layer, counted as that package: bundle.py imports them, and they import the Bundle
# class inside functions (the write machinery, the cache of unpacked zips)
PARTS = {"_bundle_write": "bundle", "_bundle_cache": "bundle"}
# applications of the SDK that live inside the package (loaded by GStreamer, not imported by it)
APPS = ("edgeseg/stream/gst_plugin/",)


def _top(dotted: str) -> str:
    parts = dotted.split(".")
    top = parts[1] if len(parts) > 1 else "<root>"
    return PARTS.get(top, top)


def _edges():
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(rel.parts)
        pkg = mod[: -len(".__init__")] if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        src = _top(mod[: -len(".__init__")] if mod.endswith(".__init__") else mod)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    t = ".".join(base + ([node.module] if node.module else []))
                else:
                    t = node.module or ""
                targets = [t] if node.module else [f"{t}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t == "edgeseg" or t.startswith("edgeseg."):
                    yield src, _top(t), f"{f.relative_to(PKG.parent)}:{node.lineno}"


def test_dependencies_flow_one_way():
    bad = []
    for src, dst, where in _edges():
        if src == dst or src in TOP_ONLY or dst in BASE or where.startswith(APPS):
            continue
        if src not in ALLOWED:
            bad.append(f"{where}: package {src!r} is not in the layering table")
        elif dst not in ALLOWED[src]:
            bad.append(f"{where}: {src} imports {dst}")
    assert not bad, "dependency back-edges:\n" + "\n".join(sorted(bad))


def test_the_table_itself_has_no_cycles():
    seen: dict[str, int] = {}

    def visit(n: str, stack: tuple[str, ...]) -> None:
        assert n not in stack, f"cycle: {' -> '.join(stack + (n,))}"
        if seen.get(n):
            return
        for d in ALLOWED.get(n, ()):
            visit(d, stack + (n,))
        seen[n] = 1

    for n in ALLOWED:
        visit(n, ())
