"""Vanilla flow matching (paper Eq. 2), optionally with DTS inputs and no representation loss."""

from __future__ import annotations

from torch import Tensor

from ..path import TimeDistribution, interpolate, velocity_target
from ..schedule import sample_dual_timesteps
from .base import LossOutput, Objective, drop_labels, unwrap


class FlowMatchingObjective(Objective):
    """L_gen = || f(x_t, t) - (eps - x0) ||^2 with one t per sample.

    With ``use_dts=True`` the inputs follow the dual-timestep schedule (Eqs. 4-5) -- the paper's
    "DTS without L_rep" ablation (Fig. 2b), which the Self-Flow objective also offers.
    """

    def __init__(self, time_dist: TimeDistribution, label_dropout: float = 0.1, use_dts: bool = False,
                 mask_ratio: float = 0.25, mask_mode: str = "bernoulli"):
        super().__init__(time_dist, label_dropout)
        self.use_dts = use_dts
        self.mask_ratio = mask_ratio
        self.mask_mode = mask_mode

    def forward(self, model, x0: Tensor, y: Tensor, coords: Tensor, teacher=None, raw=None) -> LossOutput:
        B, N, _ = x0.shape
        eps = self.rng.randn_like(x0)
        y = drop_labels(y, self.label_dropout, unwrap(model).null_class, self.rng)
        if self.use_dts:
            dts = sample_dual_timesteps(B, N, self.time_dist, self.mask_ratio, self.mask_mode, device=x0.device, rng=self.rng)
            x_t = interpolate(x0, eps, dts.tau)
            pred = model(x_t, dts.levels, y, coords, group=dts.group)
        else:
            t = self.time_dist.sample((B,), device=x0.device, rng=self.rng)
            x_t = interpolate(x0, eps, t)
            pred = model(x_t, t, y, coords)
        loss = self.generation_loss(pred, velocity_target(x0, eps))
        return LossOutput(loss, {"loss_gen": loss.detach()})
