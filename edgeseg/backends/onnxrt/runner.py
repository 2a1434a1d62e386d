"""ONNX Runtime runner: ``BACKENDS.get("onnxruntime")``.

The session comes from :func:`edgeseg._ort.make_session`: graph optimisation level ALL, intra-op
threads by its rule (``threads`` > 0, else ``$OMP_NUM_THREADS``, else ORT's default), the model
loaded from its file path. Providers: CUDA when ORT has it and ``device`` allows, then CPU.
A session that cannot be created because the graph uses an op ORT lacks raises
:class:`~edgeseg.errors.UnsupportedError` naming the op and the fix.

Whether ONNX Runtime loads a model at all has one answer here, :func:`load_error` (used by
:meth:`OnnxRuntimeRunner.supports` and ``edgeseg check --target onnxruntime``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ... import _ort
from ...errors import BackendUnavailable, EdgesegError
from ..base import BACKENDS, Runner, TensorSpec
from .._util import dims, warm_up

# ONNX Runtime's type strings -> numpy dtype names
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def explain_session_error(model: str, message: str) -> EdgesegError:
    """Turn ONNX Runtime's session-creation error into one of ours, naming the op and the fix
    (:func:`edgeseg._ort.explain_session_error`, arguments in this module's historical order)."""
    return _ort.explain_session_error(message, model)


def load_error(model_path: str | Path) -> EdgesegError | None:
    """Why ONNX Runtime cannot load this model on its CPU provider (graph optimisation off, so the
    answer is about the graph as written), or None when it loads. The error is
    :func:`edgeseg._ort.explain_session_error`'s, with ORT's own exception as its ``__cause__``."""
    try:
        _ort.make_session(model_path, threads=1, optimization="disabled")
    except EdgesegError as e:
        return e
    return None


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

    @classmethod
    def supports(cls, model_path: str | Path) -> tuple[bool, str]:
        """Whether ONNX Runtime loads this model (:func:`load_error`): ``(True, "")`` or ``(False, why)``.
        Never raises for a model ORT rejects."""
        err = load_error(model_path)
        return (True, "") if err is None else (False, str(err))

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
        self.session = _ort.make_session(self.model_path, threads=self.threads, providers=self.providers(),
                                         optimization="all", name=str(self.model_path))
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
