"""Source URIs: ``file://``, ``rtsp://``, ``v4l2:///dev/videoN``, ``csi://N``, ``test://PATTERN``,
``http(s)://``, a plain path, an image folder (a directory, or ``dir://PATH``), or a raw GStreamer
launch string (anything with ``!``). A camera may also be named by its device (``/dev/video0``) or its
number (``0``, as OpenCV counts them, when no file of that name exists); ``-`` is a video piped into
standard input (GStreamer ``fdsrc``).

Options ride in the query string: ``test://ball?width=320&height=240&fps=30&frames=100&live=1``,
``rtsp://cam/stream?latency=100&transport=udp``, ``csi://0?width=1920&height=1080&fps=30``; an rtsp/http
source's ``timeout=S`` is how long it may take to give its first frame (default: rtsp keeps trying, http 10 s;
0: keep trying).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import InputError


#: paths that name a camera device (V4L2), with the options of ``v4l2://`` after a ``?``
CAMERA_PATHS = ("/dev/video", "/dev/v4l/")


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
STDIN_LAUNCH = "fdsrc fd=0 ! decodebin"  # ``--source -``: a video piped in
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv",
                   ".3gp", ".h264", ".h265", ".ogv")


def parse_source(text: str | os.PathLike) -> SourceURI:
    """Parse a source string (see the module docstring)."""
    s = str(text).strip()
    if not s:
        raise InputError("empty source", fix="give a file path, a URI (file://, rtsp://, test://ball, ...) or a launch string")
    # an existing file or folder named 'a ! b.mp4' is a path (os.path.exists: a long launch string is no file name)
    if "!" in s and not os.path.exists(os.path.expanduser(s)):
        return SourceURI(s, "launch", s)
    if s == "-":
        import sys

        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("--source - reads a video piped into standard input, but standard input is a terminal",
                             fix="pipe a video in (e.g. cat clip.mp4 | edgeseg run --source - ...), or give a file path")
        return SourceURI(s, "launch", STDIN_LAUNCH)
    if "://" not in s:
        p = Path(s).expanduser()
        if s.isdigit() and not p.exists():  # OpenCV's camera numbering: 0 is /dev/video0
            return SourceURI(s, "v4l2", f"/dev/video{int(s)}")
        if s.startswith(CAMERA_PATHS):  # (a stable name of a rig's camera: /dev/v4l/by-id/..., by-path/...)
            path, _, query = s.partition("?")  # the options as v4l2:// takes them (an audit: ?timeout=2 was kept in
            return SourceURI(s, "v4l2", path, dict(parse_qsl(query, keep_blank_values=True)))  # the device's path)
        return SourceURI(s, "folder" if p.is_dir() else "file", str(p))
    parts = urlsplit(s)
    scheme = parts.scheme.lower()
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "file":  # file:///frames/ names a folder of frames as the plain path does
        path = str(Path(unquote(parts.netloc + parts.path)).expanduser()) if parts.netloc + parts.path else ""
        return SourceURI(s, "folder" if path and Path(path).is_dir() else "file", path, opts)
    if scheme == "dir":
        return SourceURI(s, "folder", str(Path(unquote(parts.netloc + parts.path)).expanduser()), opts)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        _check_host(s, parts)
        ours = {k: v for k, v in opts.items() if k in _NET_OPTS}
        rest = "&".join(f"{k}={v}" for k, v in opts.items() if k not in _NET_OPTS)
        url = f"{scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
        return SourceURI(s, "http" if scheme.startswith("http") else "rtsp", url, ours)
    if scheme == "v4l2":
        path = "" if parts.path == "/" else parts.path
        if parts.netloc and not parts.netloc.isdigit():
            raise InputError(f"source {s!r}: a camera is v4l2:///dev/videoN or v4l2://N, not host {parts.netloc!r}",
                             fix="e.g. v4l2:///dev/video1 or v4l2://1")
        if parts.netloc and path:
            raise InputError(f"source {s!r} names two cameras ({parts.netloc} and {path})",
                             fix="v4l2:///dev/videoN or v4l2://N")
        return SourceURI(s, "v4l2", f"/dev/video{int(parts.netloc)}" if parts.netloc else path or "/dev/video0", opts)
    if scheme == "csi":  # csi://N, and csi:///N as a file-style URI writes it
        sensor, path = parts.netloc, parts.path.strip("/")
        if sensor and path:
            raise InputError(f"source {s!r} names two sensors ({sensor} and {path})", fix="csi://N, e.g. csi://0")
        return SourceURI(s, "csi", sensor or path or "0", opts)
    if scheme == "test":
        return SourceURI(s, "test", parts.netloc or "smpte", opts)
    raise InputError(
        f"unknown source scheme {scheme!r} in {s!r}",
        fix="use file://, dir://, rtsp://, http(s)://, v4l2:///dev/videoN, csi://N, test://PATTERN, a path or a launch string",
    )


def _check_host(text: str, parts: Any) -> None:
    """A network URL with no host or a port that is not a number (``rtsp://:abc``) is refused here: GStreamer
    would try to connect to it, fail, and the source would retry it."""
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        raise InputError(f"source {text!r} is not a valid {parts.scheme}:// URL (it needs a host and, if any, a port "
                         "from 1 to 65535)", fix=f"write it as {parts.scheme}://HOST[:PORT]/PATH, e.g. "
                         f"{parts.scheme}://192.168.1.20:{554 if parts.scheme.startswith('rtsp') else 8080}/stream")


def _missing_file_fix(p: Path, text: str) -> str:
    """What to do about a missing source file: the close names in its folder (a typo), a pattern given
    for a folder of frames, a URI missing its ``//``."""
    import difflib
    import re

    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/?[^/]", text) and not Path(text.split(":", 1)[0]).exists():
        scheme = text.split(":", 1)[0]
        return f"a URI is written SCHEME://...: did you mean {scheme}://{text.split(':', 1)[1].lstrip('/')}?"
    if any(c in p.name for c in "*?["):
        matches = sorted(p.parent.glob(p.name)) if p.parent.is_dir() else []
        return (f"file patterns are not sources ({len(matches)} files match it): pass the folder of frames "
                f"({p.parent}/; all its images, in number order), or put the frames you want in a folder of their own")
    folder = p.parent if str(p.parent) else Path(".")
    if folder.is_dir():
        names = [q.name for q in folder.iterdir()]
        close = difflib.get_close_matches(p.name, names, n=3, cutoff=0.75)
        if close:
            return "did you mean " + " or ".join(str(folder / c) if str(p.parent) != "." else c for c in close) + "?"
    return "check the path (relative paths are from the current directory)"


def video_file(target: str) -> Path:
    """``target`` as a video file a reader can open: refused, naming it, when it is missing, not a file or
    empty (an empty file otherwise fails inside the decoder with a message about 'no data')."""
    p = Path(target)
    if p.is_dir():
        raise InputError(f"video file {p} is a folder", fix=f"give it as a folder of frames: --source {p} (or dir://{p})")
    if not p.is_file():
        raise InputError(f"video file {p} does not exist", fix=_missing_file_fix(p, str(target)))
    if p.stat().st_size == 0:
        raise InputError(f"video file {p} is empty (0 bytes)", fix="re-copy or re-record the file")
    return p


def is_gif(target: str) -> bool:
    """Whether ``target`` is a GIF file (by its first bytes, whatever its suffix). GStreamer 1.22 decodes an
    animated GIF's frames but never ends the stream (its pipeline waits for ever after the last frame), so GIFs are
    read by OpenCV's FFmpeg reader."""
    try:
        with open(target, "rb") as f:
            return f.read(6) in (b"GIF87a", b"GIF89a")
    except OSError:
        return False


def camera_device(target: str) -> str:
    """``target`` as a V4L2 device that exists: refused, naming the cameras this machine has, when it does not
    (GStreamer's own 'Cannot identify device' says neither)."""
    if not Path(target).exists():
        cams = sorted((str(d) for d in Path("/dev").glob("video*")), key=lambda d: (len(d), d))
        raise InputError(f"camera {target} does not exist",
                         fix=f"cameras here: {', '.join(cams)}" if cams else
                         "this machine has no camera (no /dev/video*): plug one in, or give a file or an rtsp:// URL")
    return target
