#!/usr/bin/env python
"""Write composite VOS sequences (real cut-outs over real moving backgrounds, exact masks) in
DAVIS-2016's layout: a second opinion, beside DAVIS, for choosing propagation settings
(:mod:`edgeseg.data.composite_vos`).

    python tools/make_composite_vos.py --out runs/composite_vos --sequences 16 --frames 50
    python tools/bench/vos.py --root runs/composite_vos --methods propagator --set grow_px=16

Objects come from a COCO instance JSON (default: the Cityscapes training cities of the data
folder), backgrounds from a video (default: the dash-cam clip) and from that JSON's images panned.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from edgeseg.cli._common import run_tool

    return run_tool("make_composite_vos", _main, argv)


def _main(argv) -> int:
    from edgeseg.data.composite_vos import cutouts_from_instances, make_composite_davis
    from edgeseg.data.io import IMAGE_SUFFIXES, read_image
    from edgeseg.data.video import count_frames
    from edgeseg.errors import InputError
    from edgeseg.paths import data_root

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output DAVIS root (JPEGImages/480p/..., Annotations/480p/...)")
    p.add_argument("--instances", default=None, help="COCO instance JSON for the objects and the panned stills "
                   "(default: cityscapes_panoptic/instances_train.json of the data folder)")
    p.add_argument("--video", default=None, help="background video (default: video/dashcam_960x540.mp4); 'none': stills only")
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--objects", type=int, default=60, help="how many cut-outs to draw from")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.sequences < 1 or args.frames < 3:
        raise InputError("--sequences must be >= 1 and --frames >= 3", fix="e.g. --sequences 16 --frames 50")
    root = data_root()
    if root is None and not (args.instances and args.video):
        raise InputError("no data folder for the default objects and video",
                         fix="set EDGESEG_DATA (or place the data at ../shared/data), or pass --instances and --video")
    instances = Path(args.instances) if args.instances else root / "cityscapes_panoptic" / "instances_train.json"
    video = None if args.video == "none" else Path(args.video) if args.video else root / "video" / "dashcam_960x540.mp4"
    video_frames = count_frames(video) if video else None  # a missing or broken video fails before any work
    cutouts = cutouts_from_instances(instances, count=args.objects, seed=args.seed, progress=True)
    image_dir = instances.parent / instances.stem.removeprefix("instances_")
    stills = sorted(q for q in image_dir.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if image_dir.is_dir() else []
    if not stills:
        raise InputError(f"no images in {image_dir} for the panned backgrounds", fix="pass --instances with its image folder")
    names = make_composite_davis(args.out, cutouts=cutouts, video=video, stills=lambda k: read_image(stills[k % len(stills)]),
                                 sequences=args.sequences, frames=args.frames, seed=args.seed,
                                 video_frames=video_frames, progress=True)
    print(f"{len(names)} sequences of {args.frames} frames in {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
