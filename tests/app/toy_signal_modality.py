"""A modality that exists only in the tests: 1-D sine waves, one frequency per class.

It proves that a new modality is one Python file (dataset, tokenizer, writer, a network-free
metric) plus one YAML: nothing in evals/, app/ or run.py knows about it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from core.tokens import SampleWriter, Tokenizer


class WaveDataset(Dataset):
    """``(wave (length,) in [-1, 1], class)``; class k is a sine of k + 1 cycles with a random phase."""

    def __init__(self, num_classes: int = 3, per_class: int = 8, length: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(length) / length
        self.labels = [k for k in range(num_classes) for _ in range(per_class)]
        phases = torch.rand(len(self.labels), generator=g) * 2 * math.pi
        self.waves = [0.9 * torch.sin(2 * math.pi * (k + 1) * t + p) for k, p in zip(self.labels, phases)]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i):
        return self.waves[i], self.labels[i]


class WaveTokenizer(Tokenizer):
    """``(B, length)`` -> ``(B, length / patch, patch)`` tokens along the width axis."""

    def __init__(self, length: int = 32, patch: int = 4):
        super().__init__()
        if length % patch:
            raise ValueError(f"modality.tokenizer.patch={patch} must divide length={length}")
        self.length, self.patch, self.token_dim = length, patch, patch

    def encode(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], self.length // self.patch, self.patch)

    def decode(self, tokens: Tensor) -> Tensor:
        return tokens.reshape(tokens.shape[0], self.length)

    def coords(self) -> Tensor:
        n = torch.arange(self.length // self.patch)
        return torch.stack([torch.zeros_like(n), torch.zeros_like(n), n], dim=-1)


class WaveWriter(SampleWriter):
    def write(self, samples: Tensor, labels, out_dir: Path, stem: str) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}_waves.npy"
        np.save(path, samples.numpy())
        return {"waves": path}


def dominant_cycles(waves: Tensor) -> Tensor:
    """The strongest non-DC frequency bin of each wave ``(B, length)`` -> ``(B,)``."""
    spectrum = torch.fft.rfft(waves.float(), dim=-1).abs()
    return spectrum[:, 1:].argmax(dim=-1) + 1


def cycle_report(fake: Tensor, dataset) -> dict:
    """Network-free metric: mean |dominant frequency| gap to the nearest training class, and the spread."""
    cycles = dominant_cycles(fake).float()
    return {"cycle_gap": float((cycles - cycles.round().clamp(1, dataset.num_classes)).abs().mean()),
            "mean_cycles": float(cycles.mean())}
