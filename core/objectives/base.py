"""Shared pieces of the objectives: the loss record, label dropout, layer resolution."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..distributed import SINGLE_PROCESS, BatchRandom
from ..path import TimeDistribution


@dataclass
class LossOutput:
    """The scalar loss to back-propagate plus detached scalar tensors for logging (no host sync)."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


def at_least_fp32(x: Tensor) -> Tensor:
    """Losses are reduced in fp32 (or fp64) even when the network ran under bf16 autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def drop_labels(y: Tensor, prob: float, null_class: int, rng: BatchRandom = SINGLE_PROCESS) -> Tensor:
    """Replace each label by the null class with probability ``prob`` (CFG training).

    ``y`` may carry more axes per item (a caption's ids ``(B, L)`` or features ``(B, L, E)``): one
    draw per item then replaces the whole item by ``null_class`` (0: the empty prompt). For class
    labels ``(B,)`` the draws are the same as ever.
    """
    if prob <= 0:
        return y
    drop = rng.rand(y.shape[:1], device=y.device) < prob
    drop = drop.view(-1, *([1] * (y.dim() - 1)))
    return torch.where(drop, torch.full_like(y, null_class), y)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP / compile wrapper (for attributes such as ``null_class``)."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


def resolve_layer(layer: int | None, ratio: float, depth: int, key: str) -> int:
    """An explicit 1-indexed block number, or ``round(ratio * depth)`` (paper App. A.3: 0.3 D / 0.7 D)."""
    value = int(round(ratio * depth)) if layer is None else int(layer)
    if not 1 <= value <= depth:
        raise ValueError(f"{key}={value}: must be a block index in [1, {depth}] for a depth-{depth} model")
    return value


class Objective(nn.Module):
    """Base class. Subclasses own their trainable heads (projectors) as submodules.

    ``forward(model, x0, y, coords, teacher=None, raw=None) -> LossOutput`` draws its own
    timesteps and noise from the global RNG (restored exactly on resume) through ``self.rng``,
    which the trainer replaces by a rank-sharded :class:`BatchRandom` under torch.distributed.
    """

    #: whether the training loop must pass the EMA model as ``teacher``
    needs_teacher: bool = False
    #: submodule prefixes that are frozen and not saved in checkpoints (external encoders)
    frozen_prefixes: tuple[str, ...] = ()

    def __init__(self, time_dist: TimeDistribution, label_dropout: float = 0.1):
        super().__init__()
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"method.objective.label_dropout={label_dropout}: must be in [0, 1)")
        self.time_dist = time_dist
        self.label_dropout = label_dropout
        self.rng = SINGLE_PROCESS

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.frozen_prefixes)}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise KeyError(f"objective state mismatch: missing {missing}, unexpected {unexpected}")
        self.load_state_dict(state, strict=False)

    @staticmethod
    def generation_loss(pred: Tensor, target: Tensor) -> Tensor:
        """Eq. 2: mean squared error over every token and channel."""
        return (at_least_fp32(pred) - at_least_fp32(target)).pow(2).mean()
