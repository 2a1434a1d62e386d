"""Build a panoptic bundle from a trained panoptic checkpoint: export (no PyTorch weights), record
its FP32 PQ in ``report.json["accuracy"]``, quantize for the ``cpu`` and ``tensorrt`` targets with PQ
as the gate, and optionally copy it into ``edgeseg/zoo``.

    python tools/train_panoptic.py --model panoptic_deeplab_mobilenetv3_small --data synthetic --size 160x120 \\
        --epochs 8 --steps-per-epoch 250 --batch 8 --threads 1 --out runs/shapes-panoptic
    python tools/make_panoptic_bundle.py runs/shapes-panoptic/model.safetensors --name shapes-panoptic \\
        --eval synthetic-panoptic:100,size=160x120 --calib synthetic --zoo
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import edgeseg
    from edgeseg.bundle import Bundle
    from edgeseg.data import open_dataset
    from edgeseg.data.base import recordable_spec
    from edgeseg.eval import evaluate_panoptic
    from edgeseg.export.panoptic_export import export_panoptic_bundle
    from edgeseg.models import load_checkpoint
    from edgeseg.quant import quantize_bundle
    from edgeseg.structures import InputSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True)
    p.add_argument("--out", default=None, help="bundle folder (default /tmp/NAME.edgeseg)")
    p.add_argument("--eval", default="synthetic-panoptic:100",
                   help="the dataset the FP32 PQ is recorded on and the INT8 gate scores (tests re-score both)")
    p.add_argument("--calib", default=str(ROOT / "calibration" / "synthetic.toml"))
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--zoo", action="store_true", help="copy the result to edgeseg/zoo/NAME.edgeseg")
    args = p.parse_args(argv)

    out = Path(args.out or f"/tmp/{args.name}.edgeseg")
    model = load_checkpoint(args.checkpoint)
    extra = model.checkpoint_meta.extra
    bundle = export_panoptic_bundle(model, out, name=args.name, input_spec=InputSpec.from_dict(extra["input_spec"]),
                                    classes=extra.get("classes"), category_ids=extra.get("category_ids") or None,
                                    overwrite=True, include_checkpoint=False,
                                    provenance={"checkpoint": Path(args.checkpoint).name})
    dataset = open_dataset(args.eval, split="val")
    with edgeseg.load(bundle, backend="onnxruntime", precision="fp32") as predictor:
        scores = evaluate_panoptic(predictor, dataset, progress=False)
    bundle.update_report("accuracy", {"fp32": {"data": recordable_spec(args.eval), "split": "val", "backend": "onnxruntime",
                                               "metric": "PQ", "pq": scores.pq, "scores": scores.to_dict()}})
    print(f"{args.name}: FP32 PQ {100 * scores.pq:.2f} on {args.eval}")
    for target in ("cpu", "tensorrt"):
        report = quantize_bundle(bundle, args.calib, target=target, eval_dataset=dataset, max_drop=args.max_drop,
                                 frames=args.frames, progress=False, eval_spec=args.eval, eval_split="val")
        print(f"{target}: PQ {report.fp32_score:.2f} -> {report.int8_score:.2f}")
    bundle = Bundle.open(out)
    if args.zoo:
        dest = ROOT / "edgeseg" / "zoo" / f"{args.name}.edgeseg"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(out, dest)
        print(f"copied to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
