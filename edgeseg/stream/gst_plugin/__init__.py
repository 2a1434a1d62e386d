"""The ``edgeseg`` GStreamer element (``python/edgeseg_element.py``) and the environment it needs.

``python -m edgeseg.stream.gst_plugin`` prints the two variables to export::

    export GST_PLUGIN_PATH=<this folder>      # gst-python's loader scans $GST_PLUGIN_PATH/python/
    export PYTHONPATH=<repo>:<venv site-packages>

The loader embeds the system's libpython (Debian 12: 3.11.2), so the packages on PYTHONPATH must be
built for the same CPython minor version (3.11); see docs/streaming.md. That embedded interpreter
also finds its prefix through the ``python3`` on ``PATH``: run gst-launch-1.0 with a virtual
environment's ``bin`` off ``PATH`` (``deactivate`` first, or ``env PATH=... gst-launch-1.0``).
"""
from __future__ import annotations

import glob
import os
import re
import site
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REPO = PLUGIN_DIR.parents[2]


def environment(path: str | None = None) -> dict[str, str]:
    """``GST_PLUGIN_PATH`` and ``PYTHONPATH`` that let gst-launch-1.0 load the element with this
    Python's packages, and a ``PATH`` without virtual-environment ``bin`` folders: the interpreter
    embedded in GStreamer's Python loader takes its prefix from the ``python3`` it finds on ``PATH``,
    and an activated venv's (another Python build) breaks it ("gi.repository.Gst is no dict").
    ``LD_PRELOAD`` puts GCC's unwinder ahead of the ``libunwind`` that ``gst-launch-1.0`` links through
    libgstreamer, so OpenVINO and ONNX Runtime inside the element do not abort on their first exception
    (see ``edgeseg/_unwind.py``)."""
    paths = [str(REPO), *site.getsitepackages()]
    bins = (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
    clean = [b for b in bins if b and not (Path(b).parent / "pyvenv.cfg").is_file()]
    return {"GST_PLUGIN_PATH": str(PLUGIN_DIR), "PYTHONPATH": ":".join(dict.fromkeys(paths)),
            "PATH": os.pathsep.join(clean), "LD_PRELOAD": _preload(),
            "PYTHON_VERSION_NEEDED": f"{sys.version_info.major}.{sys.version_info.minor}"}


def _preload() -> str:
    """``LD_PRELOAD`` with GCC's unwinder first (what the caller's environment preloads is kept)."""
    from ..._unwind import LIBGCC

    have = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if p and p != LIBGCC]
    return " ".join([LIBGCC, *have])


def loader_python(system_path: str | None = None) -> tuple[str, str] | None:
    """(the plugin file, ``"X.Y"``) of GStreamer's Python plugin loader (``libgstpython.so``), read from the libpython
    it names; None where no loader is found. ``system_path``: ``GST_PLUGIN_SYSTEM_PATH`` (default: the environment's,
    then the distributions' plugin folders)."""
    given = (os.environ.get("GST_PLUGIN_SYSTEM_PATH_1_0") or os.environ.get("GST_PLUGIN_SYSTEM_PATH", "")
             if system_path is None else system_path)  # (GStreamer reads the _1_0 name first)
    folders = [d for d in given.split(os.pathsep) if d] or [
        *sorted(glob.glob("/usr/lib/*/gstreamer-1.0")), "/usr/lib/gstreamer-1.0", "/usr/lib64/gstreamer-1.0",
        *sorted(glob.glob("/usr/local/lib/*/gstreamer-1.0")), "/usr/local/lib/gstreamer-1.0"]
    for folder in folders:
        for f in sorted(glob.glob(os.path.join(folder, "libgstpython*.so"))):
            try:
                found = re.search(rb"libpython(3\.\d+)", Path(f).read_bytes())
            except OSError:
                continue
            if found:
                return f, found.group(1).decode()
    return None


def version_problem(system_path: str | None = None) -> str | None:
    """Why the element cannot load from this Python (the loader embeds another CPython), or None. Session 58 (an
    audit on Python 3.12/3.13): the exports were printed all the same, and gst-launch-1.0 then said only "can't find
    gi.repository.Gst" and "no element edgeseg"."""
    loader = loader_python(system_path)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if loader is None or loader[1] == here:
        return None
    return (f"GStreamer's Python plugin loader ({loader[0]}) embeds CPython {loader[1]}, and this is Python {here}: "
            f"the element cannot load edgeseg or its packages from this environment\n"
            f"  fix: make the virtual environment with python{loader[1]} (e.g. python{loader[1]} -m venv .venv; "
            f"pip install 'edgeseg[gst]'), and run this again from it; edgeseg run's own GStreamer reader and sinks "
            f"work from any Python")
