"""Frozen encoders for REPA. Real encoders (DINOv2, Inception, CREPE) plug in through config
``_target_`` with local weights; this module holds the random-init stand-in used by tests and cost
benchmarks, where only the architecture (and so the FLOPs) matters.

Interface: ``encoder(tokens (B, N, C), raw) -> (B, N, feature_dim)``; one feature per model token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import sincos_1d
from .transformer import Attention, Mlp


class _ViTBlock(nn.Module):
    """Pre-norm ViT block (affine LayerNorm, attention, GELU MLP)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RandomTokenEncoder(nn.Module):
    """A frozen, randomly initialised ViT over the clean tokens (a stand-in for DINOv2 and friends).

    Initialised from its own seeded generator so that it is identical in every process and run
    (and consumes none of the training RNG). ``width=768, depth=12, heads=12`` has the cost of
    DINOv2 ViT-B/14 on 256 patches.
    """

    def __init__(self, in_dim: int, width: int = 64, depth: int = 2, heads: int = 2, seed: int = 0):
        super().__init__()
        self.feature_dim = width
        saved_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            self.embed = nn.Linear(in_dim, width)
            self.blocks = nn.ModuleList([_ViTBlock(width, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(width, eps=1e-6)
        finally:
            torch.random.set_rng_state(saved_state)
        self.requires_grad_(False).eval()

    def forward(self, tokens: Tensor, raw=None) -> Tensor:
        N = tokens.shape[1]
        pos = sincos_1d(self.feature_dim, torch.arange(N)).to(tokens)
        h = self.embed(tokens) + pos
        for block in self.blocks:
            h = block(h)
        return self.norm(h)
