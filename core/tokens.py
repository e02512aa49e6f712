"""Shared types at the boundary between `core/` and the modalities.

Every modality turns its data into a batch of token sequences ``(B, N, C)`` plus integer
coordinates ``(N, 3)`` over the axes ``(time, height, width)`` (docs/method.md, "Tokens and coordinates"). The
transformer only ever sees tokens and coordinates, so it never knows which modality it models.

A modality provides three pluggable parts, each instantiated by hydra from its ``_target_``:

* a dataset yielding ``(x, label)`` pairs of raw data (image ``(3, H, W)`` in [-1, 1], ...);
* a :class:`Tokenizer` mapping a raw batch to tokens and back;
* a :class:`SampleWriter` turning decoded samples into files for the run directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import Tensor, nn

# Axis order of token coordinates; index into the last dimension of `coords`.
AXES = ("time", "height", "width")


class Tokenizer(nn.Module, ABC):
    """Maps raw modality data to tokens ``(B, N, C)`` and back.

    Subclasses set ``token_dim`` (C) and implement :meth:`encode`, :meth:`decode` and
    :meth:`coords`. Tokenizers with learned or pretrained parts (a VAE) keep them frozen;
    the flow model never back-propagates into a tokenizer.
    """

    token_dim: int

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Raw batch -> tokens ``(B, N, C)``."""

    @abstractmethod
    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens ``(B, N, C)`` -> raw batch (the inverse of :meth:`encode`)."""

    @abstractmethod
    def coords(self) -> Tensor:
        """Integer coordinates ``(N, 3)`` over ``(time, height, width)`` of the N tokens."""

    def fit(self, dataset) -> None:
        """Optional one-off pass over the training set (e.g. normalisation statistics).

        Called by the training job before the first step; results must live in registered
        buffers so that they are saved with checkpoints. The default does nothing.
        """

    @property
    def num_tokens(self) -> int:
        return int(self.coords().shape[0])


class SampleWriter(ABC):
    """Writes decoded samples (the output of :meth:`Tokenizer.decode`) into a run directory.

    ``media`` (``image``, ``video``, ``audio`` or ``none``) tells live loggers how to show samples.
    """

    media = "none"

    @abstractmethod
    def write(self, samples: Tensor, labels: Tensor | None, out_dir: Path, stem: str) -> dict[str, Path]:
        """Write ``samples`` under ``out_dir`` with file names starting with ``stem``.

        Returns a mapping from a short kind (``"grid"``, ``"video"``, ``"audio"``, ...) to the
        written path, so that reports can embed them.
        """


def check_coords(coords: Tensor, num_tokens: int | None = None) -> Tensor:
    """Validate a coordinate table: integer dtype, shape ``(N, 3)``, non-negative."""
    if coords.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"token coords must be an integer tensor, got {coords.dtype}")
    if coords.dim() != 2 or coords.shape[1] != 3:
        raise ValueError(f"token coords must have shape (N, 3) over {AXES}, got {tuple(coords.shape)}")
    if num_tokens is not None and coords.shape[0] != num_tokens:
        raise ValueError(f"token coords describe {coords.shape[0]} tokens but the batch has {num_tokens}")
    if (coords < 0).any():
        raise ValueError("token coords must be non-negative")
    return coords.long()
