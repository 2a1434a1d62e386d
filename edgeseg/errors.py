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
