"""Tubelet tokenizer: non-overlapping ``(pt, ph, pw)`` space-time patches <-> tokens.

A clip ``(B, T, C, H, W)`` becomes ``N = (T/pt) (H/ph) (W/pw)`` tokens of dimension
``C pt ph pw`` in raster order over (time, height, width), with integer coordinates
``(t, h, w)`` of each tubelet. It is a pure reshape, so ``decode(encode(x)) == x`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from core.tokens import Tokenizer


class TubeletTokenizer(Tokenizer):
    """Args:
        num_frames, height, width: clip shape the tokenizer accepts.
        patch: tubelet size ``(pt, ph, pw)``; each must divide the matching clip size.
        channels: colour channels (3).
    """

    def __init__(self, num_frames: int = 16, height: int = 32, width: int = 32,
                 patch: Sequence[int] = (2, 8, 8), channels: int = 3):
        super().__init__()
        pt, ph, pw = (int(p) for p in patch)
        for name, size, p in (("num_frames", num_frames, pt), ("height", height, ph), ("width", width, pw)):
            if p < 1 or size % p:
                raise ValueError(f"tokenizer.patch {tuple(patch)}: {name}={size} is not divisible by {p}")
        self.shape = (num_frames, channels, height, width)
        self.patch = (pt, ph, pw)
        self.grid = (num_frames // pt, height // ph, width // pw)
        self.token_dim = channels * pt * ph * pw
        t, h, w = torch.meshgrid(*(torch.arange(g) for g in self.grid), indexing="ij")
        self.register_buffer("_coords", torch.stack([t, h, w], -1).reshape(-1, 3), persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> ``(B, N, C*pt*ph*pw)``; channel order inside a token is (pt, ph, pw, C)."""
        if x.dim() != 5 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"TubeletTokenizer expects clips (B, {', '.join(map(str, self.shape))}) "
                             f"(B, T, C, H, W), got {tuple(x.shape)}; check dataset.num_frames/size")
        pt, ph, pw = self.patch
        return rearrange(x, "b (t pt) c (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)

    def decode(self, tokens: Tensor) -> Tensor:
        """``(B, N, D)`` -> ``(B, T, C, H, W)``."""
        n = self.grid[0] * self.grid[1] * self.grid[2]
        if tokens.dim() != 3 or tokens.shape[1:] != (n, self.token_dim):
            raise ValueError(f"TubeletTokenizer.decode expects tokens (B, {n}, {self.token_dim}), "
                             f"got {tuple(tokens.shape)}")
        pt, ph, pw = self.patch
        t, h, w = self.grid
        return rearrange(tokens, "b (t h w) (pt ph pw c) -> b (t pt) c (h ph) (w pw)",
                         t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)

    def coords(self) -> Tensor:
        """``(N, 3)`` tubelet indices over (time, height, width), raster order."""
        return self._coords
