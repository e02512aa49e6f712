"""Samplers: ODE Euler / Heun and SiT's Euler-Maruyama SDE, with CFG on a guidance interval.

All integrate in the paper convention from t = 1 (noise) to t = 0 (data), x_{t - dt} = x_t - dt v.

The SDE is SiT's sampler rewritten in our time (SiT's time is s = 1 - t, its velocity u = -v):
score = ((1 - t)(-v) - x) / t, diffusion w(t) = norm * t (SiT's "sigma" form), and each step
x <- x + (u + w score) ds + sqrt(2 w ds) xi, on a grid from t = 1 to t = last_step
(num_steps - 1 stochastic steps), then one deterministic "Mean" step of size last_step to
t = 0 -- num_steps network evaluations in all, 250 in SiT / REPA / the Self-Flow release.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .path import sampling_grid, time_shift

SAMPLERS = ("euler", "heun", "sde")


@dataclass(frozen=True)
class SamplerConfig:
    """How to integrate. ``guidance_low/high`` bound the paper-convention t where CFG is on."""

    method: str = "euler"
    num_steps: int = 50
    shift: float = 1.0
    cfg_scale: float = 1.0
    guidance_low: float = 0.0
    guidance_high: float = 1.0
    last_step: float = 0.04
    diffusion_norm: float = 1.0

    def __post_init__(self):
        if self.method not in SAMPLERS:
            raise ValueError(f"sample.method={self.method!r}: must be one of {SAMPLERS}")
        if self.num_steps < 1:
            raise ValueError(f"sample.num_steps={self.num_steps}: must be >= 1")
        if self.cfg_scale < 0:
            raise ValueError(f"sample.cfg_scale={self.cfg_scale}: must be >= 0 (1 = no guidance)")
        if not 0.0 <= self.guidance_low <= self.guidance_high <= 1.0:
            raise ValueError(f"sample.guidance_low/high={self.guidance_low}/{self.guidance_high}: need 0 <= low <= high <= 1")
        if self.method == "sde" and not 0.0 < self.last_step < 1.0:
            raise ValueError(f"sample.last_step={self.last_step}: must be in (0, 1) for the SDE sampler")


class GuidedVelocity:
    """``v(x, t)`` for a batch with fixed labels, with CFG inside the guidance interval; counts NFE.

    Inside [guidance_low, guidance_high] the conditional and null-label inputs go through the network
    as one doubled batch, v = v_u + w (v_c - v_u); outside it only the conditional half is evaluated.
    ``nfe`` counts network calls (a doubled CFG batch counts once).
    """

    def __init__(self, model, y: Tensor, coords: Tensor, cfg: SamplerConfig):
        self.model, self.y, self.coords, self.cfg = model, y, coords, cfg
        self.nfe = 0

    def guided(self, t: float) -> bool:
        return self.cfg.cfg_scale != 1.0 and self.cfg.guidance_low <= t <= self.cfg.guidance_high

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.nfe += 1
        B = x.shape[0]
        if not self.guided(t):
            return self.model(x, torch.full((B,), t, device=x.device, dtype=x.dtype), self.y, self.coords)
        null = torch.full_like(self.y, self.model.null_class)
        v = self.model(torch.cat([x, x]), torch.full((2 * B,), t, device=x.device, dtype=x.dtype),
                       torch.cat([self.y, null]), self.coords)
        v_c, v_u = v.chunk(2)
        return v_u + self.cfg.cfg_scale * (v_c - v_u)


@torch.no_grad()
def sample(model, noise: Tensor, y: Tensor, coords: Tensor, cfg: SamplerConfig,
           generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """Integrate from ``noise`` (t = 1) to data (t = 0). Returns ``(x0, nfe)``.

    ``generator`` drives the SDE's noise so that a fixed seed gives identical samples.
    """
    velocity = GuidedVelocity(model, y, coords, cfg)
    x = noise
    if cfg.method == "sde":
        x = _sde(velocity, x, cfg, generator)
    else:
        grid = sampling_grid(cfg.num_steps, cfg.shift).tolist()
        for t_cur, t_next in zip(grid[:-1], grid[1:]):
            dt = t_next - t_cur  # negative
            v = velocity(x, t_cur)
            x_euler = x + dt * v
            if cfg.method == "heun":
                x = x + 0.5 * dt * (v + velocity(x_euler, t_next))
            else:
                x = x_euler
    return x, velocity.nfe


def _sde_drift(velocity: GuidedVelocity, x: Tensor, t: float, norm: float) -> tuple[Tensor, float]:
    v = velocity(x, t)
    score = ((1.0 - t) * (-v) - x) / t
    w = norm * t
    return -v + w * score, w  # drift along SiT time s = 1 - t


def sde_grid(num_steps: int, last_step: float, shift: float = 1.0) -> Tensor:
    """The SDE's ``num_steps`` time points from 1 down to ``last_step`` (float64).

    A uniform grid u from 1 to 0 is warped by the sampling shift s(alpha, u) of Eq. 8 and mapped
    affinely onto [last_step, 1], so the final deterministic step is ``last_step`` for every shift
    (warping the endpoint itself would turn 0.04 into 0.111 at shift 3). With shift 1 this is
    exactly SiT's uniform grid from 1 to last_step.
    """
    u = torch.linspace(1.0, 0.0, num_steps, dtype=torch.float64)
    return last_step + (1.0 - last_step) * time_shift(u, shift)


def _sde(velocity: GuidedVelocity, x: Tensor, cfg: SamplerConfig, generator) -> Tensor:
    grid = sde_grid(cfg.num_steps, cfg.last_step, cfg.shift).tolist()
    for t_cur, t_next in zip(grid[:-1], grid[1:]):
        ds = t_cur - t_next
        drift, w = _sde_drift(velocity, x, t_cur, cfg.diffusion_norm)
        xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + drift * ds + (2.0 * w * ds) ** 0.5 * xi
    drift, _ = _sde_drift(velocity, x, grid[-1], cfg.diffusion_norm)  # deterministic last step to t = 0
    return x + drift * grid[-1]
