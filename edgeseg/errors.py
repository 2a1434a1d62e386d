"""Exceptions raised by edgeseg.

Every error speaks to the user: it names the thing that was wrong (file, tensor, stream, bundle)
and, where there is one, the fix. Catch :class:`EdgesegError` to catch them all.
"""
from __future__ import annotations


class EdgesegError(Exception):
    """Base class of every error edgeseg raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class InputError(EdgesegError, ValueError):
    """Bad user input: a missing or corrupt file, a wrong shape/dtype, a bad argument."""


class BundleError(EdgesegError):
    """A bundle that cannot be read: missing file, hash mismatch, unknown schema, bad JSON."""


class ModelError(EdgesegError):
    """Unknown model name, bad checkpoint, or a model that cannot be built as asked."""


class ExportError(EdgesegError):
    """Export or ONNX import failed (unsupported opset, parity check failed, ...)."""


class UnsupportedError(EdgesegError):
    """The runtime, target or graph does not support what was asked (an op, a precision, ...)."""


class BackendUnavailable(EdgesegError):
    """A backend's runtime is not installed or finds no device."""


class DataError(EdgesegError):
    """A dataset or calibration source cannot be read."""


class StreamError(EdgesegError):
    """A source or sink failed (cannot open, dropped connection, corrupt stream)."""


class QuantizationError(EdgesegError):
    """Quantization failed or could not meet its accuracy budget."""


class ServerUnavailable(BackendUnavailable, StreamError):
    """An ``edgeseg serve`` server did not answer (refused, timed out, overloaded) after the retries."""


class OutOfMemory(EdgesegError, MemoryError):
    """The machine (or the container's limit) had no memory left for what was asked. Also a ``MemoryError``."""


#: what runtimes and the system say when an allocation fails (ONNX Runtime's ``std::bad_alloc``, OpenVINO's
#: ``can't alloc``, numpy's ``Unable to allocate``, the dynamic loader's ``failed to map segment``, ``ENOMEM``)
MEMORY_WORDS = ("bad_alloc", "can't alloc", "cannot allocate memory", "unable to allocate", "failed to map segment",
                "out of memory", "failed to allocate", "insufficient memory")

#: the fix an out-of-memory error names
MEMORY_FIX = ("free memory (other programs), or give the container more (its memory limit); on a small device: "
              "--threads 1, an INT8 model (--precision int8), a smaller input; for quantize, fewer --frames")


def out_of_memory(exc: BaseException | str | None) -> bool:
    """Whether ``exc`` (or its text, or the error it came from) says an allocation failed."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, MemoryError):
            return True
        text = str(exc).lower()
        if any(w in text for w in MEMORY_WORDS):
            return True
        exc = None if isinstance(exc, str) else (exc.__cause__ or exc.__context__)
        seen += 1
    return False


def memory_error(what: str, exc: BaseException | str) -> OutOfMemory:
    """An :class:`OutOfMemory` naming ``what`` ran out and the runtime's own line."""
    line = next((ln.strip() for ln in reversed(str(exc).splitlines()) if ln.strip()), type(exc).__name__)
    return OutOfMemory(f"{what}: out of memory ({line[:200]})", fix=MEMORY_FIX)
