"""The ``edgeseg`` command. Each sub-command lives in its own module in this package and is found
by discovery: a module defines ``NAME``, ``HELP``, ``EXAMPLES``, ``add_arguments(parser)`` and
``run(args) -> int``, and may list further commands (objects with the same attributes) in
``EXTRA_COMMANDS``. Modules import only the standard library at top level, so ``--help`` is fast;
the real work is imported inside ``run``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any

from ..errors import MEMORY_FIX, EdgesegError, memory_error, out_of_memory

_EPILOG = """examples:
  edgeseg demo                                   # the whole product on a generated stream
  edgeseg models 'deeplab*'                      # list the model family
  edgeseg export deeplabv3plus_mobilenetv3_large --num-classes 11 --size 480x360 --out road.edgeseg
  edgeseg predict road.edgeseg street.png --out preds/
  edgeseg eval road.edgeseg --data camvid:../shared/data/camvid --split val

run 'edgeseg COMMAND --help' for a command's options and examples."""


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
        mods.extend(getattr(mod, "EXTRA_COMMANDS", ()))  # a module may define more commands (vos: eval-vos)
    return sorted(mods, key=lambda m: m.NAME)


#: ``--log-level`` (and ``EDGESEG_LOG_LEVEL``) names
LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_log_options(p: Any, top: bool) -> None:
    """The logging options, on the parser (``top``: real defaults) and on each command (not ``top``: defaults
    suppressed, so ``edgeseg predict -v`` works as ``edgeseg -v predict``; session 57, an operator's audit: ``-v`` after
    the command was refused and there was no quiet setting)."""
    kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs", **kw)
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only (no INFO lines)", **kw)
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="the lowest level logged (default info; "
                   "-v: debug, -q: warning; env EDGESEG_LOG_LEVEL)", **({"default": None} if top else kw))
    p.add_argument("--log-time", dest="log_time", action="store_const", const=True,
                   help="start each log line with its local date and time (default: where standard error is not a "
                        "terminal, unless systemd's journal stamps it; env EDGESEG_LOG_TIME=1/0)",
                   **({"default": None} if top else kw))


def _log_above_bars() -> Any:
    """At a terminal, the command's log lines are written above its progress bars (tqdm's), not glued to them (an
    operator's audit, session 57: the stream's 10 s line ran on from the bar). The CLI's own logging only: a library
    call leaves its application's handlers alone (a review)."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if not terminal:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def log_level(args: argparse.Namespace) -> int:
    """The logging level: ``--log-level``, else ``-v`` (debug) / ``-q`` (warning), else ``EDGESEG_LOG_LEVEL``, else
    info."""
    import logging

    name = args.log_level or ("debug" if args.verbose else "warning" if args.quiet else None)
    env = os.environ.get("EDGESEG_LOG_LEVEL", "").strip().lower()
    name = name or (env if env in LOG_LEVELS else "info")
    return getattr(logging, name.upper())


def log_time(given: bool | None) -> bool:
    """Whether log lines carry their time: ``--log-time``, else ``EDGESEG_LOG_TIME`` (1/0), else where standard error
    is not a terminal (a nohup file, a container's log) and not systemd's journal (``JOURNAL_STREAM``: it stamps its
    own)."""
    if given is not None:
        return given
    env = os.environ.get("EDGESEG_LOG_TIME", "").strip().lower()
    if env in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return env in ("1", "true", "yes", "on")
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return not terminal and not _to_journal()


def _to_journal() -> bool:
    """Whether standard error is systemd's journal: ``JOURNAL_STREAM`` (``DEV:INODE``) names the stream it gave the
    service, and standard error is that stream (systemd.exec(5): the variable is inherited, and a unit may send only
    standard output there, or a wrapper redirect standard error to a file; a review, session 57)."""
    given = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in given.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="edgeseg",
        description="Segmentation models to the edge: export, compress (INT8), deploy, stream.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgeseg {__version__}")
    _add_log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(_commands={})
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=mod.HELP,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in getattr(mod, "EXAMPLES", ())),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        _add_log_options(p.add_argument_group("logging"), top=False)  # also after the command (edgeseg predict -v ...)
        p.set_defaults(_run=mod.run)
        parser.get_default("_commands")[mod.NAME] = p
    return parser


#: options users of other tools type, and edgeseg's way (Ultralytics, jetson-inference, mmdeploy)
ALIASES = {
    "--conf": "--score-threshold T", "--confidence": "--score-threshold T", "--threshold": "--score-threshold T",
    "--iou": "the bundle's NMS threshold (edgeseg.load(B).set_options(iou_threshold=...) from Python)",
    "--imgsz": "the input size is the bundle's, set at export (edgeseg export ... --size WxH; edgeseg import ... --size)",
    "--source": "--source URI (edgeseg run) or the image paths (edgeseg predict B IMAGE...)",
    "--save-txt": "--json FILE (predict) or --json-out FILE (run)", "--save": "--out DIR (predict) or --sink OUT.mp4 (run)",
    "--model": "the bundle (edgeseg predict BUNDLE ...; edgeseg run --bundle BUNDLE)",
    "--network": "--bundle BUNDLE (the shipped names: edgeseg models --bundles)", "--visualize": "--alpha A (0..1) and --png-dir DIR",
    "--input": "--source URI", "--output": "--sink OUT.mp4 (run) or --out DIR (predict)",
    "--device": "--backend / --device (edgeseg COMMAND --help)", "--work-dir": "--out DIR",
}


def _unknown_arguments(parser: argparse.ArgumentParser, argv: list[str] | None, unknown: list[str]) -> None:
    """Unrecognised arguments, said by the command's own parser (its usage, not the top level's) with the nearest
    option it has, or edgeseg's way for another tool's option (:data:`ALIASES`); exits 2 as argparse does."""
    import difflib

    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if a in parser.get_default("_commands")), None)
    target = parser.get_default("_commands").get(command, parser)
    options = [o for o in target._option_string_actions if o.startswith("--")]
    hints = []
    for item in unknown:
        key = item.split("=", 1)[0]
        if key.startswith("-") and os.path.exists(item):  # a file whose name starts with a dash
            hints.append(_dash_file_hint(item))
        elif key.startswith("-"):
            if key in ALIASES:
                hints.append(f"{key}: in edgeseg, {ALIASES[key]}")
                continue
            close = difflib.get_close_matches(key, options, n=2, cutoff=0.75)
            if close:
                hints.append(f"{key}: did you mean {' or '.join(close)}?")
        elif "=" in item and command is not None:  # Ultralytics' key=value form
            hints.append(f"{item}: options are written --name value (edgeseg {command} --help)")
        elif command == "run" and item.lower().endswith((".mp4", ".mkv", ".avi", ".mov")):
            hints.append(f"{item}: the annotated video is --sink {item}")
    target.error(f"unrecognized arguments: {' '.join(unknown)}" + "".join(f"\n  {h}" for h in hints))


def _dash_file_hint(item: str) -> str:
    return f"{item}: a file of that name is read as an option; write ./{item} (or put -- before the file names)"


def main(argv: list[str] | None = None) -> int:
    """The ``edgeseg`` command: its exit status (docs/deployment.md "Exit codes and logs")."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while the commands' modules load or the arguments are read: a line, not a traceback
        print("edgeseg: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse's own error ("the following arguments are required: images"): add why
        dashed = [a for a in (sys.argv[1:] if argv is None else argv)
                  if isinstance(a, str) and a.startswith("-") and a != "-" and os.path.exists(a)]
        if e.code == 2 and dashed:
            print("".join(f"  {_dash_file_hint(a)}\n" for a in dashed), end="", file=sys.stderr)
        raise
    if unknown:
        _unknown_arguments(parser, argv, unknown)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    import logging
    import signal

    level = log_level(args)
    logging.basicConfig(level=level, format=("%(asctime)s " if log_time(args.log_time) else "")
                        + "%(levelname)s %(name)s: %(message)s")
    from .. import _progress

    _progress.QUIET = level > logging.INFO  # progress lines and notes follow the level too (-q: none)

    def terminated(signum, _frame):  # before a stream installs its own draining handler: end cleanly
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = None
    with contextlib.suppress(ValueError, OSError):  # not the main thread: the embedding program owns signals
        previous = signal.signal(signal.SIGTERM, terminated)
    from ._common import json_to_stdout

    try:
        with json_to_stdout(args), _log_above_bars():  # --json -: standard output holds the JSON only
            return int(args._run(args) or 0)
    except EdgesegError as e:
        if args.verbose:
            raise
        print(f"edgeseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        name = str(e) or "SIGINT"
        print(f"edgeseg {args.command}: interrupted ({name})", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    except ModuleNotFoundError as e:  # a part a device install leaves out (torch on a Jetson): name it and the fix
        fix = missing_module_fix(e.name or "")
        if args.verbose or fix is None:
            raise
        print(f"edgeseg {args.command}: error: this needs {e.name}, which is not installed here\n  fix: {fix}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a full disk, a folder made read-only mid-run: the system's reason, not a traceback
        if args.verbose:
            raise
        print(f"edgeseg {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # out of memory in a runtime or a library (MemoryError, std::bad_alloc, a library not mapped)
        if args.verbose or not out_of_memory(e):
            raise
        print(f"edgeseg {args.command}: error: {memory_error('the command', e)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: top-level module -> how to install it (the extras of pyproject.toml; the runtime core has no torch)
INSTALL = {
    "torch": "pip install torch==2.13.0 'edgeseg[torch]' (the CPU wheel: add --index-url "
             "https://download.pytorch.org/whl/cpu where PyPI would pull the CUDA build); export and train need it, "
             "running a bundle does not",
    "safetensors": "pip install 'edgeseg[torch]'",
    "onnxscript": "pip install 'edgeseg[torch]'",
    "openvino": "pip install 'edgeseg[openvino]'",
    "nncf": "pip install 'edgeseg[openvino]'",
    "gi": "pip install 'edgeseg[gst]' (PyGObject) and apt-get install gir1.2-gstreamer-1.0 gstreamer1.0-plugins-good "
          "(Python 3.8 / JetPack 5: apt-get install python3-gi and a venv made with --system-site-packages)",
    "ray": "pip install 'edgeseg[serve]'",
    "tensorrt": "use JetPack's or NVIDIA's TensorRT Python package (pip install 'edgeseg[tensorrt]' on a desktop)",
    "cupy": "pip install 'edgeseg[cuda]' (JetPack 5: cupy-cuda11x)",
    "pycocotools": "pip install pycocotools",
    "onnxruntime": "pip install onnxruntime (onnxruntime-gpu, or Jetson Zoo's wheel, on a GPU device)",
    "cv2": "pip install opencv-python-headless (or keep the system OpenCV on a Jetson)",
    "onnx": "pip install onnx", "tqdm": "pip install tqdm", "yaml": "pip install pyyaml", "numpy": "pip install numpy",
}


def missing_module_fix(name: str) -> str | None:
    """How to install the module ``name`` (``torch.nn`` -> torch's, when torch itself is missing), or None when it is
    none edgeseg relies on, or a submodule an installed package lacks (a version skew, or a bug: its traceback)."""
    import importlib.util

    top = name.split(".")[0]
    if top not in INSTALL:
        return None
    if name != top:
        with contextlib.suppress(ImportError, ValueError):  # sys.modules[top] = None: not importable, so missing
            if importlib.util.find_spec(top) is not None:
                return None
    return INSTALL[top]


def _os_error(e: OSError) -> str:
    import errno

    # a copy or a move (shutil, os.replace) names its source first and its destination second: a full disk or a
    # read-only file system is the destination's (before: "No space left on device: /tmp/...", a disk with room)
    where = e.filename2 if e.filename2 and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else e.filename
    what = f"{e.strerror or e}" + (f": {where}" if where else "")
    fix = {errno.ENOSPC: "free space on that disk, or write to another one",
           errno.EDQUOT: "free space on that disk, or write to another one",
           errno.EACCES: "check the permissions of that path, or write elsewhere",
           errno.EPERM: "check the permissions of that path, or write elsewhere",
           errno.EROFS: "the file system is read-only: write elsewhere",
           errno.ENOMEM: MEMORY_FIX}.get(e.errno or -1, "run again with --verbose for the details")
    return f"{what}\n  fix: {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
