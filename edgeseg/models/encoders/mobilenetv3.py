"""MobileNetV3 encoders — Howard et al., "Searching for MobileNetV3" (ICCV 2019), Large and Small
(Tables 1 and 2): inverted residuals with squeeze-excite and hard-swish, ending with the 1x1
960/576-channel conv. For segmentation the last stage is dilated instead of strided (the paper's
LR-ASPP/DeepLab setting: output stride 16).
"""
from __future__ import annotations

from ._mobile import BlockCfg, MobileEncoder
from .base import ENCODERS

RE, HS = "relu", "hardswish"
# kernel, expanded, out, SE, activation, stride
LARGE = tuple(BlockCfg(*row) for row in (
    (3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1),
))
SMALL = tuple(BlockCfg(*row) for row in (
    (3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2), (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1),
))
# one block per resolution, same kinds of layers (SE, hard-swish, 5x5) as Large
TINY = tuple(BlockCfg(*row) for row in (
    (3, 16, 16, False, RE, 1), (3, 32, 16, False, RE, 2), (5, 32, 24, True, RE, 2),
    (3, 48, 32, False, HS, 2), (3, 64, 32, True, HS, 1), (5, 64, 48, True, HS, 2),
))


@ENCODERS.register("mobilenetv3_large")
def mobilenetv3_large(width_mult: float = 1.0, **kw) -> MobileEncoder:
    return MobileEncoder(LARGE, stem=16, stem_act=HS, last=960, last_act=HS, width_mult=width_mult, **kw)


@ENCODERS.register("mobilenetv3_small")
def mobilenetv3_small(width_mult: float = 1.0, **kw) -> MobileEncoder:
    return MobileEncoder(SMALL, stem=16, stem_act=HS, last=576, last_act=HS, width_mult=width_mult, **kw)


@ENCODERS.register("test_mobilenetv3")
def test_mobilenetv3(**kw) -> MobileEncoder:
    return MobileEncoder(TINY, stem=16, stem_act=HS, last=64, last_act=HS, width_mult=0.5, **kw)
