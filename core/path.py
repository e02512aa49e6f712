"""The linear interpolant and timestep distributions (paper Section 3.1, Eqs. 1-2, App. A.2 Eqs. 8-10).

Convention used everywhere in our code (docs/method.md, "Time convention"):

    x_t = (1 - t) * x0 + t * eps,     t = 1 is pure noise, t = 0 is data,
    v   = d x_t / d t = eps - x0,     the regression target of every objective.

Sampling integrates from t = 1 to t = 0. SiT (t = 1 is data) and the released Self-Flow model
(flips t and negates its output) are converted at the checkpoint boundary, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


def interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """Eq. 1 / Eq. 5: ``x_t = (1 - t) x0 + t eps``.

    ``t`` has shape ``(B,)`` (one level per sample) or ``(B, N)`` (one level per token, DTS);
    ``x0`` and ``eps`` have shape ``(B, N, C)``.
    """
    t = expand_time(t, x0)
    return (1.0 - t) * x0 + t * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """Eq. 2: the velocity ``eps - x0``; it does not depend on the (per-token) timestep."""
    return eps - x0


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast ``t`` of shape ``(B,)`` or ``(B, N)`` against tokens ``x`` of shape ``(B, N, C)``."""
    if t.dim() == 1:
        return t.view(-1, 1, 1).to(x.dtype)
    if t.dim() == 2:
        return t.unsqueeze(-1).to(x.dtype)
    raise ValueError(f"timesteps must have shape (B,) or (B, N), got {tuple(t.shape)}")


def time_shift(t: Tensor, alpha: float) -> Tensor:
    """Eq. 8: ``s(alpha, t) = alpha t / (1 + (alpha - 1) t)``; alpha > 1 moves mass toward noise."""
    if alpha <= 0:
        raise ValueError(f"time shift alpha must be > 0, got {alpha}")
    if alpha == 1.0:
        return t
    return alpha * t / (1.0 + (alpha - 1.0) * t)


@dataclass(frozen=True)
class TimeDistribution:
    """p(t) for training: uniform (Eq. 9 after the shift) or logit-normal (Eq. 10), then s(alpha, .).

    Attributes:
        dist: ``"uniform"`` or ``"logit_normal"``.
        mu, sigma: logit-normal location and scale (ignored for uniform).
        shift: the train shift alpha of Eq. 8 (1.0 = no shift).
    """

    dist: str = "uniform"
    mu: float = 0.0
    sigma: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        if self.dist not in TIME_DISTRIBUTIONS:
            raise ValueError(f"time.dist={self.dist!r}: must be one of {TIME_DISTRIBUTIONS}")
        if self.sigma <= 0:
            raise ValueError(f"time.sigma={self.sigma}: must be > 0")
        if self.shift <= 0:
            raise ValueError(f"time.shift={self.shift}: must be > 0")

    def sample(self, shape, generator: torch.Generator | None = None, device=None, rng=None) -> Tensor:
        """Draw timesteps in (0, 1) of the given shape.

        ``rng`` (a :class:`core.distributed.BatchRandom`) draws the local shard of a global batch;
        otherwise ``generator`` (or the global RNG) is used.
        """
        if rng is not None:
            u = rng.rand(shape, device=device) if self.dist == "uniform" else rng.randn(shape, device=device)
        elif self.dist == "uniform":
            u = torch.rand(shape, generator=generator, device=device)
        else:
            u = torch.randn(shape, generator=generator, device=device)
        t = u if self.dist == "uniform" else torch.sigmoid(self.mu + self.sigma * u)
        return time_shift(t, self.shift)

    def pdf(self, t: Tensor) -> Tensor:
        """Density of the (shifted) distribution at ``t`` in (0, 1); used by tests and plots."""
        a = self.shift
        # Inverse of the shift, u = t / (a - (a - 1) t), and its Jacobian a / (a + (1 - a) t)^2 (Eq. 9).
        u = t / (a - (a - 1.0) * t)
        jac = a / (a + (1.0 - a) * t) ** 2
        if self.dist == "uniform":
            base = torch.ones_like(u)
        else:
            logit = torch.log(u) - torch.log1p(-u)
            base = torch.exp(-((logit - self.mu) ** 2) / (2 * self.sigma**2)) / (
                self.sigma * math.sqrt(2 * math.pi) * u * (1 - u)
            )
        return base * jac


def sampling_grid(num_steps: int, shift: float = 1.0, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """A decreasing grid ``t_0 = t_max > ... > t_num_steps = t_min`` with the sampling shift of Eq. 8.

    A uniform grid is warped by s(alpha, .) ("sampleshift"), as the paper does for its 50-step ODE
    evaluations; alpha > 1 spends more steps at high noise.
    """
    if num_steps < 1:
        raise ValueError(f"sample.num_steps={num_steps}: must be >= 1")
    u = torch.linspace(t_max, t_min, num_steps + 1, dtype=torch.float64)
    return time_shift(u, shift)
