"""Source URIs: ``file://``, ``rtsp://``, ``v4l2:///dev/videoN``, ``csi://N``, ``test://PATTERN``,
``http(s)://``, a plain path, an image folder (a directory, or ``dir://PATH``), or a raw GStreamer
launch string (anything with ``!``).

Options ride in the query string: ``test://ball?width=320&height=240&fps=30&frames=100&live=1``,
``rtsp://cam/stream?latency=100&transport=udp``, ``csi://0?width=1920&height=1080&fps=30``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import InputError


@dataclass(frozen=True)
class SourceURI:
    """A parsed source. ``scheme`` is one of file, rtsp, http, https, v4l2, csi, test, folder, launch."""

    text: str
    scheme: str
    target: str  # path, device, pattern, URL without the edgeseg options, or the launch string
    options: dict[str, str] = field(default_factory=dict)

    def opt(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int_opt(self, key: str, default: int | None = None) -> int | None:
        v = self.options.get(key)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise InputError(f"source {self.text!r}: option {key}={v!r} is not an integer") from None

    def bool_opt(self, key: str, default: bool = False) -> bool:
        v = self.options.get(key)
        return default if v is None else v.lower() in ("1", "true", "yes", "on")


# options edgeseg reads from rtsp/http URLs; other query parameters stay part of the URL
_NET_OPTS = ("latency", "transport", "reconnect", "timeout")


def parse_source(text: str | os.PathLike) -> SourceURI:
    """Parse a source string (see the module docstring)."""
    s = str(text).strip()
    if not s:
        raise InputError("empty source", fix="give a file path, a URI (file://, rtsp://, test://ball, ...) or a launch string")
    if "!" in s:
        return SourceURI(s, "launch", s)
    if "://" not in s:
        p = Path(s).expanduser()
        return SourceURI(s, "folder" if p.is_dir() else "file", str(p))
    parts = urlsplit(s)
    scheme = parts.scheme.lower()
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "file":
        return SourceURI(s, "file", unquote(parts.netloc + parts.path), opts)
    if scheme == "dir":
        return SourceURI(s, "folder", str(Path(unquote(parts.netloc + parts.path)).expanduser()), opts)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        ours = {k: v for k, v in opts.items() if k in _NET_OPTS}
        rest = "&".join(f"{k}={v}" for k, v in opts.items() if k not in _NET_OPTS)
        url = f"{scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
        return SourceURI(s, "http" if scheme.startswith("http") else "rtsp", url, ours)
    if scheme == "v4l2":
        return SourceURI(s, "v4l2", parts.path or "/dev/video0", opts)
    if scheme == "csi":
        return SourceURI(s, "csi", parts.netloc or "0", opts)
    if scheme == "test":
        return SourceURI(s, "test", parts.netloc or "smpte", opts)
    raise InputError(
        f"unknown source scheme {scheme!r} in {s!r}",
        fix="use file://, dir://, rtsp://, http(s)://, v4l2:///dev/videoN, csi://N, test://PATTERN, a path or a launch string",
    )


def video_file(target: str) -> Path:
    """``target`` as a video file a reader can open: refused, naming it, when it is missing, not a file or
    empty (an empty file otherwise fails inside the decoder with a message about 'no data')."""
    p = Path(target)
    if not p.is_file():
        raise InputError(f"video file {p} does not exist", fix="check the path (relative paths are from the current directory)")
    if p.stat().st_size == 0:
        raise InputError(f"video file {p} is empty (0 bytes)", fix="re-copy or re-record the file")
    return p
