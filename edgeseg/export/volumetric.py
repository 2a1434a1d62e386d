"""Volumetric models (V-Net) -> ONNX: ``volumes float32 [1, C, D, H, W]`` -> ``logits [1, K, D, H, W]``,
``torch.onnx.export(dynamo=True)`` at a fixed volume size, the same clean-up as 2-D exports, and a
parity check against PyTorch on synthetic volumes. No bundle: edgeseg's bundles are 2-D
(:mod:`edgeseg.quant.volumetric` quantizes the file itself).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from .graph import clean_graph, save_single_file
from .onnx_export import OPSET, _ExportHead, _quiet_exporter_logs, check_opset, to_opset

INPUT_NAME = "volumes"


def export_volumetric(model: nn.Module, path: str | os.PathLike, shape: tuple[int, int, int], *,
                      opset: int = OPSET, parity_volumes: np.ndarray | None = None, atol: float = 1e-4) -> dict:
    """Export ``model`` for ``[1, in_channels, *shape]`` volumes to ``path`` (at ``opset``: 17 for
    TensorRT 8.5, as 2-D exports); check the ONNX Runtime
    logits against PyTorch's on ``parity_volumes`` ``[N, C, D, H, W]`` (default: two of the
    synthetic volumes), within ``atol`` times the largest logit. Returns the parity figures."""
    import onnx

    check_opset(opset)
    model = model.eval()
    channels = int(getattr(model, "in_channels", 1))
    head = _ExportHead(model, argmax=False, outputs=("logits",)).eval()
    example = torch.zeros(1, channels, *shape)
    with tempfile.TemporaryDirectory(prefix="edgeseg-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporter_logs():
                torch.onnx.export(head, (example,), str(raw), dynamo=True, opset_version=max(opset, 18), input_names=[INPUT_NAME],
                                  output_names=["logits"], optimize=True, verbose=False, report=False)
            graph = onnx.load(str(raw), load_external_data=True)
        except Exception as e:  # the exporter raises many types
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__} at {shape}: {first}",
                              fix="check the volume size is a multiple of the model's downsampling") from e
    graph = clean_graph(graph)
    out = save_single_file(to_opset(graph, opset) if opset < 19 else graph, Path(path))
    if parity_volumes is None:
        from ..data.synthetic_volumes import synthetic_volumes

        parity_volumes = synthetic_volumes(seed=12345, count=2, shape=shape)[0]
        if channels != 1:
            parity_volumes = np.repeat(parity_volumes, channels, axis=1)
    from .._ort import make_session

    sess = make_session(out)
    worst, scale = 0.0, 0.0
    for v in np.asarray(parity_volumes, np.float32):
        got = sess.run(["logits"], {INPUT_NAME: v[None]})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(v[None]))["logits"].numpy()
        worst, scale = max(worst, float(np.abs(got - ref).max())), max(scale, float(np.abs(ref).max()))
    if worst > atol * max(scale, 1.0):
        raise ExportError(f"{out.name}: ONNX Runtime logits differ from PyTorch's by {worst:.3g} (largest logit {scale:.3g})",
                          fix="export with another opset (--opset) or report the model")
    return {"path": str(out), "max_abs_diff": worst, "max_abs_logit": scale, "volumes": len(parity_volumes)}
