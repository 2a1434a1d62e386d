"""A tiny segmentation net trained for a few seconds on a colour -> class task, exported to a bundle.

Quickly trained (never random weights): the accuracy gate needs a model whose FP32 mIoU is real.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.structures import ImageShape, InputSpec

COLOURS = np.array([[20, 20, 20], [220, 40, 40], [40, 200, 60], [50, 70, 230]], np.uint8)
CLASSES = ("bg", "red", "green", "blue")
SIZE = 32


class Sample:
    def __init__(self, image, labels, name=""):
        self.image, self.labels, self.name = image, labels, name


class Dataset(list):
    """Samples with the dataset attributes ``edgeseg.eval.evaluate`` reads (``classes``, ``ignore_index``)."""

    def __init__(self, samples, classes=CLASSES, ignore_index=255):
        super().__init__(samples)
        self.classes, self.ignore_index = tuple(classes), ignore_index


def scenes(n: int, seed: int, size: int = SIZE, noise: float = 12.0) -> list[Sample]:
    """Rectangles of 3 colours on a dark background, with pixel noise; label = colour id."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lab = np.zeros((size, size), np.uint8)
        for _ in range(4):
            c = int(rng.integers(1, len(COLOURS)))
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(5, size // 2, 2)
            lab[y:y + h, x:x + w] = c
        img = COLOURS[lab].astype(np.float32) + rng.normal(0, noise, (size, size, 3))
        out.append(Sample(np.clip(img, 0, 255).astype(np.uint8), lab, f"scene_{seed}_{i}"))
    return out


SPEC = InputSpec(size=ImageShape(SIZE, SIZE))


def train_tiny(steps: int = 150, seed: int = 0, width: int = 16):
    """A 4-conv net (with BN, a residual add and a ConvTranspose) trained on :func:`scenes`."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.res = nn.Sequential(nn.Conv2d(width, width, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(width))
            self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
            self.head = nn.Conv2d(width, len(COLOURS), 1)

        def forward(self, x):
            a = self.stem(x)
            b = self.down(a)
            b = torch.relu(b + self.res(b))
            return self.head(torch.relu(self.up(b) + a))

    data = scenes(64, seed=100 + seed)
    x = torch.from_numpy(np.concatenate([SPEC.preprocess(s.image)[0] for s in data]))
    y = torch.from_numpy(np.stack([s.labels for s in data]).astype(np.int64))
    net = Tiny()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (16,))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def export_bundle(net, out: Path, opset: int = 17, spec: InputSpec = SPEC, stride: int = 1, half: bool = False) -> Path:
    """Write ``net`` as an FP32 bundle (legacy exporter: fast, keeps BN folded by torch). ``stride``
    > 1 exports logits average-pooled to 1/stride of the input (as models whose head runs at stride
    4 or 8 output them; the decoder upsamples). ``half``: exported as Ultralytics' ``half=True`` does
    (``model.half()`` and a float16 input: float16 weights, input and output)."""
    import copy
    import dataclasses
    import warnings

    import torch

    from edgeseg.bundle import Bundle, Manifest, ModelFile, OutputSpec

    if stride > 1:
        net = torch.nn.Sequential(net, torch.nn.AvgPool2d(stride)).eval()
    dtype = torch.float16 if half else torch.float32
    if half:
        net, spec = copy.deepcopy(net).half(), dataclasses.replace(spec, dtype="float16")
    onnx_path = out.with_suffix(".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE, dtype=dtype), str(onnx_path), dynamo=False,
                          opset_version=opset, input_names=["images"], output_names=["logits"])
    manifest = Manifest(name="tiny", task="semantic", classes=CLASSES, input=spec,
                        outputs=(OutputSpec("logits", "logits", str(dtype).split(".")[1],
                                            (1, len(COLOURS), SIZE // stride, SIZE // stride)),))
    b = Bundle.create(out, manifest, overwrite=True)
    b.add_model(ModelFile("model.onnx", "fp32", opset=opset), onnx_path)
    return out


def cpu_quantizer(bundle: Path, frames, work: Path):
    """The ``cpu`` target's quantizer for ``bundle``, calibrated (minmax) on ``frames``, and its full
    INT8 model: (quantizer, full model, always-float node names, the other Conv/ConvTranspose names)."""
    import onnx

    from edgeseg.bundle import Bundle
    from edgeseg.quant.api import _Quantizer
    from edgeseg.quant.calibration import FeedReader
    from edgeseg.quant.prepare import prepare_model
    from edgeseg.quant.profiles import get_profile
    from edgeseg.quant.ranges import calibrate

    prepared = work / "p.onnx"
    prepare_model(Bundle.open(bundle).model_path("fp32"), prepared)
    profile = get_profile("cpu")
    table = calibrate(prepared, FeedReader(frames, SPEC), "minmax", symmetric=profile.activation_symmetric)
    q = _Quantizer(prepared, profile, table, frames, SPEC)
    full = q.model(None, work / "int8.onnx")
    fixed = {f.name for f in full.float_nodes}
    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Conv", "ConvTranspose")
             and n.name not in fixed]
    return q, full, fixed, convs
