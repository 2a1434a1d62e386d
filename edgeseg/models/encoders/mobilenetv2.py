"""MobileNetV2 encoder — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(CVPR 2018). ReLU6 everywhere, linear bottlenecks; the segmentation variant (as in the paper's
DeepLabV3 experiments) stops at the 320-channel block, without the last 1280-channel conv.
"""
from __future__ import annotations

from ._mobile import BlockCfg, MobileEncoder
from .base import ENCODERS

# (expansion t, channels c, repeats n, stride s) from Table 2 of the paper
V2_TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _blocks(table, repeats_cap: int | None = None) -> tuple[BlockCfg, ...]:
    out, cin = [], 32
    for t, c, n, s in table:
        for j in range(min(n, repeats_cap) if repeats_cap else n):
            out.append(BlockCfg(3, cin * t, c, False, "relu6", s if j == 0 else 1))
            cin = c
    return tuple(out)


@ENCODERS.register("mobilenetv2")
def mobilenetv2(width_mult: float = 1.0, **kw) -> MobileEncoder:
    return MobileEncoder(_blocks(V2_TABLE), stem=32, stem_act="relu6", last=None, last_act="relu6",
                         width_mult=width_mult, **kw)


@ENCODERS.register("test_mobilenetv2")
def test_mobilenetv2(**kw) -> MobileEncoder:
    return MobileEncoder(_blocks(V2_TABLE, repeats_cap=1), stem=32, stem_act="relu6", last=None, last_act="relu6",
                         width_mult=0.25, **kw)
