"""The fully connected CRF as a decode step on CamVid val: mIoU with and without it, and the time per
frame of each implementation, single thread.

    OMP_NUM_THREADS=1 python tools/bench/crf.py --json crf.json

Protocol: the ``road`` bundle was trained on CamVid ``train``, which holds most of the val sequence's
neighbourhood (0016E5), so CRF settings are never chosen on train frames. The 101 val frames are sorted
by name; the first 50 (``--split tune``) were used to choose the decode option's CRF defaults, and
this script reports on the last 51 (``--split report``, default). ``--split all`` takes all 101.

The shipped ``road`` bundle (480x360 logits) runs once per frame on ONNX Runtime; its logits are then
refined by:

* ``none``: argmax, the decoder's default (CRF off);
* ``pydensecrf``: pydensecrf itself (``pip install pydensecrf2``; skipped when absent), which the
  numpy ``lattice`` equals to 2.4e-5 in ``Q`` (tests/decode/test_crf.py);
* ``lattice``: :mod:`edgeseg.decode.crf`'s numpy permutohedral lattice (pydensecrf's algorithm; about
  9 s per frame, so only on the first ``--lattice-frames`` frames, to show it equals pydensecrf there:
  ``max |dQ|`` and argmax agreement are printed);
* ``fast``: :func:`edgeseg.decode.crf_fast.fast_crf_logits` on a ``--fast-size`` grid (the decode option
  ``crf_method="fast"``), timed ``--repeats`` times per frame;
* ``pydensecrf@fast-frames``: ``none`` and ``pydensecrf`` restricted to the lattice's frames.

``--data SPEC`` (any ``edgeseg train`` dataset spec, with ``--data-split``) scores other frames, e.g. the
Cityscapes ``val`` cities in CamVid's classes (``cityscapes-camvid:``), which neither the ``road``
bundle nor the CRF settings ever saw; frames whose size is not the network's are refined at the
logits' resolution with the frame resized to it (as the decode option does) and the labels are
scaled back (nearest) to score.

The bundle's decoder ``class_bias`` (e.g. ``road``'s since session 30), if it has one, is added to the
logits before the argmax and the CRF, as the decoder adds it (``edgeseg.decode.semantic``), so ``none``
scores what ``edgeseg eval`` scores up to the upsampling: this script takes the argmax at the logits'
size and scales the labels (nearest), ``edgeseg eval`` resizes the logits (bilinear) first.
``--no-class-bias`` scores the raw logits (what this script did before; bundles without a bias, such as
``road-camvid``, score the same either way).

CRF settings: the decode option's defaults (:class:`edgeseg.structures.SemanticOptions`), overridable.
Timings: the CRF alone (features, kernels, inference, the fast method's resizing; not the network or
the argmax); ``ms`` the median wall time, ``cpu ms`` the median process CPU time (the two differ on a
loaded machine). mIoU over the 11 classes, void (11) ignored.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edgeseg._io import write_json  # noqa: E402
from edgeseg.cli._common import print_table  # noqa: E402
from edgeseg.data.io import read_image  # noqa: E402
from edgeseg.decode.crf import CRFParams, dense_crf, softmax  # noqa: E402
from edgeseg.decode.crf_fast import fast_crf_logits  # noqa: E402
from edgeseg.eval.semantic import SemanticMetric  # noqa: E402
from edgeseg.paths import data_root  # noqa: E402
from edgeseg.structures import SemanticOptions  # noqa: E402

VOID = 11
TUNE_FRAMES = 50  # the first 50 val frames by name chose the defaults; the last 51 report


def camvid_val(split: str = "all") -> list[tuple[Path, Path]]:
    """CamVid val (image, label) pairs sorted by file name; ``tune``: the first 50, ``report``: the rest."""
    root = data_root()
    if root is None or not (root / "camvid" / "val.txt").exists():
        raise SystemExit("CamVid not found: set EDGESEG_DATA to the shared data folder (it holds camvid/)")
    pairs = []
    for line in (root / "camvid" / "val.txt").read_text().split("\n"):
        if line.strip():
            img, lab = line.split()
            pairs.append((root / "camvid" / img, root / "camvid" / lab))
    pairs.sort(key=lambda p: p[0].name)
    return {"all": pairs, "tune": pairs[:TUNE_FRAMES], "report": pairs[TUNE_FRAMES:]}[split]


def update(metric: SemanticMetric, pred: np.ndarray, gt: np.ndarray) -> None:
    """Score ``pred`` against ``gt``, scaling the labels to the truth's size (nearest) when they differ."""
    import cv2

    if pred.shape != gt.shape:
        pred = cv2.resize(pred.astype(np.uint8), gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
    metric.update(pred, gt)


def pydensecrf_q(logits: np.ndarray, rgb: np.ndarray, p: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = logits.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary_from_softmax(softmax(logits)))
    if p.gaussian_compat:
        crf.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    if p.bilateral_compat:
        crf.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(rgb),
                                 compat=p.bilateral_compat)
    return np.array(crf.inference(p.iterations)).reshape(c, h, w)


def timed(fn, *args, repeats: int = 1) -> tuple[np.ndarray, float, float]:
    """(output, median wall ms, median CPU ms) over ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return out, statistics.median(wall), statistics.median(cpu)


def params_from(args: argparse.Namespace) -> CRFParams:
    return CRFParams(iterations=args.iterations, gaussian_sxy=args.gaussian_sxy, gaussian_compat=args.gaussian_compat,
                     bilateral_sxy=args.bilateral_sxy, bilateral_srgb=args.bilateral_srgb,
                     bilateral_compat=args.bilateral_compat)


def parse(argv: list[str] | None) -> argparse.Namespace:
    d = SemanticOptions()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("report", "tune", "all"), default="report", help="val frames (module doc)")
    ap.add_argument("--frames", type=int, default=0, help="use only the first N frames of the split (0: all)")
    ap.add_argument("--data", default=None, metavar="SPEC",
                    help="score these frames instead of CamVid val (e.g. cityscapes-camvid: for unseen cities)")
    ap.add_argument("--data-split", default="val", help="split of --data (default val)")
    ap.add_argument("--bundle", default="road", help="bundle whose logits are refined (default road)")
    ap.add_argument("--no-class-bias", action="store_true", help="ignore the bundle's decoder class_bias (module doc)")
    ap.add_argument("--lattice-frames", type=int, default=5, help="frames for the numpy lattice (0: skip)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of the fast method per frame")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--fast-size", type=int, default=d.crf_fast_size)
    ap.add_argument("--gaussian-sxy", type=float, default=d.crf_gaussian_sxy)
    ap.add_argument("--gaussian-compat", type=float, default=d.crf_gaussian_compat)
    ap.add_argument("--bilateral-sxy", type=float, default=d.crf_bilateral_sxy)
    ap.add_argument("--bilateral-srgb", type=float, default=d.crf_bilateral_srgb)
    ap.add_argument("--bilateral-compat", type=float, default=d.crf_bilateral_compat)
    ap.add_argument("--json", help="write the results here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import cv2

    import edgeseg

    cv2.setNumThreads(1)
    try:
        import pydensecrf.densecrf  # noqa: F401
        have_pyd = True
    except ImportError:
        have_pyd = False
    params = params_from(args)
    if args.data:
        from edgeseg.data import open_dataset

        dataset = open_dataset(args.data, args.data_split)
        pairs = list(range(len(dataset)))[: args.frames or None]
        void = dataset.ignore_index
    else:
        dataset, void = None, VOID
        pairs = camvid_val(args.split)[: args.frames or None]
    nl = min(args.lattice_frames, len(pairs))
    names = ["none", "fast"] + (["pydensecrf"] if have_pyd else [])
    sub = ([f"none@{nl}", f"lattice@{nl}"] + ([f"pydensecrf@{nl}"] if have_pyd else [])) if nl else []
    metrics = {n: SemanticMetric(11, ignore_index=void, boundary=False) for n in names + sub}
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names + sub}
    lattice_vs_pyd = {"max_abs_dq": 0.0, "argmax_agreement": []}
    predictor = edgeseg.load(args.bundle, backend="onnxruntime", precision="fp32", threads=1)
    opts = predictor.manifest.decoder_options
    probabilities = isinstance(opts, SemanticOptions) and opts.scores == "probabilities"
    bias = (np.asarray(opts.class_bias, np.float32)[:, None, None]
            if isinstance(opts, SemanticOptions) and opts.class_bias and not args.no_class_bias else None)
    with predictor:
        for k, item in enumerate(pairs):
            if dataset is not None:
                sample = dataset[item]
                rgb, gt = sample.image, sample.labels
            else:
                rgb, gt = read_image(item[0]), cv2.imread(str(item[1]), cv2.IMREAD_UNCHANGED)
            feed, meta = predictor.preprocess(rgb)
            if meta.content != meta.network:
                raise SystemExit(f"bundle {args.bundle!r} letterboxes; this bench expects a plain resize")
            logits = predictor.runner.infer(feed)["logits"][0].astype(np.float32)
            if probabilities:  # the decoder takes the scores' log before the bias and the CRF
                logits = np.log(np.maximum(logits, 1e-12))
            if bias is not None:
                logits = logits + bias
            if logits.shape[1:] != rgb.shape[:2]:  # refine at the logits' size, score at the labels' (nearest)
                rgb = cv2.resize(rgb, logits.shape[:0:-1], interpolation=cv2.INTER_AREA)
            plain = logits.argmax(0)
            update(metrics["none"], plain, gt)
            z, ms, cpu = timed(fast_crf_logits, logits, rgb, params, args.fast_size, repeats=args.repeats)
            update(metrics["fast"], z.argmax(0), gt)
            times["fast"].append((ms, cpu))
            q_pyd = None
            if have_pyd:
                q_pyd, ms, cpu = timed(pydensecrf_q, logits, rgb, params)
                update(metrics["pydensecrf"], q_pyd.argmax(0), gt)
                times["pydensecrf"].append((ms, cpu))
            if k < nl:
                update(metrics[f"none@{nl}"], plain, gt)
                q, ms, cpu = timed(dense_crf, logits, rgb, params, "lattice")
                update(metrics[f"lattice@{nl}"], q.argmax(0), gt)
                times[f"lattice@{nl}"].append((ms, cpu))
                if q_pyd is not None:
                    update(metrics[f"pydensecrf@{nl}"], q_pyd.argmax(0), gt)
                    times[f"pydensecrf@{nl}"].append(times["pydensecrf"][-1])
                    lattice_vs_pyd["max_abs_dq"] = max(lattice_vs_pyd["max_abs_dq"], float(np.abs(q - q_pyd).max()))
                    lattice_vs_pyd["argmax_agreement"].append(float((q.argmax(0) == q_pyd.argmax(0)).mean()))
            print(f"frame {k + 1}/{len(pairs)} done", file=sys.stderr, flush=True)
    rows = []
    for n in names + sub:
        t = times[n]
        rows.append({"decode": n, "frames": len(pairs) if "@" not in n else nl,
                     "mIoU": round(100 * metrics[n].compute().miou, 2),
                     "crf ms/frame": round(statistics.median(x[0] for x in t), 1) if t else 0.0,
                     "crf cpu ms/frame": round(statistics.median(x[1] for x in t), 1) if t else 0.0})
    print_table(rows)
    if lattice_vs_pyd["argmax_agreement"]:
        print(f"lattice vs pydensecrf on {nl} frames: max |dQ| {lattice_vs_pyd['max_abs_dq']:.2e}, argmax agreement "
              f"min {min(lattice_vs_pyd['argmax_agreement']):.6f}")
    write_json(args.json, {"rows": rows, "params": params.__dict__, "fast_size": args.fast_size,
                           "split": args.split if not args.data else f"{args.data} ({args.data_split})", "bundle": args.bundle,
                           "class_bias": None if bias is None else bias.ravel().tolist(),
                           "lattice_vs_pydensecrf": lattice_vs_pyd, "repeats": args.repeats,
                           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "load_average": os.getloadavg(), "threads": 1,
                           "command": " ".join(["tools/bench/crf.py"] + (argv if argv is not None else sys.argv[1:]))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
