"""INT8 compression: graph preparation, calibration, Q/DQ quantization per target, accuracy control,
TensorRT calibration caches and the deployability check. See docs/quantization.md.

    from edgeseg.quant import quantize_bundle
    report = quantize_bundle("road.edgeseg", "calibration/camvid.toml", target="tensorrt",
                             eval_dataset=open_dataset("camvid:ROOT", "val"), max_drop=1.0)

Names are resolved lazily: importing this package imports neither onnx nor onnxruntime.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "quantize_bundle": "api", "QuantReport": "api",
    "CalibrationRecipe": "calibration", "load_recipe": "calibration", "resolve_calibration": "calibration",
    "collect_frames": "calibration", "FeedReader": "calibration", "take_frames": "calibration",
    "calibrate": "ranges", "CalibrationTable": "ranges", "TensorRange": "ranges",
    "prepare_model": "prepare", "PrepareReport": "prepare", "fold_batchnorm": "prepare",
    "quantize_model": "quantize", "QuantizedModel": "quantize", "FloatNode": "quantize",
    "PROFILES": "profiles", "QuantProfile": "profiles", "get_profile": "profiles",
    "check_model": "check", "check_bundle": "check", "CheckReport": "check", "Finding": "check",
    "write_cache": "trt_cache", "read_cache": "trt_cache", "CalibrationCache": "trt_cache",
    "nncf_quantize_onnx": "openvino", "int8_execution": "openvino", "NncfOptions": "openvino",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'edgeseg.quant' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
