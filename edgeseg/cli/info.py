"""``edgeseg info BUNDLE``: what a bundle holds."""
from __future__ import annotations

import argparse

from ._common import add_json_option, check_output, write_json

NAME = "info"
HELP = "show a bundle's task, classes, input spec, models, files and report summary"
EXAMPLES = (
    "edgeseg info road.edgeseg",
    "edgeseg info road --json info.json        # a shipped bundle, also as JSON",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory, .zip, or shipped name")
    add_json_option(p)


def describe(bundle) -> dict:
    """The bundle as plain data (what --json writes)."""
    m = bundle.manifest
    report = bundle.report
    return {
        "name": m.name,
        "path": str(bundle.source),
        "task": m.task,
        "schema_version": m.schema_version,
        "classes": list(m.classes),
        "input": m.input.to_dict(),
        "outputs": [o.to_dict() for o in m.outputs],
        "models": [mf.to_dict() for mf in m.models],
        "files": {rel: {"sha256": sha, "bytes": (bundle.root / rel).stat().st_size} for rel, sha in sorted(m.files.items())},
        "report": {k: _summary(v) for k, v in report.items()},
        "provenance": m.provenance,
    }


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _summary(section):
    """A report section's plain values, and one level down those of each entry that is a mapping (``int8``'s
    targets, ``accuracy``'s precisions: their scores were left out, and the lines printed empty)."""
    if isinstance(section, dict):
        out = {k: v for k, v in section.items() if _scalar(v)}
        for k, v in section.items():
            if isinstance(v, dict) and any(_scalar(x) for x in v.values()):
                out[k] = {a: x for a, x in v.items() if _scalar(x)}
        return out
    return section if _scalar(section) else None


def _values(data: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items())


def _print(info: dict) -> None:
    spec = info["input"]
    size = spec["size"]
    size_text = f"{size['width']}x{size['height']}" if size else "any"
    made = (info.get("provenance") or {}).get("edgeseg_version")
    print(f"bundle   {info['name']}  ({info['path']}; manifest schema {info['schema_version']}"
          + (f", made by edgeseg {made}" if made else "") + ")")
    print(f"task     {info['task']}, {len(info['classes'])} classes: {', '.join(info['classes'])}")
    print(f"input    {spec['name']}: {spec['layout']} {spec['color']} {spec['dtype']}, size {size_text} "
          f"({spec['size_rule']}, {spec['resize']}"
          + (f" {spec.get('anchor', 'center')}, pad {spec['pad_value']}" if spec["resize"] == "letterbox" else "")
          + (f", multiple {spec['multiple']}" if spec["size_rule"] in ("multiple", "fit") else "")
          + f"), mean {spec['mean']}, std {spec['std']}, scale {spec['scale']:.6g}"
          + (", dynamic batch" if spec["dynamic_batch"] else ""))
    for o in info["outputs"]:
        print(f"output   {o['name']}: {o['kind']} {o['dtype']} {o['shape']}")
    quantized = (info["report"].get("import") or {}).get("quantized")
    for mf in info["models"]:
        extra = "".join(f", {k} {mf[k]}" for k in ("target", "opset") if mf[k] is not None)
        extra += f", {mf['weights']} weights" if mf.get("weights") else ""
        precision = mf["precision"]
        if quantized and mf["file"] == "model.onnx":  # an imported INT8 model in the float slot: not FP32
            precision += f" slot ({quantized.split(':')[0]}: quantized already)"
        print(f"model    {mf['file']}: {precision}{extra}")
    print("files")
    for rel, f in info["files"].items():
        print(f"  {rel:<28} {f['bytes']:>12,d} B  sha256 {f['sha256'][:16]}")
    for section, data in info["report"].items():
        if not isinstance(data, dict):
            print(f"report   {section}: {data}")
            continue
        flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
        if flat or not data:
            print(f"report   {section}: {_values(flat)}")
        for k, v in data.items():
            if isinstance(v, dict):
                print(f"report   {section}.{k}: {_values(v)}")


def run(args: argparse.Namespace) -> int:
    from ..bundle import Bundle

    if args.json:
        check_output(args.json, "--json")
    info = describe(Bundle.open(args.bundle))
    _print(info)
    write_json(args.json, info)
    return 0
