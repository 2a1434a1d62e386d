"""ONNX Runtime runner: ``BACKENDS.get("onnxruntime")``.

Session options: graph optimisation level ALL, intra-op threads from ``threads`` (0: ORT's default),
the model loaded from its file path. Providers: CUDA when ORT has it and ``device`` allows, then CPU.
A session that cannot be created because the graph uses an op ORT lacks raises
:class:`~edgeseg.errors.UnsupportedError` naming the op and the fix.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from ...errors import BackendUnavailable, EdgesegError, UnsupportedError
from ..base import BACKENDS, Runner, TensorSpec
from .._util import dims, warm_up

# ONNX Runtime's type strings -> numpy dtype names
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

# (pattern on ORT's message, what it means); the first group names the op
_OP_PATTERNS = (
    re.compile(r"Fatal error: (\S+?) is not a registered function/op"),
    re.compile(r"No Op registered for (\S+) with domain_version of"),
    re.compile(r"Could not find an implementation for (\S+?) node with name '([^']*)'"),
)


def explain_session_error(model: str, message: str) -> EdgesegError:
    """Turn ONNX Runtime's session-creation error into one of ours, naming the op and the fix."""
    for pat in _OP_PATTERNS:
        m = pat.search(message)
        if m:
            op = re.sub(r"\(-?\d+\)$", "", m.group(1))
            node = f" (node {m.group(2)!r})" if m.lastindex and m.lastindex >= 2 and m.group(2) else ""
            return UnsupportedError(
                f"{model}: ONNX Runtime has no kernel for op {op}{node}",
                fix="export with standard ONNX ops (e.g. edgeseg export --deform-conv decomposed), register the "
                "custom-op library with the runtime, or use a backend that has the op",
            )
    m = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", message)
    if m:
        return UnsupportedError(
            f"{model}: ONNX IR version {m.group(1)} is newer than this ONNX Runtime reads (max {m.group(2)})",
            fix="upgrade onnxruntime, or re-save the model with a lower ir_version (edgeseg import does this)",
        )
    m = re.search(r"Current official support for domain (\S+) is till opset (\d+)", message)
    if m:
        return UnsupportedError(
            f"{model}: the model's opset is newer than this ONNX Runtime supports ({m.group(1)} up to {m.group(2)})",
            fix="upgrade onnxruntime, or export with an older opset (edgeseg uses 19)",
        )
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return EdgesegError(f"{model}: ONNX Runtime cannot load the model: {first}")


@BACKENDS.register("onnxruntime", family="onnx")
class OnnxRuntimeRunner(Runner):
    """Runs a bundle's ONNX model in ONNX Runtime."""

    name = "onnxruntime"
    model_targets = ("cpu", None, "openvino", "tensorrt")

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except Exception as e:  # ImportError, or a broken install
            return False, f"onnxruntime does not import ({e}); pip install onnxruntime"
        return True, ""

    def providers(self) -> list[str]:
        """The execution providers this runner asks for, best first."""
        import onnxruntime as ort

        have = ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in have
        if self.device == "cuda" and not cuda:
            raise BackendUnavailable(
                f"{self.model_path.name}: device 'cuda' asked but this onnxruntime has no CUDA provider (it has {', '.join(have)})",
                fix="pip install onnxruntime-gpu, or use --device cpu",
            )
        return (["CUDAExecutionProvider"] if cuda and self.device in ("auto", "cuda") else []) + ["CPUExecutionProvider"]

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads > 0:
            so.intra_op_num_threads = int(self.threads)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), so, providers=self.providers())
        except (BackendUnavailable, FileNotFoundError):
            raise
        except Exception as e:  # ORT raises its own pybind exception types (Fail, InvalidGraph, NotImplemented)
            raise explain_session_error(str(self.model_path), str(e)) from None
        self.input_specs = tuple(self._spec(a) for a in self.session.get_inputs())
        self.output_specs = tuple(self._spec(a) for a in self.session.get_outputs())
        self._output_names = [s.name for s in self.output_specs]
        self._input_names = frozenset(s.name for s in self.input_specs)
        warm_up(self)

    @staticmethod
    def _spec(arg) -> TensorSpec:
        return TensorSpec(arg.name, ORT_TYPES.get(arg.type, arg.type), dims(arg.shape))

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._input_names
        values = self.session.run(self._output_names, feed if feed.keys() <= names else
                                  {k: v for k, v in feed.items() if k in names})
        return dict(zip(self._output_names, values))

    def _deactivate_impl(self) -> None:
        self.session = None

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers()) if getattr(self, "session", None) is not None else []
