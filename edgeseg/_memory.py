"""Memory left to this process: what the machine has available, or less where a container's memory limit (a cgroup,
v1 or v2, this process's or an ancestor's) leaves less. ``MemAvailable`` alone says the host's: in a 1 GiB container on
a 24 GiB host it said 22 GiB, and what was sized by it (calibration chunks, candidates loaded side by side) was killed
by the kernel with nothing said."""
from __future__ import annotations

import os
from pathlib import Path

#: a cgroup limit at or above this is "no limit" (v1 writes 2**63 rounded down to a page)
UNLIMITED = 1 << 60
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: images below this many pixels are not checked against the memory left (a frame's check would cost more than it saves)
CHECKED_PIXELS = 16_000_000


def available_bytes() -> int | None:
    """The memory this process can still take: the smaller of ``MemAvailable`` and the headroom of every memory cgroup
    it is in (limit less usage, its reclaimable file cache counted as free). None where neither can be read."""
    values = [v for v in (meminfo_available(), cgroup_headroom()) if v is not None]
    return min(values) if values else None


def shortfall(pixels: int, bytes_per_pixel: float) -> tuple[int, int] | None:
    """``(need, free)`` when an image of ``pixels`` pixels, taking ``bytes_per_pixel`` each, needs more than the memory
    left; None when it fits, is below :data:`CHECKED_PIXELS` or the memory left cannot be read."""
    if pixels < CHECKED_PIXELS:
        return None
    free, need = available_bytes(), int(pixels * bytes_per_pixel)
    return (need, free) if free is not None and need > free else None


def meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # not Linux
        return None
    return None


def cgroup_headroom(proc_cgroup: str = "/proc/self/cgroup", root: Path = CGROUP_ROOT) -> int | None:
    """The least headroom among this process's memory cgroups and their ancestors (None: no limit, or not readable)."""
    found: list[int] = []
    for v2, folder in cgroup_folders("memory", proc_cgroup, root):
        files = ("memory.max", "memory.current", "inactive_file") if v2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        room = _headroom(folder, *files)
        if room is not None:
            found.append(room)
    return min(found) if found else None


def cgroup_folders(controller: str, proc_cgroup: str = "/proc/self/cgroup",
                   root: Path = CGROUP_ROOT) -> list[tuple[bool, Path]]:
    """``(v2, folder)`` of every cgroup of this process that may hold a ``controller`` limit (``memory``, ``cpu``): its
    own and each one above it (a limit may sit on any of them), in the unified hierarchy (v2) and in the v1 hierarchy
    of that controller (mounted as ``root/controller``, or under its joined name, ``cpu,cpuacct``). Empty where
    ``proc_cgroup`` cannot be read (not Linux)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[bool, Path]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1].split(","), parts[2].lstrip("/")
        if parts[0] == "0" and parts[1] == "":  # v2: the unified hierarchy
            out += [(True, f) for f in _with_ancestors(root, rel)]
        elif controller in controllers:  # v1
            base = root / controller
            if not base.exists() and (root / parts[1]).exists():
                base = root / parts[1]
            out += [(False, f) for f in _with_ancestors(base, rel)]
    return out


def _with_ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each folder above it up to ``base`` (a limit may sit on any of them; inside a container's
    cgroup namespace the path is ``/`` and ``base`` itself is the container's)."""
    parts = [p for p in rel.split("/") if p and p not in (".", "..")]  # (a process outside its namespace: /../..)
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _headroom(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        text = (folder / limit_file).read_text().strip()
        if text == "max":
            return None
        limit = int(text)
        if limit >= UNLIMITED:
            return None
        usage = int((folder / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
                break
    except (OSError, ValueError):  # no statistics: the file cache is counted as used (the smaller headroom)
        inactive = 0
    return max(0, limit - usage + inactive)


def rss_bytes() -> int | None:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
