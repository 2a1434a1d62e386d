"""Graph reasoning units for segmentation heads.

**GloRe** — Chen, Rohrbach, Yan, Yan, Feng & Kalantidis, "Graph-Based Global Reasoning Networks"
(CVPR 2019). :class:`GloReUnit` follows the authors' ``GloRe_Unit``: a 1x1 conv reduces the
features to ``S`` states, another 1x1 conv gives the projection ``B`` onto ``V`` nodes; the node
features are ``V = X_S B^T`` (``[S, V]``, a sum over all positions), a graph convolution runs as
two 1-D convs, over nodes (``A_g``, with a residual) then over states (``W_g``, no bias), after a
ReLU; the same ``B`` reprojects, ``Y = Z B``; a 1x1 conv and batch norm (its scale initialised to
0, so the unit starts as the identity) extend back to ``C`` channels, added to the input. The
paper writes the node update as ``(I - A_g) V``; the authors' code (and this module) computes
``(I + A_g) V``, the same family since ``A_g`` is learned. :class:`GloReNet` is the paper's
segmentation setting: a dilated FCN (output stride 8) whose head is a 3x3 conv-BN-ReLU reducing to
512 channels, one GloRe unit (``S`` = 128 states, ``V`` = 64 nodes, the code's ``2 * num_mid``
and ``num_mid``), dropout and a 1x1 classifier.

**GCU** — Li & Gupta, "Beyond Grids: Learning Graph Representations for Visual Recognition"
(NeurIPS 2018). :class:`GraphConvUnit`: *graph projection* softly assigns every pixel ``x_i`` to
``V`` learned vertices ``w_k`` with learned per-channel scales ``sigma_k``,
``q_ik = softmax_k(-||(x_i - w_k) / sigma_k||^2 / 2)``; each vertex's feature is the assigned
pixels' mean normalised residual ``z_k = sum_i q_ik (x_i - w_k) / sigma_k / sum_i q_ik``, then
L2-normalised. The adjacency is ``A = Z Z^T``, *graph convolution* ``Z' = ReLU(A Z W_g)`` and
*reprojection* ``Y = Q Z'`` (the same assignment). :class:`GCUNet` is the paper's PSP-like setting:
the pyramid pooling of PSPNet replaced by four GCUs with 2, 4, 8 and 32 vertices on the dilated
(output stride 8) encoder, each giving ``C/4`` channels, concatenated with the features, then a
3x3 conv-BN-ReLU (512), dropout and a 1x1 classifier.

Deviations: the paper does not say how vertices are initialised; the centres start as N(0, 1) and
``sigma_k^2`` as ``C`` (the channel count), so the initial assignment is soft (an exponent of order
1 rather than of order ``C``, which would make it one-hot). ``sigma`` is learned as ``log sigma``
so it stays positive. ``sum_i q_ik`` gets ``+1e-6`` so a vertex that no pixel reaches yields
``z_k = 0`` instead of 0/0. The squared distances are computed by expanding the square into
three matrix products, so the ``[HW, V, C]`` difference tensor is never built.

Export and INT8: every product is a MatMul on fixed shapes (GloRe: ``[S, HW] x [HW, V]`` and
``[S, V] x [V, HW]``, the 1-D convs export as Conv; GCU: the distance, the ``[V, HW] x [HW, C]``
pooling, ``Z Z^T``, ``A Z``, ``W_g`` and the reprojection). The ``tensorrt`` INT8 profile puts Q/DQ
on both inputs of each MatMul (activation x activation for all but ``W_g`` and the distance terms
whose right operands are constants derived from the centres) and on every Conv. GloRe's node
features sum over all positions and GCU's squared distances are wide-ranged: these are the
MatMuls to keep in float if ``edgeseg quantize --max-drop`` finds them sensitive.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import SemanticModel
from .encoders import Encoder, create_encoder
from .layers import ConvBNAct, init_weights
from .registry import register_model


class GraphConv1d(nn.Module):
    """GloRe's GCN on node features ``[N, S, V]``: ``W_g(ReLU(A_g V + V))`` with ``A_g`` a 1-D conv
    over the nodes (with bias) and ``W_g`` one over the states (no bias)."""

    def __init__(self, num_state: int, num_node: int):
        super().__init__()
        self.node = nn.Conv1d(num_node, num_node, 1)
        self.relu = nn.ReLU(inplace=True)
        self.state = nn.Conv1d(num_state, num_state, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.node(x.transpose(1, 2)).transpose(1, 2) + x
        return self.state(self.relu(h))


class GloReUnit(nn.Module):
    """``x + BN(W_ext (GCN(X_S B^T) B))`` on ``[N, C, H, W]``; ``S`` states, ``V`` nodes."""

    def __init__(self, channels: int, num_state: int, num_node: int):
        super().__init__()
        self.state = nn.Conv2d(channels, num_state, 1)
        self.proj = nn.Conv2d(channels, num_node, 1)
        self.gcn = GraphConv1d(num_state, num_node)
        self.extend = ConvBNAct(num_state, channels, 1, act="none")
        self.extend[1].eps = 1e-4  # the authors' "blocker"

    def reset_blocker(self) -> None:
        """Zero the extension's BN scale, so the unit is the identity (the authors' init)."""
        nn.init.zeros_(self.extend[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.proj(x).flatten(2)  # [N, V, HW]
        nodes = torch.matmul(self.state(x).flatten(2), b.transpose(1, 2))  # [N, S, V]
        y = torch.matmul(self.gcn(nodes), b)  # [N, S, HW]
        n, _, h, w = x.shape
        return x + self.extend(y.reshape(n, -1, h, w))


class GraphConvUnit(nn.Module):
    """GCU: project ``[N, C, H, W]`` onto ``vertices`` learned vertices, graph-convolve, reproject
    to ``[N, out_channels, H, W]``."""

    def __init__(self, channels: int, out_channels: int, vertices: int, eps: float = 1e-6):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(vertices, channels))
        self.log_sigma = nn.Parameter(torch.full((vertices, channels), 0.5 * math.log(channels)))
        self.weight = nn.Linear(channels, out_channels, bias=False)
        self.eps = eps

    def assignment(self, pixels: torch.Tensor) -> torch.Tensor:
        """``Q`` ``[N, HW, V]`` from pixels ``[N, HW, C]``: softmax over vertices of
        ``-||(x - w_k) / sigma_k||^2 / 2``, with the square expanded into matrix products."""
        inv_var = torch.exp(-2.0 * self.log_sigma)  # [V, C]
        d2 = (torch.matmul(pixels * pixels, inv_var.t()) - 2.0 * torch.matmul(pixels, (self.centres * inv_var).t())
              + (self.centres * self.centres * inv_var).sum(-1))
        return torch.softmax(-0.5 * d2, dim=-1)

    def project(self, pixels: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Vertex features ``Z`` ``[N, V, C]``: the assigned pixels' mean residual ``(x - w_k) /
        sigma_k``, L2-normalised per vertex."""
        mass = q.sum(1).unsqueeze(-1)  # [N, V, 1]
        residual = torch.matmul(q.transpose(1, 2), pixels) - mass * self.centres  # sum_i q_ik (x_i - w_k)
        z = residual / (mass + self.eps) * torch.exp(-self.log_sigma)
        return z / torch.sqrt((z * z).sum(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        q = self.assignment(pixels)
        z = self.project(pixels, q)
        adjacency = torch.matmul(z, z.transpose(1, 2))  # [N, V, V]
        z = torch.relu(self.weight(torch.matmul(adjacency, z)))  # [N, V, out]
        n, _, h, w = x.shape
        return torch.matmul(q, z).transpose(1, 2).reshape(n, -1, h, w)


class GloReNet(SemanticModel):
    """Dilated FCN with one GloRe unit in the head (the paper's segmentation experiment)."""

    def __init__(self, encoder: Encoder, num_classes: int, channels: int = 512, num_state: int | None = None,
                 num_node: int | None = None, dropout: float = 0.1):
        super().__init__(num_classes)
        self.encoder = encoder
        self.reduce = ConvBNAct(encoder.out_channels[-1], channels, 3)
        self.glore = GloReUnit(channels, num_state or channels // 4, num_node or channels // 8)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
        init_weights(self.reduce, self.glore, self.classifier)
        self.glore.reset_blocker()

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.glore(self.reduce(self.encoder(images)[-1])))


class GCUNet(SemanticModel):
    """PSPNet with its pyramid pooling replaced by GCUs (2, 4, 8, 32 vertices by default)."""

    def __init__(self, encoder: Encoder, num_classes: int, vertices: tuple[int, ...] = (2, 4, 8, 32),
                 channels: int = 512, dropout: float = 0.1):
        super().__init__(num_classes)
        self.encoder = encoder
        cin = encoder.out_channels[-1]
        self.vertices = tuple(vertices)
        self.gcus = nn.ModuleList(GraphConvUnit(cin, cin // len(vertices), v) for v in vertices)
        self.head = nn.Sequential(ConvBNAct(cin + len(vertices) * (cin // len(vertices)), channels, 3),
                                  nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
        init_weights(self.head)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)[-1]
        return self.head(torch.cat([x] + [gcu(x) for gcu in self.gcus], dim=1))


def _glore(encoder: str, num_classes: int, output_stride: int = 8, channels: int = 512, num_state: int | None = None,
           num_node: int | None = None, dropout: float = 0.1, **kw) -> GloReNet:
    return GloReNet(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, channels, num_state,
                    num_node, dropout)


def _gcu(encoder: str, num_classes: int, output_stride: int = 8, vertices: tuple[int, ...] = (2, 4, 8, 32),
         channels: int = 512, dropout: float = 0.1, **kw) -> GCUNet:
    return GCUNet(create_encoder(encoder, output_stride=output_stride, **kw), num_classes, vertices, channels, dropout)


@register_model(arch="glore", encoder="resnet50")
def glore_resnet50(num_classes: int = 21, **kw) -> GloReNet:
    """GloRe FCN on dilated ResNet-50 (output stride 8): 512-channel head, 128 states, 64 nodes."""
    return _glore("resnet50", num_classes, **kw)


@register_model(arch="glore", encoder="resnet18")
def glore_resnet18(num_classes: int = 21, **kw) -> GloReNet:
    """GloRe FCN on dilated ResNet-18 (output stride 8): 256-channel head, 64 states, 32 nodes."""
    return _glore("resnet18", num_classes, channels=256, **kw)


@register_model(arch="glore", encoder="test_resnet")
def test_glore(num_classes: int = 5, **kw) -> GloReNet:
    """Tiny GloRe FCN for tests (16 channels, 4 states, 2 nodes)."""
    return _glore("test_resnet", num_classes, channels=16, **kw)


@register_model(arch="gcu", encoder="resnet50")
def gcu_resnet50(num_classes: int = 21, **kw) -> GCUNet:
    """GCUs (2, 4, 8, 32 vertices) on dilated ResNet-50 (output stride 8), PSP-like head."""
    return _gcu("resnet50", num_classes, **kw)


@register_model(arch="gcu", encoder="resnet18")
def gcu_resnet18(num_classes: int = 21, **kw) -> GCUNet:
    """GCUs (2, 4, 8, 32 vertices) on dilated ResNet-18 (output stride 8), 256-channel head."""
    return _gcu("resnet18", num_classes, channels=256, **kw)


@register_model(arch="gcu", encoder="test_resnet")
def test_gcu(num_classes: int = 5, **kw) -> GCUNet:
    """Tiny GCU model for tests (16-channel features, 4 channels per GCU)."""
    return _gcu("test_resnet", num_classes, channels=8, **kw)
