"""``edgeseg predict BUNDLE IMAGES... --out DIR``: label PNGs and colour overlays."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_json_option, add_runtime_options, print_table, write_json

NAME = "predict"
HELP = "segment images: writes <stem>_labels.png (uint8 class ids) and <stem>_overlay.png per image"
EXAMPLES = (
    "edgeseg predict road.edgeseg street.png --out preds/",
    "edgeseg predict road frames/*.jpg --out preds/ --backend onnxruntime --threads 2 --json preds.json",
    "edgeseg predict road.edgeseg img.png --out preds/ --alpha 0.6",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle path or the name of a bundle shipped with the package")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, WebP)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    add_runtime_options(p)
    add_json_option(p)


def overlay(rgb, labels, palette, alpha: float):
    """Alpha-blend the class colours over the image: ``(1 - alpha) * image + alpha * colour``."""
    import numpy as np

    from ..structures import colorize

    colour = colorize(labels, palette).astype(np.float32)
    return np.clip((1.0 - alpha) * rgb.astype(np.float32) + alpha * colour + 0.5, 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..data.io import read_image, write_image, write_label
    from ..errors import InputError
    from ..predictor import load

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be within 0..1, got {args.alpha}")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise InputError(f"image not found: {', '.join(missing)}", fix="check the paths")
    out = Path(args.out)
    predictor = load(args.bundle, backend=args.backend, precision=args.precision, target=args.target,
                     device=args.device, threads=args.threads)
    rows = []
    with predictor:
        for path in map(Path, args.images):
            rgb = read_image(path)
            t0 = time.perf_counter()
            result = predictor(rgb)
            dt = time.perf_counter() - t0
            labels_png, overlay_png = out / f"{path.stem}_labels.png", out / f"{path.stem}_overlay.png"
            write_label(labels_png, result.labels.astype(np.uint8))
            write_image(overlay_png, overlay(rgb, result.labels, predictor.palette, args.alpha))
            counts = np.bincount(result.labels.ravel(), minlength=len(predictor.classes))
            top = int(counts.argmax())
            rows.append({"image": str(path), "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "ms": 1e3 * dt,
                         "top class": predictor.classes[top] if top < len(predictor.classes) else str(top),
                         "labels": str(labels_png), "overlay": str(overlay_png),
                         "class_pixels": {predictor.classes[i] if i < len(predictor.classes) else str(i): int(c)
                                          for i, c in enumerate(counts) if c}})
    print(f"{predictor!r}: {len(rows)} image(s) -> {out}")
    print_table(rows, ["image", "size", "ms", "top class", "labels"])
    write_json(args.json, {"bundle": args.bundle, "backend": predictor.backend, "precision": args.precision, "images": rows})
    return 0
