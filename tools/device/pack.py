#!/usr/bin/env python
"""Pack what a device run needs into ``.device/`` (git-ignored, sent with ``carry``) and check that the
tree which travels stays under the device tool's 64 MiB.

    python tools/device/pack.py                      # street instance frames + street-instance's weights
    python tools/device/pack.py --quality 80 --budget-mib 60
    python tools/device/pack.py --task panoptic      # street panoptic truth + street-panoptic's weights
    python tools/device/pack.py --task instance,panoptic   # both (the frames once, at quality 75)
    python tools/device/pack.py --task road          # CamVid + Cityscapes in CamVid's classes (issue 14)

What goes in (docs/device.md), ``--task instance`` (the default; tools/device/street.py):

* ``cityscapes/train/*.webp``: the 2,074 training frames of ``cityscapes_panoptic`` re-encoded as WebP
  at ``--quality`` (80: 42 MiB; the JPEGs are 66 MiB), and ``cityscapes/instances_train.json.gz``
  (the COCO instance truth with the new file names; 2.4 MiB gzipped, unpacked on the device);
* ``init/street-instance.onnx``: the shipped SOLOv2's weights (``tools/train_instance.py --init``).

``--task panoptic`` (tools/device/street.py's arm ``p``): the same frames, ``cityscapes/panoptic_train/*.webp``
(the panoptic truth as lossless WebP: the same segment ids in 5.5 MiB against the PNGs' 11.3),
``cityscapes/panoptic_train.json.gz`` (file names changed) and ``init/street-panoptic.onnx``
(``tools/train_panoptic.py --init``); 56 MiB at quality 80. Both street tasks: 58 MiB at quality 75.

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


def _webp(src: Path, dst: Path, quality: int, lossless: bool = False) -> int:
    """``src`` re-encoded as WebP at ``dst`` (``lossless``: bit-exact pixels, for truth images); bytes."""
    import cv2

    from edgeseg.errors import DataError

    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read {src}")
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else quality])
    dst.write_bytes(buf.tobytes())
    return len(buf)


def pack_frames(images: list[dict], src: Path, dst: Path, quality: int, write: bool = True) -> int:
    """The COCO ``images`` entries' files from ``src`` as WebP in ``dst``; each entry's ``file_name``
    changed to the new name (``write`` False: only that, another task wrote them). Bytes written."""
    from tqdm import tqdm

    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for im in tqdm(images, desc="webp", unit="img", disable=not (write and sys.stderr.isatty())):
        name = Path(im["file_name"]).with_suffix(".webp").name
        if write:
            total += _webp(src / im["file_name"], dst / name, quality)
        im["file_name"] = name
    return total


def _coco_json(path: Path) -> dict:
    from edgeseg.errors import DataError

    if not path.is_file():
        raise DataError(f"{path} not found", fix="give --data the real-data folder (../shared/data)")
    return json.loads(path.read_text())


def _gzip_json(obj: dict, path: Path) -> int:
    blob = gzip.compress(json.dumps(obj).encode(), 6)
    path.write_bytes(blob)
    return len(blob)


def pack_instances(src: Path, dst: Path, quality: int, frames: bool = True) -> int:
    """The training frames as WebP and the instance JSON (file names changed) gzipped; bytes written.
    ``frames`` False: the frames are there already (another task packed them)."""
    coco = _coco_json(src / "instances_train.json")
    total = pack_frames(coco["images"], src / "train", dst / "train", quality, write=frames)
    return total + _gzip_json(coco, dst / "instances_train.json.gz")


def pack_panoptic(src: Path, dst: Path, quality: int, frames: bool = True) -> int:
    """The training frames as WebP, the panoptic truth as lossless WebP (the same segment ids, half the
    PNGs' size) and the panoptic JSON (file names changed) gzipped; bytes written."""
    from tqdm import tqdm

    pan = _coco_json(src / "panoptic_train.json")
    total = pack_frames(pan["images"], src / "train", dst / "train", quality, write=frames)
    (dst / "panoptic_train").mkdir(parents=True, exist_ok=True)
    for ann in tqdm(pan["annotations"], desc="truth", unit="img", disable=not sys.stderr.isatty()):
        name = Path(ann["file_name"]).with_suffix(".webp").name
        total += _webp(src / "panoptic_train" / ann["file_name"], dst / "panoptic_train" / name, 0, lossless=True)
        ann["file_name"] = name
    return total + _gzip_json(pan, dst / "panoptic_train.json.gz")


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


TASKS = ("instance", "panoptic", "road")
INITS = {"instance": REPO / "edgeseg/zoo/street-instance.edgeseg/model.onnx",
         "panoptic": REPO / "edgeseg/zoo/street-panoptic.edgeseg/model.onnx"}


def main(argv: list[str] | None = None) -> int:
    from edgeseg.paths import data_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="instance",
                   help="instance (default), panoptic (street.py's arms; both: instance,panoptic, the frames once) "
                        "or road (road.py's)")
    p.add_argument("--data", default=None, help="the real-data folder (default: ../shared/data)")
    p.add_argument("--out", default=str(REPO / ".device"), help="the pack (default .device/, git-ignored)")
    p.add_argument("--quality", type=int, default=None,
                   help="WebP quality of the frames (default 80 for one street task, 75 for both and for road)")
    p.add_argument("--init", default=str(INITS["instance"]), help="the instance arms' start (default: the shipped street-instance)")
    p.add_argument("--init-panoptic", default=str(INITS["panoptic"]),
                   help="the panoptic arm's start (default: the shipped street-panoptic)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="the device tool's limit (default 64)")
    args = p.parse_args(argv)
    from edgeseg.errors import EdgesegError

    tasks = [t for t in args.task.split(",") if t]
    if not tasks or set(tasks) - set(TASKS) or ("road" in tasks and len(tasks) > 1):
        print(f"pack: --task {args.task}: give instance, panoptic, instance,panoptic or road", file=sys.stderr)
        return 2
    quality = args.quality or (80 if tasks in (["instance"], ["panoptic"]) else 75)
    shared = Path(args.data) if args.data else (data_root() or Path("../shared/data"))
    if (shared / "panoptic_train.json").is_file():  # given the cityscapes_panoptic folder itself
        shared = shared.parent
    inits = {"instance": Path(args.init), "panoptic": Path(args.init_panoptic)}
    for t in tasks:
        if t in inits and not inits[t].is_file():
            print(f"pack: {t} weights {inits[t]} not found: give a model.onnx (e.g. edgeseg/zoo/street-{t}.edgeseg/"
                  "model.onnx)", file=sys.stderr)
            return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    try:
        if tasks == ["road"]:
            data_bytes = pack_road(shared, out / "road", quality)
        else:
            data_bytes = 0
            for i, t in enumerate(tasks):
                pack = pack_instances if t == "instance" else pack_panoptic
                data_bytes += pack(shared / "cityscapes_panoptic", out / "cityscapes", quality, frames=i == 0)
                (out / "init").mkdir(parents=True, exist_ok=True)
                shutil.copy2(inits[t], out / "init" / f"street-{t}.onnx")
    except EdgesegError as e:
        print(f"pack: error: {e}", file=sys.stderr)
        return 2
    pack = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    tree = travelling_files(REPO)
    total = pack + sum(tree.values())
    print(f"pack {out} ({','.join(tasks)}): {pack / MIB:.1f} MiB (frames and truth {data_bytes / MIB:.1f} MiB at WebP "
          f"quality {quality})")
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
