"""REPA: align an early student block to a frozen external encoder's patch features (Yu et al., 2024).

L = L_gen + coeff * mean(-cos(projector(h_l), z)), with a 3-layer SiLU MLP projector and
coeff = 0.5, the student layer 8 of 28 for SiT-XL (REPA's encoder_depth); the encoder sees the
*clean* input. The encoder is injected by config ``_target_`` and never trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..path import TimeDistribution, interpolate, velocity_target
from .base import LossOutput, Objective, at_least_fp32, drop_labels, resolve_layer, unwrap


def build_projector(hidden_size: int, projector_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden_size, projector_dim), nn.SiLU(),
        nn.Linear(projector_dim, projector_dim), nn.SiLU(),
        nn.Linear(projector_dim, out_dim),
    )


class REPAObjective(Objective):
    """REPA with an injected frozen encoder ``encoder(tokens, raw) -> (B, N, feature_dim)``."""

    frozen_prefixes = ("encoder.",)

    def __init__(self, time_dist: TimeDistribution, hidden_size: int, depth: int, encoder: nn.Module,
                 label_dropout: float = 0.1, coeff: float = 0.5, layer: int | None = None,
                 projector_dim: int = 2048):
        super().__init__(time_dist, label_dropout)
        if not hasattr(encoder, "feature_dim"):
            raise TypeError(f"REPA encoder {type(encoder).__name__} must expose `feature_dim`")
        self.layer = resolve_layer(layer, 0.3, depth, "method.objective.layer")
        self.coeff = coeff
        self.encoder = encoder.eval().requires_grad_(False)
        self.projector = build_projector(hidden_size, projector_dim, encoder.feature_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode (dropout, norms)
        return self

    def forward(self, model, x0: Tensor, y: Tensor, coords: Tensor, teacher=None, raw=None) -> LossOutput:
        B = x0.shape[0]
        with torch.no_grad():
            z = self.encoder(x0, raw)  # (B, N, E) from the clean input
        if z.shape[:2] != x0.shape[:2]:
            raise ValueError(
                f"REPA encoder {type(self.encoder).__name__} returned {tuple(z.shape[:2])} tokens for a "
                f"{tuple(x0.shape[:2])} token batch; the encoder must produce one feature per model token"
            )
        eps = self.rng.randn_like(x0)
        y = drop_labels(y, self.label_dropout, unwrap(model).null_class, self.rng)
        t = self.time_dist.sample((B,), device=x0.device, rng=self.rng)
        pred, feats = model(interpolate(x0, eps, t), t, y, coords, features_at=(self.layer,), return_features=True)
        loss_gen = self.generation_loss(pred, velocity_target(x0, eps))
        proj = self.projector(feats[self.layer])
        loss_proj = -F.cosine_similarity(at_least_fp32(proj), at_least_fp32(z), dim=-1).mean()
        return LossOutput(loss_gen + self.coeff * loss_proj, {"loss_gen": loss_gen.detach(), "loss_proj": loss_proj.detach()})
