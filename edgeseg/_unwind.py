"""Keep the process's C++ exception unwinder GCC's, whatever loads first (Linux).

Root cause of the ``edgeseg run`` crashes with a GStreamer source and an OpenVINO model (SIGABRT
``terminate called after throwing ... dlSym cannot locate method 'create_extensions'``, or SIGSEGV;
ONNX Runtime did the same on any error it raised):

* Debian's ``libgstreamer-1.0.so.0`` links ``libunwind.so.8`` (the nongnu libunwind), which exports
  its own ``_Unwind_RaiseException`` / ``_Unwind_Resume`` / ... under GCC's symbol versions.
* PyGObject loads GStreamer with ``g_module_open``, i.e. ``RTLD_GLOBAL``: libunwind joins the
  process's *global* symbol scope. ``libgcc_s.so.1`` (GCC's unwinder) is usually loaded only as a
  dependency of ``libstdc++`` opened ``RTLD_LOCAL`` by some extension module, so it is not there.
* A C++ library loaded afterwards (OpenVINO, ONNX Runtime, torch) resolves ``_Unwind_Resume`` in
  its cleanup landing pads to libunwind, while ``libstdc++``'s ``__cxa_throw`` raises through
  libgcc_s. The first exception that unwinds through a frame with a destructor mixes two unwinders
  and the process aborts or segfaults. OpenVINO throws (and catches) one on every ``compile_model``
  while probing its auto-batch plugin, so it always died; ONNX Runtime died on a bad model file.

The fix, :func:`pin_gcc_unwinder`, promotes ``libgcc_s.so.1`` into the global scope (``dlopen`` with
``RTLD_GLOBAL``) at ``import edgeseg`` and again before edgeseg loads GStreamer, so it precedes
libunwind and every later library binds GCC's unwinder. When GStreamer was loaded before edgeseg
(an application that imported ``gi`` first, or ``gst-launch-1.0`` loading the native element),
nothing in-process can reorder the scope: :func:`unwinder_hazard` says so, the ``openvino`` backend
reports itself unavailable with that reason (``backend="auto"`` falls back to ONNX Runtime with a
warning) and the fix is to import edgeseg first or start the process with
``LD_PRELOAD=libgcc_s.so.1`` (the native element's :func:`~edgeseg.stream.gst_plugin.environment`
sets it).
"""
from __future__ import annotations

import functools
import os
import sys

LIBGCC = "libgcc_s.so.1"
FIX = f"import edgeseg before gi/GStreamer, or start the process with LD_PRELOAD={LIBGCC}"


def _linux() -> bool:
    return sys.platform.startswith("linux")


def pin_gcc_unwinder() -> bool:
    """Put GCC's unwinder (``libgcc_s.so.1``) into the global symbol scope. Idempotent, never raises;
    True when the global ``_Unwind_Resume`` is GCC's afterwards (always True off Linux)."""
    if not _linux():
        return True
    try:
        import ctypes

        ctypes.CDLL(LIBGCC, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError:  # a musl or clang-only system without libgcc_s: nothing to pin
        return global_unwinder() is None
    return unwinder_hazard() is None


def global_unwinder() -> str | None:
    """Path of the library the process's global scope resolves ``_Unwind_Resume`` to (``dladdr``),
    or None when there is none or this is not Linux/glibc."""
    if not _linux():
        return None
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    try:
        default = ctypes.CDLL(None)
        addr = ctypes.cast(default._Unwind_Resume, ctypes.c_void_p).value
        dladdr = _dladdr(default)
    except (AttributeError, OSError):
        return None
    info = DlInfo()
    if not addr or dladdr is None or not dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


@functools.lru_cache(maxsize=1)
def _dladdr(default):
    import ctypes

    for lib in (default, "libc.so.6", "libdl.so.2"):
        try:
            fn = (lib if not isinstance(lib, str) else ctypes.CDLL(lib)).dladdr
        except (AttributeError, OSError):
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        return fn
    return None


def unwinder_hazard() -> str | None:
    """None when C++ exceptions unwind safely in this process, else a sentence naming the library that
    took over the unwinder (C++ runtimes loaded from now on abort on their first exception)."""
    path = global_unwinder()
    if path is None or os.path.basename(path).startswith("libgcc_s"):
        return None
    return (f"{os.path.basename(path)} ({path}) provides the process's C++ unwinder (_Unwind_Resume): it was "
            f"loaded into the global symbol scope before {LIBGCC}, typically by GStreamer imported before edgeseg, "
            "and C++ runtimes loaded now abort on their first exception")
