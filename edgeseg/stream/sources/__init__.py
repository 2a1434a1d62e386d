"""Sources by URI scheme. :func:`open_source` picks GStreamer when it is available, OpenCV otherwise
(files, devices and image folders only)."""
from __future__ import annotations

from typing import Any

from ...errors import StreamError
from ..base import SOURCES, Source
from .gst_source import LAUNCHERS, GstSource
from .mux import MultiSource
from .opencv_source import OpenCVSource
from .uri import SourceURI, parse_source

SOURCES.add("gstreamer", GstSource, schemes=tuple(LAUNCHERS))
SOURCES.add("opencv", OpenCVSource, schemes=("file", "folder", "v4l2"))


def open_source(uri: str | Source, *, backend: str = "auto", **options: Any) -> Source:
    """A :class:`Source` for ``uri``. ``backend``: ``auto`` (GStreamer when it works, else OpenCV),
    ``gstreamer`` or ``opencv``. ``options`` go to the source (``realtime``, ``name``, ``buffer_size``, ...)."""
    if isinstance(uri, Source):
        return uri
    spec = parse_source(uri)
    if backend == "auto":
        from ..gst import available

        if spec.scheme == "folder":
            backend = "opencv"
        else:
            ok, why = available()
            backend = "gstreamer" if ok else "opencv"
            if not ok and spec.scheme not in SOURCES.entry("opencv").meta["schemes"]:
                raise StreamError(f"source {uri!r} needs GStreamer, which is not available: {why}")
    cls = SOURCES.get(backend)
    if spec.scheme not in SOURCES.entry(backend).meta["schemes"]:
        raise StreamError(f"the {backend} source cannot read {spec.scheme!r} sources ({uri})")
    return cls(str(uri), **options)


__all__ = ["GstSource", "MultiSource", "OpenCVSource", "open_source", "parse_source", "SourceURI", "LAUNCHERS"]
