"""OpenVINO runner: ``BACKENDS.get("openvino")``.

Reads the bundle's ONNX with OpenVINO's ONNX frontend and compiles it for the CPU plugin. fp32
models run with ``INFERENCE_PRECISION_HINT=f32`` so results match ONNX Runtime (OpenVINO would
otherwise pick bf16 on CPUs that have it); INT8 Q/DQ models run as quantised by the graph.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ...errors import EdgesegError, UnsupportedError
from ..base import BACKENDS, Runner, TensorSpec
from .._util import dims, warm_up

DEVICE = "CPU"


def explain_read_error(model: str, message: str) -> EdgesegError:
    """OpenVINO's conversion error -> ours, naming the op(s) it has no conversion rule for."""
    m = re.search(r"No conversion rule found for operations: ([^\n]+)", message)
    if m:
        return UnsupportedError(
            f"{model}: OpenVINO cannot convert op(s) {m.group(1).strip()}",
            fix="use --backend onnxruntime, or export with standard ONNX ops",
        )
    first = next((ln for ln in message.splitlines() if ln.strip()), "unknown error")
    return EdgesegError(f"{model}: OpenVINO cannot load the model: {first}")


@BACKENDS.register("openvino", family="onnx")
class OpenVinoRunner(Runner):
    """Runs a bundle's ONNX model through OpenVINO's CPU plugin."""

    name = "openvino"
    model_targets = ("openvino", "cpu", None)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed; pip install 'edgeseg[openvino]'"
        return True, ""

    @classmethod
    def supports(cls, model_path: str | Path) -> tuple[bool, str]:
        """Whether OpenVINO reads this ONNX and its CPU plugin takes every op. Never raises."""
        try:
            import openvino as ov

            core = ov.Core()
            model = core.read_model(str(model_path))
            placed = core.query_model(model, DEVICE)
            missing = [op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() not in placed]
            if missing:
                return False, f"the {DEVICE} plugin does not take {', '.join(missing[:5])}"
            return True, ""
        except Exception as e:  # never raises: a reason instead
            return False, str(explain_read_error(Path(model_path).name, str(e)))

    def _activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.model_path))
        except Exception as e:  # OpenVINO raises RuntimeError with a long report
            raise explain_read_error(str(self.model_path), str(e)) from None
        config: dict[str, object] = {}
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            self.compiled = core.compile_model(model, DEVICE, config)
        except Exception as e:
            raise explain_read_error(str(self.model_path), str(e)) from None
        self.input_specs = tuple(self._spec(p) for p in self.compiled.inputs)
        self.output_specs = tuple(self._spec(p) for p in self.compiled.outputs)
        self._input_names = frozenset(s.name for s in self.input_specs)
        self._outputs = [(p, p.get_any_name()) for p in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        warm_up(self)

    @staticmethod
    def _spec(port) -> TensorSpec:
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, dims(shape))

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._input_names
        res = self.request.infer(feed if feed.keys() <= names else {k: v for k, v in feed.items() if k in names})
        return {name: np.array(res[port]) for port, name in self._outputs}

    def _deactivate_impl(self) -> None:
        self.request = None
        self.compiled = None
