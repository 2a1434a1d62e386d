"""``edgeseg doctor``: what this machine offers edgeseg (:mod:`edgeseg.environment`), and what to install."""
from __future__ import annotations

import argparse

from ._common import add_json_option, check_output, write_json

NAME = "doctor"
HELP = "show what this machine offers: CPU, runtimes, GPU, GStreamer decoders and encoders, OpenCV; and the fixes"
EXAMPLES = (
    "edgeseg doctor                      # before the first stream on a new machine, image or container",
    "edgeseg doctor --json machine.json  # the same as data (e.g. attached to a bug report)",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json_option(p)


def _yes(ok: bool, why: str | None = None) -> str:
    return "yes" if ok else f"no: {why}" if why else "no"


def _print(r: dict) -> None:
    e = r["edgeseg"]
    if "error" not in e:
        print(f"edgeseg   {e['version']} on Python {e['python']} ({e['executable']}), {e['platform']}")
        if e.get("jetson"):
            print(f"jetson    L4T {e['jetson']['l4t']}" + (f" (JetPack {e['jetson']['jetpack']})" if e["jetson"]["jetpack"] else ""))
    c = r["cpu"]
    if "error" not in c:
        print(f"cpu       {c['model']}, {c['machine']}, {c['cores']} cores; {' '.join(c['isa']) or 'no listed ISA flags'}; "
              f"INT8 sums: {c['int8_arithmetic']}")
    for name, rt in (r["runtimes"] if "error" not in r["runtimes"] else {}).items():
        extra = f" ({', '.join(rt['precisions'])})" if rt.get("precisions") else ""
        print(f"runtime   {name:<12} {rt['version'] or '-':<14} {_yes(rt['available'], rt['why_not'])}{extra}")
    g = r["gpu"]
    if g.get("available"):
        print(f"gpu       {g['name']} (sm {g['compute_capability']}, {g['memory_gib']} GiB"
              f"{', integrated' if g['integrated'] else ''}); dynamic engines up to batch "
              f"{g['dynamic_profile']['max_batch']}, side {g['dynamic_profile']['max_side']}")
    elif "error" not in g:
        print(f"gpu       none for TensorRT: {g['why_not']}")
    s = r["gstreamer"]
    if s.get("available"):
        print(f"gstreamer {s['version']}, PyGObject {s['pygobject']}"
              + (f", NVIDIA converter {s['nvidia_converter']}" if s["nvidia_converter"] else ""))
        print("  (decoders in the order a file source's decodebin tries them)")
        for codec, decs in s["decoders"].items():
            names = [d["name"] + (" [hardware]" if d["hardware"] else "") + ("" if d["used"] else " (not used)")
                     for d in decs]
            print(f"  decode  {codec:<7} {', '.join(names) or 'none'}")
        for name, enc in s["encoders"].items():
            print(f"  encode  {name:<13} {_yes(enc['usable'], enc['why_not'])}")
        print(f"  rtsp    server {_yes(s['rtsp']['server'], s['rtsp']['why_not'])}")
    elif "error" not in s:
        print(f"gstreamer no: {s['why_not']}")
    o = r["opencv"]
    if "error" not in o:
        print(f"opencv    {o['version']}, FFmpeg {_yes(o['ffmpeg'])}, GStreamer {_yes(o['gstreamer'])}, {o['threads']} threads")
    k = r["cache"]
    if "error" not in k:
        print(f"cache     {k['dir']} ({'writable' if k['writable'] else 'NOT writable'})")
        b = k.get("bundles", {})
        if b:
            kept = (f"removed after {b['kept_unused_days']:g} days unused" if b["kept_unused_days"] else "kept for ever")
            print(f"  bundles {b['count']} unpacked .zip bundles, {b['mb']:g} MB ({kept}; EDGESEG_BUNDLE_CACHE_DAYS)")
        for name, value in k.get("settings", {}).items():
            print(f"setting   {name}={value}")
    if not r["problems"]:
        print("problems  none")
        return
    print(f"problems  {len(r['problems'])}")
    for p in r["problems"]:
        print(f"  - {p['what']}\n    fix: {p['fix']}")


def run(args: argparse.Namespace) -> int:
    from ..environment import report

    if args.json:
        check_output(args.json, "--json")
    r = report()
    _print(r)
    write_json(args.json, r)
    return 0
