"""Export and import: PyTorch -> ONNX (opset 19, Conv-BN folded, parity-checked) and ONNX made
elsewhere -> bundle. Importing this package imports torch (export) lazily per function."""
from __future__ import annotations

from .._lazy import lazy_module

_LAZY = {
    "export_bundle": "edgeseg.export.bundle_export:export_bundle",
    "export_onnx": "edgeseg.export.onnx_export:export_onnx",
    "fold_conv_bn": "edgeseg.export.fold:fold_conv_bn",
    "check_parity": "edgeseg.export.parity:check_parity",
    "ParityReport": "edgeseg.export.parity:ParityReport",
    "import_onnx": "edgeseg.export.importer:import_onnx",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_module(__name__, _LAZY)
