"""Sources by URI scheme. :func:`open_source` picks GStreamer when it is available, OpenCV otherwise
(files, devices and image folders only)."""
from __future__ import annotations

from typing import Any

from ...errors import StreamError
from ..base import SOURCES, Source
from .folder import FolderSource, is_image_file
from .gst_source import LAUNCHERS, GstSource
from .mux import MultiSource
from .opencv_source import OpenCVSource
from .synthetic import SyntheticSource
from .uri import SourceURI, is_gif, parse_source

SOURCES.add("gstreamer", GstSource, schemes=tuple(LAUNCHERS))
SOURCES.add("opencv", OpenCVSource, schemes=("file", "folder", "v4l2"))
SOURCES.add("folder", FolderSource, schemes=("folder",))  # every image folder (a directory or dir://), any backend
# generated in Python: no GStreamer/OpenCV backend choice; picked by scheme before parse_source
SOURCES.add("synthetic", SyntheticSource, schemes=("synthetic",), standalone=True)


def _standalone(uri: str) -> type[Source] | None:
    """The source class registered ``standalone=True`` for this URI's scheme, if any."""
    scheme = uri.strip().split("://", 1)[0].lower() if "://" in uri else ""
    for name in SOURCES.names(standalone=True):
        if scheme in SOURCES.entry(name).meta["schemes"]:
            return SOURCES.get(name)
    return None


def open_source(uri: str | Source, *, backend: str = "auto", **options: Any) -> Source:
    """A :class:`Source` for ``uri``. ``backend``: ``auto`` (GStreamer when it works, else OpenCV),
    ``gstreamer`` or ``opencv``. ``options`` go to the source (``realtime``, ``name``, ``buffer_size``, ...);
    ``fps`` only to an image folder (its frames' timestamps), ``decoder_threads`` only to video sources (the
    decoding threads). An image folder is always a :class:`FolderSource`."""
    if isinstance(uri, Source):
        return uri
    fps = options.pop("fps", None)
    decoder_threads = options.pop("decoder_threads", None)
    standalone = _standalone(str(uri))
    if standalone is not None:
        return standalone(str(uri), **options)
    spec = parse_source(uri)
    if spec.scheme == "folder" or spec.scheme == "file" and is_image_file(spec.target):  # any backend: read_image's
        return FolderSource(str(uri), fps=fps, **options)
    options["decoder_threads"] = decoder_threads
    if backend == "auto":
        from ..gst import available

        ok, why = available()
        backend = "gstreamer" if ok and not (spec.scheme == "file" and is_gif(spec.target)) else "opencv"
        if not ok and spec.scheme not in SOURCES.entry("opencv").meta["schemes"]:
            raise StreamError(f"source {uri!r} needs GStreamer, which is not available: {why}")
    cls = SOURCES.get(backend)
    if spec.scheme not in SOURCES.entry(backend).meta["schemes"]:
        readers = [n for n in ("gstreamer", "opencv") if spec.scheme in SOURCES.entry(n).meta["schemes"]]
        raise StreamError(f"the {backend} source cannot read {spec.scheme!r} sources ({uri})",
                          fix=f"--source-backend {' or '.join([*readers, 'auto'])} reads them" if readers else None)
    return cls(str(uri), **options)


__all__ = ["FolderSource", "GstSource", "MultiSource", "OpenCVSource", "SyntheticSource", "open_source", "parse_source", "SourceURI", "LAUNCHERS"]
