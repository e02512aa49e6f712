"""TextSiT: the SiT backbone conditioned on a caption instead of a class label.

Conditioning ``y`` is a caption tensor instead of class labels, so trainer, objectives, EMA teacher
and samplers pass it through unchanged:

* ``text_input="ids"``: ``(B, L)`` word ids (0 = padding) for the offline encoder trained with the
  model (:class:`~core.text.encoder.OfflineTextEncoder`);
* ``text_input="features"``: ``(B, L, 1 + E)`` cached features of a frozen pretrained encoder,
  channel 0 the valid flag (:class:`~core.text.encoder.FeatureAdapter`).

Either way an all-zero row is the empty prompt, and ``null_class == 0``: label dropout's
``full_like(y, null_class)`` and CFG's null input both give the empty prompt with no new code.

Text enters twice: (1) a pooled vector (masked mean of the encoded tokens, through an MLP, exactly
zero for the empty prompt) is added to the adaLN conditioning ``t_emb + null_row + pooled`` of every
block; (2) the tokens themselves, as a second stream with joint attention (``text_arch="joint"``)
or as keys of a cross-attention (``"cross"``). Self-Flow's per-token timesteps apply to the data
tokens only; the text stream's adaLN sees one level per sample, ``text_time``:

* ``global``: the level of group 0 under dual-timestep scheduling (the t of the unmasked, majority
  tokens; Eq. 4) and the sample's t otherwise; the mean over tokens when per-token levels come
  without groups;
* ``mean``: the mean of the per-token levels.

With one t per sample (fm, repa, sampling, the Self-Flow teacher at tau_min) both are that t.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..path import expand_time
from ..text_blocks import CrossBlock, JointBlock
from ..transformer import SiT
from .encoder import FeatureAdapter, OfflineTextEncoder, masked_mean
from .vocab import PAD, Vocabulary

TEXT_ARCHS = ("joint", "cross")
TEXT_TIMES = ("global", "mean")
TEXT_INPUTS = ("ids", "features")


class PooledTextEmbedder(nn.Module):
    """Stands where SiT's label table stands: ``(B, D)`` pooled text vectors -> ``null_row + vec``.

    The single row (key ``embedding_table.weight``, shape ``(1, D)``) is the label table of a SiT
    with ``num_classes=0``; the empty prompt's vector is zero, leaving exactly that row.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(1, hidden_size)

    @property
    def null_class(self) -> int:
        return PAD

    def forward(self, pooled: Tensor, offset: Tensor | None = None) -> Tensor:
        """``null_row + pooled``; a joint model's modality embedding comes in as ``offset`` and is added
        to the row first, ``(null_row + offset) + pooled``, the very sum an exported member computes
        with the embedding folded into its row (bit-exact export, core/multimodal.py)."""
        row = self.embedding_table.weight[0]
        return (row if offset is None else row + offset) + pooled


def text_level(t: Tensor, group: Tensor | None, mode: str) -> Tensor:
    """One timestep per sample ``(B,)`` for the text stream (see the module docstring)."""
    if t.dim() == 1:
        return t
    if group is not None:
        return t[:, 0] if mode == "global" else t.gather(1, group).float().mean(1).to(t.dtype)
    return t.float().mean(1).to(t.dtype)


class TextSiT(SiT):
    """SiT + text. Extra args: ``vocab`` (tokens list; ids mode), ``feature_dim`` (features mode),
    ``max_text_len``, ``text_arch``, ``text_time``, ``encoder_depth``, ``encoder_heads``,
    ``pretrained_encoder`` (features mode: ``{name, key, path}`` of the frozen encoder, kept in the
    checkpoint so sampling can check it is given the same one)."""

    def __init__(self, in_channels: int, hidden_size: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, learn_sigma: bool = False, pos_axes: Sequence[str] = ("width", "height"),
                 grad_checkpointing: bool = False, prediction: str = "v", t_min: float = 0.05,
                 vocab: Sequence[str] | None = None, feature_dim: int | None = None, max_text_len: int = 32,
                 text_arch: str = "joint", text_time: str = "global", encoder_depth: int = 2,
                 encoder_heads: int | None = None, pretrained_encoder: dict | None = None, num_classes: int = 0):
        super().__init__(in_channels, hidden_size, depth, num_heads, mlp_ratio, 0, learn_sigma, pos_axes,
                         grad_checkpointing, prediction, t_min)
        for key, value, allowed in (("conditioning.arch", text_arch, TEXT_ARCHS),
                                    ("conditioning.text_time", text_time, TEXT_TIMES)):
            if value not in allowed:
                raise ValueError(f"{key}={value!r}: must be one of {allowed}")
        if (vocab is None) == (feature_dim is None):
            raise ValueError("TextSiT needs exactly one of vocab (offline encoder) or feature_dim (pretrained features)")
        self.text_input = "ids" if vocab is not None else "features"
        self.vocab = list(vocab) if vocab is not None else None
        self.feature_dim, self.max_text_len = feature_dim, int(max_text_len)
        self.pretrained_encoder = dict(pretrained_encoder) if pretrained_encoder else None
        self.text_arch, self.text_time = text_arch, text_time
        self.encoder_depth, self.encoder_heads = int(encoder_depth), int(encoder_heads or num_heads)
        D = hidden_size
        if self.vocab is not None:
            self.text_encoder = OfflineTextEncoder(len(self.vocab), D, self.encoder_depth, self.encoder_heads,
                                                   self.max_text_len)
        else:
            self.text_encoder = FeatureAdapter(int(feature_dim), D, self.max_text_len)
        self.y_embedder = PooledTextEmbedder(D)
        self.pooled_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        if text_arch == "joint":
            self.blocks = nn.ModuleList([JointBlock(D, num_heads, mlp_ratio, last=i == depth - 1) for i in range(depth)])
        else:
            self.blocks = nn.ModuleList([CrossBlock(D, num_heads, mlp_ratio) for _ in range(depth)])
        self.initialize_weights()
        for block in self.blocks:
            block.zero_init()

    @property
    def vocabulary(self) -> Vocabulary | None:
        return None if self.vocab is None else Vocabulary(self.vocab)

    def arch_config(self) -> dict:
        cfg = super().arch_config()
        cfg.pop("num_classes")
        cfg["text"] = {"vocab": self.vocab, "feature_dim": self.feature_dim, "max_text_len": self.max_text_len,
                       "text_arch": self.text_arch, "text_time": self.text_time,
                       "encoder_depth": self.encoder_depth, "encoder_heads": self.encoder_heads,
                       "pretrained_encoder": self.pretrained_encoder}
        return cfg

    @classmethod
    def from_arch_config(cls, cfg: dict) -> "TextSiT":
        cfg = dict(cfg)
        text = cfg.pop("text")
        return cls(**cfg, **text)

    def encode_text(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(tokens (B, L, D), mask (B, L), pooled conditioning (B, D))``; pooled is 0 for ``""``."""
        tokens, mask = self.text_encoder(y)
        has_text = mask.any(dim=1, keepdim=True).to(tokens.dtype)
        pooled = self.pooled_mlp(masked_mean(tokens, mask)) * has_text
        return tokens, mask, pooled

    def forward_features(self, x: Tensor, t: Tensor, y: Tensor, coords: Tensor, group: Tensor | None = None,
                         attn_mask: Tensor | None = None, features_at: Sequence[int] = (),
                         stop_after: int | None = None) -> tuple[Tensor | None, dict[int, Tensor]]:
        """As :meth:`SiT.forward_features`, with ``y`` the caption tensor; features are data tokens only."""
        B, N, C = x.shape
        last = self._last_block(C, features_at, stop_after)
        txt, txt_mask, pooled = self.encode_text(y)
        h = self.x_embedder(x) + self.pos_embed(coords, x.dtype, x.device)
        cond = self.condition(t, pooled, N, group)  # rows: t_emb + null_row + pooled (PooledTextEmbedder)
        txt_cond = self.t_embedder(text_level(t, group, self.text_time)) + self.y_embedder(pooled)  # (B, D)
        feats: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[:last], start=1):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h, txt = checkpoint(block, h, cond, attn_mask, txt, txt_cond, txt_mask, use_reentrant=False)
            else:
                h, txt = block(h, cond, attn_mask, txt, txt_cond, txt_mask)
            if i in features_at:
                feats[i] = h
        if stop_after is not None:
            return None, feats
        out = self.final_layer(h, cond)[..., : self.in_channels]
        if self.prediction == "x":
            t_tok = t.gather(1, group) if group is not None else t
            out = (x - out) / expand_time(t_tok, x).clamp_min(self.t_min)
        return out, feats
