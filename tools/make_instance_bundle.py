"""Build a shipped instance bundle from a trained instance checkpoint: export (no PyTorch weights),
record its FP32 mask AP in ``report.json["accuracy"]``, quantize for the ``cpu`` and ``tensorrt``
targets with mask AP as the gate, and optionally copy it into ``edgeseg/zoo``.

    python tools/train_instance.py --model solov2_mobilenetv3_small --size 192x144 --epochs 60 \\
        --steps-per-epoch 25 --batch 8 --threads 1 --out runs/solo_mbv3s_192
    python tools/make_instance_bundle.py runs/solo_mbv3s_192/model.safetensors --name shapes-instance \\
        --eval synthetic-instance:100 --pre-nms 200 --zoo
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
    from edgeseg.eval import category_map, evaluate_instances
    from edgeseg.export.instance_export import export_instance_bundle
    from edgeseg.models import load_checkpoint
    from edgeseg.quant import quantize_bundle
    from edgeseg.quant.accuracy import AP_SCORE_THRESHOLD
    from edgeseg.structures import InputSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True)
    p.add_argument("--out", default=None, help="bundle folder (default /tmp/NAME.edgeseg)")
    p.add_argument("--eval", default="synthetic-instance:100",
                   help="the dataset the FP32 mask AP is recorded on and the INT8 gate scores (tests re-score both)")
    p.add_argument("--calib", default=str(ROOT / "calibration" / "synthetic.toml"))
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--pre-nms", type=int, default=None,
                   help="SOLOv2: candidates kept before Matrix NMS (its [n, n] constants grow with n^2; default: the "
                        "checkpoint's)")
    p.add_argument("--zoo", action="store_true", help="copy the result to edgeseg/zoo/NAME.edgeseg")
    args = p.parse_args(argv)

    out = Path(args.out or f"/tmp/{args.name}.edgeseg")
    model = load_checkpoint(args.checkpoint)
    if args.pre_nms is not None:
        if not hasattr(model, "pre_nms"):
            raise SystemExit(f"--pre-nms: {model.model_name} has no pre-NMS candidate count")
        model.pre_nms = int(args.pre_nms)
    extra = model.checkpoint_meta.extra
    spec = InputSpec.from_dict(extra["input_spec"])
    bundle = export_instance_bundle(model, out, name=args.name, input_spec=spec, classes=extra.get("classes"),
                                    overwrite=True, include_checkpoint=False,
                                    provenance={"checkpoint": Path(args.checkpoint).name})
    dataset = open_dataset(args.eval, split="val")
    predictor = edgeseg.load(bundle, backend="onnxruntime", precision="fp32").set_options(score_threshold=AP_SCORE_THRESHOLD)
    with predictor:
        scores = evaluate_instances(predictor, dataset, category_map(predictor.classes, dataset.categories).to_category,
                                    progress=False)
    bundle.update_report("accuracy", {"fp32": {"data": recordable_spec(args.eval), "split": "val", "backend": "onnxruntime",
                                               "metric": "mask AP", "score_threshold": AP_SCORE_THRESHOLD,
                                               "mask_ap": scores.stats[0], **{"stats": scores.named()}}})
    print(f"{args.name}: FP32 mask AP {100 * scores.stats[0]:.2f} on {args.eval}")
    gate = dataset
    for target in ("cpu", "tensorrt"):
        report = quantize_bundle(bundle, args.calib, target=target, eval_dataset=gate, max_drop=args.max_drop,
                                 frames=args.frames, progress=False, eval_spec=args.eval, eval_split="val")
        print(f"{target}: {report.to_dict().get('fp32')} -> {report.to_dict().get('int8')}")
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
