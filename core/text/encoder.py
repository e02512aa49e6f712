"""The offline text encoder: word embeddings, learned positions and a few pre-norm transformer
layers, trained together with the flow model (no download).

Padding (id 0) is masked as attention key everywhere. An empty prompt (every position padded) has
no key to attend to; its rows attend to the padding instead (any finite value) and every output
of a padded position is then zeroed, so an empty prompt encodes to exactly zero tokens with an
all-False mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vocab import PAD


def key_mask(mask: Tensor) -> Tensor:
    """``(B, L)`` valid-token mask -> ``(B, 1, 1, L)`` attention mask; empty rows attend to all."""
    empty = ~mask.any(dim=1, keepdim=True)
    return (mask | empty)[:, None, None, :]


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"text encoder width {width} must be divisible by its heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class OfflineTextEncoder(nn.Module):
    """``ids (B, L)`` -> ``(tokens (B, L, width), mask (B, L) bool)``; padded tokens are zero."""

    def __init__(self, vocab_size: int, width: int, depth: int = 2, heads: int = 4, max_len: int = 32):
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(1, max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList([EncoderLayer(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"text ids must be (B, L<= {self.max_len}), got {tuple(ids.shape)}")
        mask = ids != PAD
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        attn = key_mask(mask)
        for layer in self.layers:
            x = layer(x, attn)
        return self.norm(x) * mask[..., None], mask


class FeatureAdapter(nn.Module):
    """Precomputed features of a frozen pretrained encoder -> model width.

    Input ``(B, L, 1 + E)``: channel 0 is the valid-token flag, the rest the features (the layout
    :class:`~core.text.pretrained.PretrainedTextEncoder` caches), so an all-zero row is the empty
    prompt exactly like an all-padding id row.
    """

    def __init__(self, feature_dim: int, width: int, max_len: int):
        super().__init__()
        self.feature_dim, self.max_len = feature_dim, max_len
        self.norm = nn.LayerNorm(feature_dim)
        self.proj = nn.Linear(feature_dim, width)
        self.pos = nn.Parameter(torch.zeros(1, max_len, width))

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        if feats.dim() != 3 or feats.shape[-1] != 1 + self.feature_dim:
            raise ValueError(f"text features must be (B, L, 1 + {self.feature_dim}), got {tuple(feats.shape)}")
        mask = feats[..., 0] > 0.5
        x = self.proj(self.norm(feats[..., 1:])) + self.pos[:, : feats.shape[1]]
        return x * mask[..., None], mask


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """``(B, L, D), (B, L) -> (B, D)``: mean over valid tokens, exactly zero for an empty prompt."""
    m = mask.to(tokens.dtype)[..., None]
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
