"""Dual-timestep scheduling, DTS (paper Section 3.3, Eqs. 4-5).

Per sample: draw t and s i.i.d. from p(t) (not sorted: either may be the cleaner one, which keeps
each token's marginal equal to p(t)); draw a token mask M (Bernoulli with ratio R_M, or an exact
count as in the SRA ablation code); token i gets tau_i = s if i in M else t (Eq. 4); the input is
x_tau = diag(1 - tau) x0 + diag(tau) eps with one shared noise draw (Eq. 5). The EMA teacher sees
every token at tau_min = min_i tau_i, the cleanest level any token actually has, with the *same* x0
and eps (Section 3.4). This is min(t, s) unless no token was masked (then every token is at t and
tau_min = t, not the unused s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .path import TimeDistribution

MASK_MODES = ("bernoulli", "exact")
TEACHER_TIME_RULES = ("min", "same")


@dataclass
class DualTimesteps:
    """One draw of the dual-timestep schedule for a batch.

    Attributes:
        levels: ``(B, 2)`` the two noise levels ``[t, s]`` of each sample.
        group: ``(B, N)`` long, 0 for tokens at ``t`` and 1 for masked tokens at ``s``.
        tau: ``(B, N)`` per-token timesteps, ``levels.gather(1, group)`` (Eq. 4).
        tau_min: ``(B,)`` ``min_i tau_i`` over the sample's tokens, the teacher's level (paper:
            tau_min = min(tau)); equals ``min(t, s)`` whenever the mask is neither empty nor full.
    """

    levels: Tensor
    group: Tensor
    tau: Tensor
    tau_min: Tensor

    @property
    def mask(self) -> Tensor:
        """``(B, N)`` bool, the token set M of Eq. 4."""
        return self.group.bool()


def sample_token_mask(
    batch: int, num_tokens: int, ratio: float, mode: str = "bernoulli",
    generator: torch.Generator | None = None, device=None, rng=None,
) -> Tensor:
    """The mask M of Eq. 4, ``(B, N)`` bool.

    ``bernoulli``: u_i < R_M independently per token, so |M| ~ Binomial(N, R_M) (the paper).
    ``exact``: exactly round(R_M N) tokens per sample, chosen uniformly (the SRA ablation code).
    """
    if not 0.0 <= ratio <= 0.5:
        raise ValueError(f"mask_ratio={ratio}: must be in [0, 0.5] (paper Eq. 4 requires R_M <= 0.5)")
    if mode not in MASK_MODES:
        raise ValueError(f"mask_mode={mode!r}: must be one of {MASK_MODES}")
    u = (rng.rand((batch, num_tokens), device=device) if rng is not None
         else torch.rand(batch, num_tokens, generator=generator, device=device))
    if mode == "bernoulli":
        return u < ratio
    count = int(round(ratio * num_tokens))
    return u.argsort(dim=1).argsort(dim=1) < count  # the `count` smallest draws: a uniform subset


def sample_dual_timesteps(
    batch: int, num_tokens: int, p_t: TimeDistribution, ratio: float, mode: str = "bernoulli",
    generator: torch.Generator | None = None, device=None, rng=None,
) -> DualTimesteps:
    """Draw (t, s), the mask and the per-token tau for a batch (Eq. 4)."""
    levels = p_t.sample((batch, 2), generator=generator, device=device, rng=rng)  # (B, 2): [t, s], unsorted
    group = sample_token_mask(batch, num_tokens, ratio, mode, generator, device, rng).long()  # (B, N)
    tau = levels.gather(1, group)  # (B, N)
    # Over the tokens, not the two drawn levels: a sample with an empty mask has no token at s.
    return DualTimesteps(levels=levels, group=group, tau=tau, tau_min=tau.min(dim=1).values)


def teacher_time(dts: DualTimesteps, rule: str = "min") -> Tensor:
    """The teacher's timesteps: ``min`` = scalar tau_min per sample (paper); ``same`` = the student's tau."""
    if rule == "min":
        return dts.tau_min
    if rule == "same":
        return dts.tau
    raise ValueError(f"teacher_time={rule!r}: must be one of {TEACHER_TIME_RULES}")


def group_attention_mask(group: Tensor) -> Tensor:
    """``(B, 1, N, N)`` bool: token i may attend to j only inside its own noise group.

    This is the "attention separation" ablation of the SRA follow-up paper: it removes cross-group
    information flow so that DTS acts as pure noise-level augmentation.
    """
    return (group.unsqueeze(2) == group.unsqueeze(1)).unsqueeze(1)
