"""Every registered model through the shared tester: forward shapes at two sizes, Conv-BN fold
equivalence, ONNX export and ONNX Runtime parity. Tiny ``test_*`` variants run by default; the
real variants run under ``-m slow``."""
from __future__ import annotations

import pytest
import torch

from edgeseg.models import create_model, list_models, model_info

from .tester import check_export, check_fold, check_forward, randomize_batchnorm

ALL = list_models(task="semantic")  # instance models have their own tests (test_solov2.py, test_mask_rcnn.py)
PARAMS = [pytest.param(n, marks=() if n.startswith("test_") else pytest.mark.slow) for n in ALL]


def test_every_architecture_has_a_tiny_variant():
    every = list_models()
    archs = {model_info(n).arch for n in every}
    tiny = {model_info(n).arch for n in every if model_info(n).tiny}
    assert archs == tiny
    assert {"fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplabv3", "deeplabv3plus"} <= archs


def _build(name: str):
    torch.manual_seed(0)
    return randomize_batchnorm(create_model(name, num_classes=5))


@pytest.mark.parametrize("name", PARAMS)
def test_forward_shapes(name):
    check_forward(_build(name))


@pytest.mark.parametrize("name", PARAMS)
def test_conv_bn_fold(name):
    check_fold(_build(name))


@pytest.mark.parametrize("name", PARAMS)
def test_export_parity(name, tmp_path):
    check_export(_build(name), tmp_path)



def test_fcn8s_edge_head_is_3x3():
    """fcn8s_mobilenetv2 (and its tiny twin, run through the shared tester above) use a 3x3 fc6."""
    for name in ("fcn8s_mobilenetv2", "test_fcn8s_mobilenetv2"):
        fc6 = create_model(name, num_classes=5).fc[0]
        assert fc6.kernel_size == (3, 3) and fc6.padding == (1, 1)
