"""Helpers shared by the evaluator tests (a uniquely named module: tests/conftest.py exists too)."""

import pytest
import torch
import torch.nn.functional as F

from evals import weights


def require(name: str):
    if not weights.available(name):
        pytest.skip(f"weights '{name}' absent; run `python -m evals.weights fetch` "
                    f"(or set {weights.spec(name).env_var})")


def smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: bicubic upsampling of random 8x8 colour fields."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect padding."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def is_increasing(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))
