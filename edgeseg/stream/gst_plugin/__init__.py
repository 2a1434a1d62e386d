"""The ``edgeseg`` GStreamer element (``python/edgeseg_element.py``) and the environment it needs.

``python -m edgeseg.stream.gst_plugin`` prints the two variables to export::

    export GST_PLUGIN_PATH=<this folder>      # gst-python's loader scans $GST_PLUGIN_PATH/python/
    export PYTHONPATH=<repo>:<venv site-packages>

The loader embeds the system's libpython (Debian 12: 3.11.2), so the packages on PYTHONPATH must be
built for the same CPython minor version (3.11); see docs/streaming.md.
"""
from __future__ import annotations

import site
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REPO = PLUGIN_DIR.parents[2]


def environment() -> dict[str, str]:
    """``GST_PLUGIN_PATH`` and ``PYTHONPATH`` that let gst-launch-1.0 load the element with this Python's packages."""
    paths = [str(REPO), *site.getsitepackages()]
    return {"GST_PLUGIN_PATH": str(PLUGIN_DIR), "PYTHONPATH": ":".join(dict.fromkeys(paths)),
            "PYTHON_VERSION_NEEDED": f"{sys.version_info.major}.{sys.version_info.minor}"}
