"""Exponential moving average of the model weights: the Self-Flow teacher and the evaluated model.

theta_ema <- d theta_ema + (1 - d) theta, with d = 0.9999 in the paper (App. A.3, no warm-up).
The optional warm-up uses d_n = min(d, (1 + n) / (10 + n)) at update n, so that short CPU runs
get a usable EMA (and teacher) instead of one stuck near the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds an eval-mode, grad-free copy of ``model`` and updates it in place."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay={decay}: must be in [0, 1)")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, skip: torch.Tensor | None = None) -> None:
        """One EMA step. ``skip``: optional 0-dim 0/1 tensor; 1 leaves the weights as they are (a
        step skipped for a non-finite loss, decided on device without a host sync)."""
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        # lerp: e + (1 - d) (p - e) = d e + (1 - d) p
        weight = 1.0 - d if skip is None else (1.0 - skip.to(ema_params[0].dtype)) * (1.0 - d)
        torch._foreach_lerp_(ema_params, params, weight)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
