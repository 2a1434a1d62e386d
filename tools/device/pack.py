#!/usr/bin/env python
"""Pack what a device run needs into ``.device/`` (git-ignored, sent with ``carry``) and check that the
tree which travels stays under the device tool's 64 MiB.

    python tools/device/pack.py                      # street instance frames + street-instance's weights
    python tools/device/pack.py --quality 80 --budget-mib 60
    python tools/device/pack.py --task road          # CamVid + Cityscapes in CamVid's classes (issue 14)

What goes in (docs/device.md), ``--task instance`` (the default; tools/device/street_instance.py):

* ``cityscapes/train/*.webp``: the 2,074 training frames of ``cityscapes_panoptic`` re-encoded as WebP
  at ``--quality`` (80: 42 MiB; the JPEGs are 66 MiB), and ``cityscapes/instances_train.json.gz``
  (the COCO instance truth with the new file names; 2.4 MiB gzipped, unpacked on the device);
* ``init/street-instance.onnx``: the shipped SOLOv2's weights (``tools/train_instance.py --init``).

``--task road`` (tools/device/road.py): two folders in CamVid's layout, each read with ``camvid:``:

* ``road/camvid``: CamVid's 367 ``train`` frames (all three drives, ``0006R0`` among them: the run holds
  it out itself) as WebP, their label PNGs as they are;
* ``road/cityscapes``: the 2,074 training frames of ``cityscapes_panoptic`` as WebP and their truth as
  8-bit label maps in CamVid's classes, exactly the labels ``cityscapes-camvid:`` reads (8 MiB instead of
  16 MiB of panoptic PNGs). At quality 75 the two hold about 50 MiB (quality 80 would pass the 64 MiB with the tree).

The device tool sends the tracked tree too, and the zoo alone is ~100 MB: the run goes from a
throwaway branch without ``edgeseg/zoo`` (docs/device.md). The check counts the tree as it would
travel from such a branch and fails, naming the largest parts, when tree + pack exceed the budget.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MIB = 1 << 20


def travelling_files(repo: Path, without: tuple[str, ...] = ("edgeseg/zoo/",)) -> dict[str, int]:
    """Bytes of each file that would travel from a branch without ``without``: tracked and untracked
    files that git does not ignore, as the device tool counts them."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout.decode().split("\0")
    sizes = {}
    for name in filter(None, out):
        p = repo / name
        if p.is_file() and not name.startswith(without):
            sizes[name] = p.stat().st_size
    return sizes


def pack_instances(src: Path, dst: Path, quality: int) -> int:
    """The training frames as WebP and the instance JSON (file names changed) gzipped; bytes written."""
    import cv2
    from tqdm import tqdm

    from edgeseg.errors import DataError

    js = src / "instances_train.json"
    if not js.is_file():
        raise DataError(f"{js} not found", fix="give --data the cityscapes_panoptic folder of ../shared/data")
    coco = json.loads(js.read_text())
    (dst / "train").mkdir(parents=True, exist_ok=True)
    total = 0
    for im in tqdm(coco["images"], desc="webp", unit="img", disable=not sys.stderr.isatty()):
        img = cv2.imread(str(src / "train" / im["file_name"]), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read {src / 'train' / im['file_name']}")
        ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, quality])
        im["file_name"] = Path(im["file_name"]).with_suffix(".webp").name
        (dst / "train" / im["file_name"]).write_bytes(buf.tobytes())
        total += len(buf)
    blob = gzip.compress(json.dumps(coco).encode(), 6)
    (dst / "instances_train.json.gz").write_bytes(blob)
    return total + len(blob)


def pack_semantic(spec: str, split: str, dst: Path, quality: int) -> int:
    """The frames of a semantic dataset spec in CamVid's layout under ``dst`` (``{split}/NAME.webp`` at
    ``quality``, ``{split}annot/NAME.png`` the reader's label maps, void 255, and ``{split}.txt``
    pairing them), so that ``camvid:dst`` reads the same labels; bytes written."""
    import cv2
    import numpy as np
    from tqdm import tqdm

    from edgeseg.data.base import open_semantic_dataset
    from edgeseg.errors import DataError

    ds = open_semantic_dataset(spec, split=split, purpose="the road pack")
    if len(ds.classes) > 11:
        raise DataError(f"{spec} has {len(ds.classes)} classes; the pack's camvid: reader keeps 11",
                        fix="pack a dataset in CamVid's classes (camvid:, cityscapes-camvid:)")
    (dst / split).mkdir(parents=True, exist_ok=True)
    (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
    lines, total, seen = [], 0, set()
    for i in tqdm(range(len(ds)), desc=f"webp {dst.name}", unit="img", disable=not sys.stderr.isatty()):
        s = ds[i]
        if s.name in seen or not s.name:
            raise DataError(f"{spec}: frame {i} has the name {s.name!r} twice or none", fix="pack a dataset with unique file names")
        seen.add(s.name)
        ok, buf = cv2.imencode(".webp", np.ascontiguousarray(s.image[..., ::-1]), [cv2.IMWRITE_WEBP_QUALITY, quality])
        (dst / split / f"{s.name}.webp").write_bytes(buf.tobytes())
        # PNG at the highest compression: half the size of OpenCV's default for Cityscapes' label maps
        ok, png = cv2.imencode(".png", np.ascontiguousarray(s.labels), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        (dst / f"{split}annot" / f"{s.name}.png").write_bytes(png.tobytes())
        lines.append(f"{split}/{s.name}.webp {split}annot/{s.name}.png")
        total += len(buf) + len(png)
    (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return total


def pack_road(data: Path, dst: Path, quality: int) -> int:
    """CamVid's ``train`` and Cityscapes' training cities in CamVid's classes, each in CamVid's layout; bytes."""
    return (pack_semantic(f"camvid:{data / 'camvid'}", "train", dst / "camvid", quality)
            + pack_semantic(f"cityscapes-camvid:{data / 'cityscapes_panoptic'}", "train", dst / "cityscapes", quality))


def main(argv: list[str] | None = None) -> int:
    from edgeseg.paths import data_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="instance", choices=("instance", "road"),
                   help="instance: street_instance.py's pack (default); road: tools/device/road.py's (issue 14)")
    p.add_argument("--data", default=None,
                   help="the real-data folder (default: ../shared/data; for --task instance also its cityscapes_panoptic folder)")
    p.add_argument("--out", default=str(REPO / ".device"), help="the pack (default .device/, git-ignored)")
    p.add_argument("--quality", type=int, default=None, help="WebP quality of the frames (default 80; road 75)")
    p.add_argument("--init", default=str(REPO / "edgeseg/zoo/street-instance.edgeseg/model.onnx"),
                   help="--task instance: weights to continue from (default: the shipped street-instance)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="the device tool's limit (default 64)")
    args = p.parse_args(argv)
    from edgeseg.errors import EdgesegError

    quality = args.quality or (75 if args.task == "road" else 80)
    shared = Path(args.data) if args.data else (data_root() or Path("../shared/data"))
    out = Path(args.out)
    if args.task == "instance" and not Path(args.init).is_file():
        print(f"pack: --init {args.init} not found: give a model.onnx (e.g. edgeseg/zoo/street-instance.edgeseg/"
              "model.onnx)", file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)
    try:
        if args.task == "road":
            data_bytes = pack_road(shared, out / "road", quality)
        else:
            root = shared if (shared / "instances_train.json").is_file() else shared / "cityscapes_panoptic"
            data_bytes = pack_instances(root, out / "cityscapes", quality)
    except EdgesegError as e:
        print(f"pack: error: {e}", file=sys.stderr)
        return 2
    if args.task == "instance":
        (out / "init").mkdir(parents=True)
        shutil.copy2(args.init, out / "init" / "street-instance.onnx")
    pack = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    tree = travelling_files(REPO)
    total = pack + sum(tree.values())
    print(f"pack {out}: {pack / MIB:.1f} MiB (frames and truth {data_bytes / MIB:.1f} MiB at WebP quality {quality})")
    print(f"tree without edgeseg/zoo: {sum(tree.values()) / MIB:.1f} MiB in {len(tree)} files; together "
          f"{total / MIB:.1f} MiB of the {args.budget_mib:g} MiB the device tool takes")
    if total > args.budget_mib * MIB:
        big = sorted(tree.items(), key=lambda kv: -kv[1])[:5]
        print("over the budget: lower --quality, or leave these out of the branch: "
              + ", ".join(f"{k} ({v / MIB:.1f} MiB)" for k, v in big), file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
