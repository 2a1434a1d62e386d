#!/usr/bin/env python
"""Choose a semantic bundle's per-class logit bias (``SemanticOptions.class_bias``) on frames it may
have trained on, score the choice once on held-out sets, and (``--write``) store it in the bundle.

    python tools/bench/class_bias.py road \\
        --select cityscapes-camvid:../shared/data/cityscapes_panoptic --select-split train --select-limit 150 \\
        --score cities=cityscapes-camvid:../shared/data/cityscapes_panoptic \\
        --score val=camvid:../shared/data/camvid \\
        --score 0006R0=camvid:../shared/data/camvid,split=train,sequences=0006R0 --json out/bias.json

Class-weighted training (ENet weights, Lovasz) leaves a model leaning towards its rare classes; one
number per class added to the logits before the argmax moves that prior back. The model runs once per
``--select`` frame (spread evenly over the set, so that it covers its cities or sequences); its
logits at the network size are kept and the bias is chosen by coordinate ascent on mIoU there
(each class tries ``--steps`` offsets in turn, then a second round at half the step), starting from
zero. Each ``--score`` set (``NAME=SPEC``, its ``val`` split unless the spec names one) is then scored
with and without the bias through the bundle's own decoder (``edgeseg.eval.evaluate``). Nothing is
chosen on the ``--score`` sets. ``--write`` puts the bias into the bundle's manifest (its models are
untouched: every precision decodes with it), records the choice in its report (``class_bias``) and
re-measures the report's figures with it (:func:`rescore_report`: the FP32 accuracy and each INT8
gate's scores, whose budget must still hold).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg.cli._common import print_table, write_json  # noqa: E402


def choose_bias(cached: list[tuple[np.ndarray, np.ndarray]], n: int, steps: list[float], rounds: int = 2,
                ignore_index: int = 255, log=print) -> tuple[np.ndarray, float, float]:
    """(bias, mIoU at zero, mIoU with the bias), in percent, by coordinate ascent over ``cached``
    (logits ``[C, h, w]``, labels ``[h, w]``; mIoU as :class:`edgeseg.eval.SemanticMetric` computes it):
    round 1 tries each offset in ``steps`` per class, each later round the class's value plus the steps
    halved again."""
    from edgeseg.eval import SemanticMetric

    def score(b: np.ndarray) -> float:
        metric = SemanticMetric(n, ignore_index, boundary=False)
        for logits, lab in cached:
            metric.update((logits + b[:, None, None]).argmax(0), lab)
        return 100 * metric.compute().miou

    bias = np.zeros(n, np.float32)
    start = best = score(bias)
    for r in range(rounds):
        scale = 0.5 ** r
        for k in range(n):
            base = float(bias[k])  # every offset of the round from the class's value at its start
            for s in steps:
                trial = bias.copy()
                trial[k] = base + s * scale
                v = score(trial)
                if v > best + 1e-9:
                    best, bias = v, trial
        log(f"round {r + 1}: bias {np.round(bias, 3).tolist()}, mIoU {best:.2f}")
    return bias, start, best


def _cache(pred, dataset, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[C, h, w]`` logits at the network size (the bundle's logits output, in its layout) and the labels
    resized to them, for ``limit`` frames spread over ``dataset``. The bias is added to the logits as the
    decoder adds it, so the argmax the search scores is the decoder's."""
    import cv2

    from edgeseg.decode.semantic import _logits_3d, semantic_output

    n = len(dataset)
    idx = [round(i * n / limit) for i in range(limit)] if limit < n else range(n)
    out = []
    for i in idx:
        s = dataset[i]
        feed, _ = pred.preprocess(s.image)
        _, _, arr = semantic_output(pred.runner.infer(feed), pred.manifest)
        x, caxis = _logits_3d(arr, pred.manifest, pred.options.logits_layout)
        logits = np.ascontiguousarray(x if caxis == 0 else x.transpose(2, 0, 1), np.float32)
        out.append((logits, cv2.resize(s.labels, (logits.shape[2], logits.shape[1]), interpolation=cv2.INTER_NEAREST)))
    return out


def rescore_report(bundle, threads: int = 0, reason: str = "decoder class_bias (tools/bench/class_bias.py)") -> list[dict]:
    """Re-measure the figures a bundle's report records after its decoding changed: the FP32 accuracy
    (on its recorded dataset) and each INT8 gate's FP32 and INT8 scores (on the gate's data and runtime).
    The gate records keep what was measured when they were made (latency, sensitivity, device) and get a
    ``rescored`` entry (the scores before, this device, why); their scores and ``met_budget`` become the
    new ones. Returns the rows it measured."""
    import edgeseg
    from edgeseg.backends.device import device_info
    from edgeseg.backends.gates import INT8_RUNTIMES
    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.eval import evaluate

    report = bundle.report
    rows = []

    def score(spec, split, backend, precision, target=None, boundary=False):
        with edgeseg.load(bundle, backend=backend, precision=precision, target=target, device="cpu",
                          threads=threads) as p:
            return evaluate(p, open_semantic_dataset(spec, split, purpose="scoring"), progress=True,
                            boundary=boundary).to_dict()

    acc = (report.get("accuracy") or {}).get("fp32")
    if isinstance(acc, dict) and acc.get("data"):
        d = score(acc["data"], acc.get("split") or "val", acc.get("backend") or "onnxruntime", "fp32", boundary=True)
        rows.append({"record": "accuracy fp32", "before": round(100 * acc["miou"], 2), "after": round(100 * d["miou"], 2),
                     "fp32": round(100 * d["miou"], 2), "met_budget": "-"})
        acc.update(miou=d["miou"], macc=d["macc"], pixel_acc=d["pixel_acc"], boundary_f1=d["boundary_f1"],
                   num_images=d["num_images"], per_class_iou={k: v["iou"] for k, v in d["per_class"].items()})
    for target, rec in (report.get("int8") or {}).items():
        if not isinstance(rec, dict) or "fp32" not in rec:
            continue
        gate = rec.get("gate_data") or {}
        spec, split = gate.get("dataset") or (acc or {}).get("data"), gate.get("split") or (acc or {}).get("split") or "val"
        if not spec:
            continue
        backend = INT8_RUNTIMES.get(target, ("onnxruntime",))[0]
        backend = "onnxruntime" if backend == "tensorrt" else backend  # its Q/DQ model on ONNX Runtime, as gated here
        fp32 = 100 * score(spec, split, backend, "fp32")["miou"]
        int8 = 100 * score(spec, split, backend, "int8", target)["miou"]
        before = {k: rec.get(k) for k in ("fp32", "int8", "drop", "met_budget")}
        rec.update(fp32=fp32, int8=int8, drop=fp32 - int8, met_budget=bool(fp32 - int8 <= rec.get("max_drop", 0.5)))
        rec["rescored"] = {"reason": reason, "before": before, "backend": backend, "device": device_info().to_dict()}
        rows.append({"record": f"int8 {target} ({backend})", "before": round(before["int8"], 2), "after": round(int8, 2),
                     "fp32": round(fp32, 2), "met_budget": rec["met_budget"]})
    for section in ("accuracy", "int8"):
        if section in report:
            bundle.update_report(section, report[section])
    return rows


def main(argv: list[str] | None = None) -> int:
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.errors import EdgesegError
    from edgeseg.eval import evaluate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a semantic bundle (path or shipped name)")
    p.add_argument("--select", required=True, help="dataset spec the bias is chosen on (frames it may have trained on)")
    p.add_argument("--select-split", default="train")
    p.add_argument("--select-limit", type=int, default=150, help="frames of --select, spread over it (default 150)")
    p.add_argument("--score", action="append", default=[], metavar="NAME=SPEC", help="held-out set(s) scored once")
    p.add_argument("--steps", default="-1,-0.5,-0.25,0.25,0.5,1", help="offsets tried per class in round 1")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--write", action="store_true", help="store the chosen bias in the bundle's manifest")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        bundle = Bundle.open(args.bundle)
        if bundle.manifest.task != "semantic":
            raise SystemExit(f"class_bias: {args.bundle} is a {bundle.manifest.task} bundle, not a semantic one")
        sets = {}
        for item in args.score:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise SystemExit(f"class_bias: --score takes NAME=SPEC, got {item!r}")
            sets[name] = spec
        try:
            steps = [float(v) for v in args.steps.split(",") if v.strip()]
        except ValueError:
            raise SystemExit(f"class_bias: --steps takes numbers, e.g. -1,-0.5,0.5,1 (got {args.steps!r})") from None
        if not steps or args.select_limit < 1 or args.rounds < 1:
            raise SystemExit("class_bias: --steps needs a value, --select-limit and --rounds at least 1")
        with edgeseg.load(bundle, backend="onnxruntime", precision="fp32", device="cpu", threads=args.threads) as pred:
            pred.set_options(class_bias=())  # choose from the plain logits, whatever the bundle holds
            select = open_semantic_dataset(args.select, args.select_split, purpose="scoring")
            if tuple(select.classes) != tuple(bundle.manifest.classes):
                raise SystemExit(f"class_bias: --select has classes {list(select.classes)}, the bundle "
                                 f"{list(bundle.manifest.classes)}")
            cached = _cache(pred, select, args.select_limit)
            bias, start, best = choose_bias(cached, bundle.manifest.num_classes, steps, args.rounds,
                                            getattr(select, "ignore_index", 255),
                                            log=lambda s: print(s, file=sys.stderr, flush=True))
            chosen = [round(float(v), 4) for v in bias]
            rows = [{"set": f"select ({len(cached)} frames, network size)", "plain": round(start, 2),
                     "biased": round(best, 2)}]
            per_class = {}
            for name, spec in sets.items():
                ds = open_semantic_dataset(spec, "val", purpose="scoring")
                pred.set_options(class_bias=())
                plain = evaluate(pred, ds, progress=True, boundary=False).to_dict()
                pred.set_options(class_bias=tuple(chosen))
                biased = evaluate(pred, ds, progress=True, boundary=False).to_dict()
                rows.append({"set": name, "plain": round(100 * plain["miou"], 2), "biased": round(100 * biased["miou"], 2)})
                per_class[name] = {c: [round(100 * plain["per_class"][c]["iou"], 1), round(100 * v["iou"], 1)]
                                   for c, v in biased["per_class"].items()}
        print(f"class bias chosen on {args.select} ({args.select_split}): "
              + ", ".join(f"{c} {b:+g}" for c, b in zip(bundle.manifest.classes, chosen)))
        print_table(rows)
        if args.write:
            bundle.update(decoder={**(bundle.manifest.decoder or {}), "class_bias": chosen})  # the rest as it was
            bundle.update_report("class_bias", {"bias": dict(zip(bundle.manifest.classes, chosen)), "select": args.select,
                                                "select_split": args.select_split, "select_frames": len(cached),
                                                "scores": rows, "steps": steps, "rounds": args.rounds})
            print(f"wrote class_bias into {bundle.root / 'manifest.json'}; re-scoring the report's figures")
            print_table(rescore_report(bundle, args.threads))
        write_json(args.json, {"bundle": str(bundle.root), "select": args.select, "select_split": args.select_split,
                               "select_frames": len(cached), "class_bias": dict(zip(bundle.manifest.classes, chosen)),
                               "scores": rows, "per_class": per_class, "steps": steps, "rounds": args.rounds,
                               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}})
    except EdgesegError as e:
        print(f"class_bias: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
