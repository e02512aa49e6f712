"""Embedding layers: timesteps, class labels, and fixed sin-cos positions from token coordinates.

The timestep and label embedders follow DiT/SiT (sinusoidal frequencies -> MLP; a label table with
one extra "null" row for classifier-free guidance). Positions are built from integer coordinates
so the same code serves images, video and audio; for a 2-D image grid with ``axes=("width",
"height")`` the table equals DiT's fixed 2-D sin-cos table exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .tokens import AXES


#################################################################################
#                Embedding layers for timesteps and class labels                #
#################################################################################


def timestep_frequency_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features ``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period^(-k / (dim/2))``.

    ``t`` is used as given (in [0, 1], SiT-style, no x1000 scaling). Shape ``(K,) -> (K, dim)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> vectors: frequency features, then Linear-SiLU-Linear."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:  # (K,) -> (K, D)
        freq = timestep_frequency_embedding(t, self.frequency_size).to(self.mlp[0].weight.dtype)
        return self.mlp(freq)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors. Row ``num_classes`` is the null class used for CFG and label dropout.

    Dropout is *not* applied here: the objective draws it once per sample so that Self-Flow's
    student and teacher drop the same labels (maintainer answer, Self-Flow issue #10).
    """

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor) -> Tensor:  # (B,) -> (B, D)
        # Checked on CPU only: on a GPU the check would force a host sync every forward.
        if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(
                f"class labels must be in [0, {self.num_classes}] ({self.num_classes} = null class), "
                f"got range [{int(y.min())}, {int(y.max())}]"
            )
        return self.embedding_table(y)


#################################################################################
#                 Sine/cosine positional embedding from coordinates             #
#################################################################################


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """``(M,) -> (M, dim)``: ``[sin(p w_k), cos(p w_k)]`` with ``w_k = 10000^(-k / (dim/2))`` (float64)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.to(torch.float64).reshape(-1)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def axis_split(dim: int, num_axes: int) -> list[int]:
    """Split ``dim`` channels into even chunks, one per axis; any remainder goes to the first axis."""
    base = (dim // (2 * num_axes)) * 2
    if base == 0:
        raise ValueError(f"hidden size {dim} is too small for {num_axes} positional axes")
    sizes = [base] * num_axes
    sizes[0] += dim - base * num_axes
    if sizes[0] % 2:
        raise ValueError(f"hidden size {dim} must be even for sin-cos positions")
    return sizes


def sincos_from_coords(dim: int, coords: Tensor, axes: Sequence[str] = ("width", "height")) -> Tensor:
    """Fixed positional table ``(N, dim)`` from integer coordinates ``(N, 3)`` over (time, height, width).

    Channels are split across ``axes`` in the order given. DiT's 2-D table puts the width
    coordinate in the first half and the height coordinate in the second half (its meshgrid lists
    w first), so ``axes=("width", "height")`` on a row-major grid reproduces it exactly.
    """
    unknown = [a for a in axes if a not in AXES]
    if unknown or not axes:
        raise ValueError(f"pos_axes={list(axes)}: each must be one of {AXES}")
    parts = [sincos_1d(size, coords[:, AXES.index(axis)]) for axis, size in zip(axes, axis_split(dim, len(axes)))]
    return torch.cat(parts, dim=1)
