"""The CUDA kernels: compiled with nvcc here (for Jetson Orin sm_87 and Hopper sm_90), run on a GPU when present."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgeseg.ops as ops  # noqa: E402
from edgeseg.ops import _cuda  # noqa: E402


def _nvcc():
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("nvcc not found: the CUDA sources cannot be compile-checked here")


def _compile(tmp_path, source, arch, flag):
    out = tmp_path / ("k.ptx" if flag == "--ptx" else "k.cubin")
    done = subprocess.run([_nvcc(), flag, f"-arch={arch}", "-std=c++17", str(_cuda.SOURCE_DIR / source), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("source", sorted(_cuda.KERNELS))
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_sources_compile_to_ptx(tmp_path, source, arch):
    ptx = _compile(tmp_path, source, arch, "--ptx")
    entries = set(re.findall(r"\.entry\s+(\w+)\(", ptx.read_text()))
    assert entries == set(_cuda.kernel_names(source))  # the names the loader looks up


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(_cuda.KERNELS))
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_sources_assemble_to_cubin(tmp_path, source, arch):
    assert _compile(tmp_path, source, arch, "--cubin").stat().st_size > 1000  # ptxas accepted every kernel


@pytest.mark.parametrize("source, struct, dtype", [("deform_conv.cu", "DcnShape", _cuda._DCN_SHAPE),
                                                   ("roi_align.cu", "RoiShape", _cuda._ROI_SHAPE)])
def test_kernel_argument_struct_matches_the_loader(source, struct, dtype):
    body = re.search(r"struct " + struct + r" \{(.*?)\};", (_cuda.SOURCE_DIR / source).read_text(), re.S).group(1)
    fields = []
    for decl in body.split(";"):
        words = decl.replace(",", " ").split()
        if words:
            fields += [(name, words[0]) for name in words[1:]]
    assert [n for n, _ in fields] == list(dtype.names)
    c_types = {"int": np.int32, "float": np.float32}
    assert all(dtype.fields[n][0] == np.dtype(c_types[t]) for n, t in fields)


# ------------------------------------------------------------------------------------------ on a GPU
def _gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("cupy")
    return torch.device("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_deform_conv_kernel_matches_reference(dtype, tol):
    dev = _gpu()
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 8, 13, 15, generator=g), torch.randn(6, 4, 3, 3, generator=g) * 0.2
    ho, wo = ops.deform_conv_output_size(13, 3, 2, 1, 1), ops.deform_conv_output_size(15, 3, 2, 1, 1)
    off, mask, b = torch.randn(2, 36, ho, wo, generator=g) * 2, torch.rand(2, 18, ho, wo, generator=g), torch.randn(6)
    args = [t.to(dev, dtype) for t in (x, off, w, b, mask)]
    ref = ops.deform_conv2d_reference(*[t.double() for t in args], [2, 2], [1, 1], [1, 1], 2, 2)
    got = ops.deform_conv2d(*args, stride=2, padding=1, groups=2, offset_groups=2)
    assert _cuda.kernels_usable(args[0])
    torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_deform_conv_kernel_backward_matches_reference():
    dev = _gpu()
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 4, 7, 8, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    off, mask, b = torch.randn(2, 36, 7, 8, generator=g) * 2, torch.rand(2, 18, 7, 8, generator=g), torch.randn(4)
    grad = torch.randn(2, 4, 7, 8, generator=g)
    a = [t.to(dev).requires_grad_(True) for t in (x, off, w, b, mask)]
    r = [t.to(dev).double().requires_grad_(True) for t in (x, off, w, b, mask)]
    ops.deform_conv2d(*a, padding=1, groups=2, offset_groups=2).backward(grad.to(dev))
    ops.deform_conv2d_reference(*r, [1, 1], [1, 1], [1, 1], 2, 2).backward(grad.to(dev).double())
    for ta, tr in zip(a, r):
        torch.testing.assert_close(ta.grad.double(), tr.grad, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_kernel_matches_reference(mode, aligned, sampling_ratio):
    dev = _gpu()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 20, 24, generator=g)
    xy = torch.rand(40, 2, generator=g) * 90 - 10
    boxes = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy,
                       xy + torch.rand(40, 2, generator=g) * 60], 1)
    ref = ops.roi_align(x, boxes, (7, 6), 0.25, sampling_ratio, aligned, mode)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 1e-2)):
        got = ops.roi_align(x.to(dev, dtype), boxes.to(dev, dtype), (7, 6), 0.25, sampling_ratio, aligned, mode)
        torch.testing.assert_close(got.float().cpu(), ref, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_kernels_agree_with_torchvision():
    dev = _gpu()
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 8, 16, 16, generator=g), torch.randn(8, 8, 3, 3, generator=g)
    off, mask = torch.randn(2, 36, 16, 16, generator=g) * 2, torch.rand(2, 18, 16, 16, generator=g)
    x, w, off, mask = (t.to(dev) for t in (x, w, off, mask))
    ours = ops.deform_conv2d(x, off, w, None, mask, padding=1, offset_groups=2)
    theirs = tv.ops.deform_conv2d(x, off, w, None, padding=1, mask=mask)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    boxes = torch.tensor([[0, 1.5, 2.0, 30.0, 40.0], [1, -4.0, 3.0, 20.0, 70.0]], device=dev)
    for aligned in (True, False):
        torch.testing.assert_close(ops.roi_align(x, boxes, 7, 0.25, 2, aligned),
                                   tv.ops.roi_align(x, boxes, 7, 0.25, 2, aligned), atol=1e-5, rtol=1e-5)


def _columns_by_reference(x, off, msk, weight, stride, padding, dilation, offset_groups):
    """What the im2col kernel writes, ``[C*kh*kw, N*Ho*Wo]``, computed by the reference with one-hot weights."""
    c, taps = x.shape[1], weight.shape[2] * weight.shape[3]
    eye = torch.eye(c * taps, dtype=x.dtype).reshape(c * taps, c, weight.shape[2], weight.shape[3])
    cols = ops.deform_conv2d_reference(x, off, eye, None, msk, stride, padding, dilation, 1, offset_groups)
    return cols.transpose(0, 1).reshape(c * taps, -1)


def test_cuda_forward_glue_with_reference_columns(monkeypatch):
    """The batching, grouping and matrix products around the im2col kernel, checked on the CPU.

    The kernel itself is replaced by the reference's columns (its layout is documented in
    deform_conv.cu); the GPU tests above check the kernel.
    """
    monkeypatch.setattr(_cuda, "_im2col", _columns_by_reference)
    monkeypatch.setattr(_cuda, "_COLUMN_BUDGET", 2 * 4 * 9 * 30)  # forces chunks of 2 images
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(5, 4, 6, 10, generator=g), torch.randn(6, 2, 3, 3, generator=g)
    off, mask, b = torch.randn(5, 36, 3, 10, generator=g), torch.rand(5, 18, 3, 10, generator=g), torch.randn(6)
    args = (x, off, w, b, mask, [2, 1], [1, 1], [1, 1], 2, 2)
    torch.testing.assert_close(_cuda.deform_conv2d_forward(*args), ops.deform_conv2d_reference(*args),
                               atol=1e-5, rtol=1e-5)


def test_cuda_backward_weight_glue_with_reference_columns(monkeypatch):
    """grad_weight / grad_bias of the CUDA backward (cuBLAS products over reference columns), on the CPU.

    The col2im kernels are skipped here (their gradients are checked by the GPU tests).
    """
    monkeypatch.setattr(_cuda, "_im2col", _columns_by_reference)
    monkeypatch.setattr(_cuda, "_launch", lambda *a, **k: None)
    monkeypatch.setattr(_cuda, "_COLUMN_BUDGET", 2 * 4 * 9 * 30)
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(3, 4, 6, 10, generator=g), torch.randn(6, 2, 3, 3, generator=g)
    off, mask, b = torch.randn(3, 36, 3, 10, generator=g), torch.rand(3, 18, 3, 10, generator=g), torch.randn(6)
    grad = torch.randn(3, 6, 3, 10, generator=g)
    conf = ([2, 1], [1, 1], [1, 1], 2, 2)
    _, _, gw, gb, _ = _cuda.deform_conv2d_backward(grad, x, off, w, b, mask, *conf)
    wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ops.deform_conv2d_reference(x, off, wr, br, mask, *conf).backward(grad)
    torch.testing.assert_close(gw, wr.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gb, br.grad)
