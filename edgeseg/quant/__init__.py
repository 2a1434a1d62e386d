"""INT8 compression: graph preparation, calibration, Q/DQ quantization per target, accuracy control,
TensorRT calibration caches and the deployability check. See docs/quantization.md.

    from edgeseg.quant import quantize_bundle
    report = quantize_bundle("road.edgeseg", "calibration/camvid.toml", target="tensorrt",
                             eval_dataset=open_dataset("camvid:ROOT", "val"), max_drop=1.0)

Names are resolved lazily: importing this package imports neither onnx nor onnxruntime.
"""
from __future__ import annotations

from .._lazy import lazy_module

_LAZY = {  # public name -> module, relative to this package
    "quantize_bundle": ".api", "QuantReport": ".api",
    "CalibrationRecipe": ".calibration", "load_recipe": ".calibration", "resolve_calibration": ".calibration",
    "collect_frames": ".calibration", "FeedReader": ".calibration", "take_frames": ".calibration",
    "find_recipe": ".calibration", "recipe_names": ".calibration",
    "calibrate": ".ranges", "CalibrationTable": ".ranges", "TensorRange": ".ranges",
    "prepare_model": ".prepare", "PrepareReport": ".prepare", "fold_batchnorm": ".prepare",
    "quantize_model": ".quantize", "QuantizedModel": ".quantize", "FloatNode": ".quantize",
    "PROFILES": ".profiles", "QuantProfile": ".profiles", "get_profile": ".profiles",
    "check_model": ".check", "check_bundle": ".check", "CheckReport": ".check", "Finding": ".check",
    "write_cache": ".trt_cache", "read_cache": ".trt_cache", "CalibrationCache": ".trt_cache",
    "nncf_quantize_onnx": ".openvino", "int8_execution": ".openvino", "NncfOptions": ".openvino",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_module(__name__, _LAZY)
