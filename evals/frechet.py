"""Frechet distance between Gaussians fitted to feature sets, and the statistics behind it.

Every metric in `evals/` (FID, sFID, FVD, FAD, fd_*) ends here: a feature extractor turns
samples into vectors, :class:`StreamingStats` accumulates their mean and covariance, and
:func:`frechet_distance` compares two such summaries.

Numerics (see docs/evaluation_protocols.md, "Frechet distance"):

* Sums are accumulated in float64 around a fixed shift (the first batch's mean), so that
  ``sum(x x^T) - n mu mu^T`` does not cancel catastrophically when features have a large mean.
* The covariance is unbiased (divide by N-1) by default, as ADM / TTUR / pytorch-fid do with
  ``np.cov``; ``ddof=0`` (divide by N) is the StyleGAN-V FVD convention.
* ``Tr sqrt(S1 S2)`` is ``sum sqrt(eig(R^T S2 R))`` for any R with ``S1 = R R^T``: ``S1 S2`` is
  similar to that PSD matrix, so they share eigenvalues (TF-GAN's trace_sqrt_product uses the
  symmetric square root for R). We take R = Cholesky factor (cheap), the symmetric square root
  when S1 is singular, or the low-rank factor of a side with N <= D vectors; then one symmetric
  eigenvalue solve. Never ``scipy.linalg.sqrtm``: it lost its ``disp`` argument in SciPy 1.18
  and had accuracy regressions in 1.10, 1.11.2-1.12 and 1.16.0. Eigenvalues at rounding level
  are set to 0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.io_utils import atomic_path


@dataclass
class Stats:
    """Gaussian summary of one feature set.

    mu: (D,) float64 mean. sigma: (D, D) float64 covariance. n: number of vectors (0 when the
    statistics came from a file that does not record it, e.g. ADM's reference batches).
    ddof: 1 for the unbiased N-1 covariance, 0 for the N convention.
    factor: optional (N, D) with ``sigma = factor.T @ factor``, kept when N <= D. It makes the
    distance cost O(N D^2) instead of O(D^3) and is exact (see :func:`trace_sqrt_product`).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0
    ddof: int = 1
    meta: dict = field(default_factory=dict)
    factor: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def content_hash(self) -> str:
        """SHA-256 of mu and sigma bytes (float64, C order): identifies these statistics."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.mu, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.sigma, dtype=np.float64).tobytes())
        return h.hexdigest()


class StreamingStats:
    """Accumulates mean and covariance of feature batches without keeping the features.

    ``update(x)`` with x of shape (B, D); ``stats()`` returns a :class:`Stats`. The result
    equals ``np.mean(all, 0)`` / ``np.cov(all, rowvar=False, ddof=ddof)`` on the concatenation
    up to float64 rounding, whatever the batch split.
    """

    def __init__(self, dim: int | None = None, ddof: int = 1, keep_rows: bool = True):
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (divide by N) or 1 (divide by N-1), got {ddof}")
        self.ddof = ddof
        self.dim = dim
        self.n = 0
        self._shift = None  # (D,) float64: first batch mean; sums are taken around it
        self._sum = None  # (D,)
        self._sum_outer = None  # (D, D)
        # While N <= D the rows themselves are the cheaper summary (low-rank factor of sigma).
        self._rows = [] if keep_rows else None

    def update(self, x) -> "StreamingStats":
        x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must have shape (B, D), got {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(f"feature dimension changed: expected {self.dim}, got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf; check the extractor input range")
        if x.shape[0] == 0:
            return self
        if self._shift is None:
            self._shift = x.mean(0)
            self._sum = np.zeros(self.dim)
            self._sum_outer = np.zeros((self.dim, self.dim))
        xc = x - self._shift
        self._sum += xc.sum(0)
        self._sum_outer += xc.T @ xc
        self.n += x.shape[0]
        if self._rows is not None:
            self._rows = self._rows + [x] if self.n <= self.dim else None
        return self

    def stats(self, **meta) -> Stats:
        if self.n - self.ddof <= 0:
            raise ValueError(f"need more than {self.ddof} feature vectors for a covariance, got {self.n}")
        m = self._sum / self.n
        cov = (self._sum_outer - self.n * np.outer(m, m)) / (self.n - self.ddof)
        cov = 0.5 * (cov + cov.T)  # exact symmetry; the outer-product sums are symmetric up to rounding
        mu = m + self._shift
        factor = None
        if self._rows:
            factor = (np.concatenate(self._rows) - mu) / np.sqrt(self.n - self.ddof)
        return Stats(mu=mu, sigma=cov, n=self.n, ddof=self.ddof, meta=dict(meta), factor=factor)


def compute_stats(features, ddof: int = 1, **meta) -> Stats:
    """One-shot statistics of features (N, D)."""
    return StreamingStats(ddof=ddof).update(features).stats(**meta)


def _clip_eigs(w: np.ndarray) -> np.ndarray:
    """Eigenvalues below eigh's rounding level (D * eps * max|w|) are zero in exact arithmetic.

    Without this, the ~D spurious eigenvalues of a rank-deficient covariance (N <= D, every
    small run) each add sqrt(1e-16 * max) to the trace and bias FD(x, x) away from 0.
    """
    tol = w.shape[0] * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 1e-300)
    return np.where(w > tol, w, 0.0)


# The linear algebra runs in torch float64 on the CPU: its LAPACK (MKL on x86) factorises a
# 2048 x 2048 matrix several times faster than the OpenBLAS numpy / scipy wheels ship with
# (measured in benchmarks/evaluators.py), and the results are the same to rounding.
def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float64))


def _sum_sqrt_eigvalsh(m: torch.Tensor) -> float:
    w = torch.linalg.eigvalsh(0.5 * (m + m.T)).numpy()
    return float(np.sqrt(_clip_eigs(w)).sum())


def _sym_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix via eigh (rounding-level eigenvalues set to 0)."""
    w, v = torch.linalg.eigh(a)
    return (v * torch.from_numpy(np.sqrt(_clip_eigs(w.numpy())))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, factor2: np.ndarray | None = None) -> float:
    """Tr (sigma1 sigma2)^(1/2) for symmetric PSD sigma1, sigma2 (D, D).

    With ``factor2`` (N, D), sigma2 = F^T F and the nonzero eigenvalues of sigma1 F^T F are those
    of the N x N PSD matrix F sigma1 F^T: same trace, O(N D^2) work instead of D x D solves.
    """
    s1 = _t(sigma1)
    if factor2 is not None:
        f = _t(factor2)
        return _sum_sqrt_eigvalsh(f @ s1 @ f.T)
    s2 = _t(sigma2)
    # S1 = L L^T (Cholesky, D^3/3 flops): eig(S1 S2) = eig(L^T S2 L). Far cheaper than the
    # eigenvector decomposition behind a symmetric square root, and as accurate for PD S1.
    root, info = torch.linalg.cholesky_ex(s1)
    if int(info) == 0:
        return _sum_sqrt_eigvalsh(root.T @ s2 @ root)
    root = _sym_sqrt(s1)  # S1 singular (rank-deficient features): S1^1/2 S2 S1^1/2
    return _sum_sqrt_eigvalsh(root @ s2 @ root)


def frechet_distance(a: Stats, b: Stats, return_parts: bool = False):
    """FD = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^(1/2).

    Returns a float, or with ``return_parts`` a dict ``{fd, mean_term, trace_term}``.
    Comparing statistics with different covariance conventions or dimensions is refused
    because the number would silently mean something else.
    """
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim} (different extractors or layers?)")
    if a.ddof != b.ddof and a.n and b.n:
        raise ValueError(f"covariance conventions differ (ddof {a.ddof} vs {b.ddof}); recompute one side")
    diff = np.asarray(a.mu, np.float64) - np.asarray(b.mu, np.float64)
    mean_term = float(diff @ diff)
    s1, s2 = np.asarray(a.sigma, np.float64), np.asarray(b.sigma, np.float64)
    # Use the low-rank factor of the side with fewer vectors when there is one (exact, much faster).
    fa, fb = a.factor, b.factor
    if fb is not None and (fa is None or len(fb) <= len(fa)):
        tsp = trace_sqrt_product(s1, s2, fb)
    elif fa is not None:
        tsp = trace_sqrt_product(s2, s1, fa)
    else:
        tsp = trace_sqrt_product(s1, s2)
    trace_term = float(np.trace(s1) + np.trace(s2) - 2.0 * tsp)
    fd = mean_term + trace_term
    if return_parts:
        return {"fd": fd, "mean_term": mean_term, "trace_term": trace_term}
    return fd


# ---- statistics files -----------------------------------------------------------------------
# ADM's evaluator (openai/guided-diffusion, evaluations/evaluator.py) reads `mu`/`sigma` (pool3)
# and `mu_s`/`sigma_s` (spatial, sFID) from the reference npz; pytorch-fid's --save-stats writes
# `mu`/`sigma`. We use the same keys and add `n` and `ddof` (ignored by those tools).

def save_stats(path, stats: Stats, spatial: Stats | None = None, **extra) -> None:
    """Write ADM-keyed statistics atomically (temp file + rename); ``extra`` arrays are stored too."""
    path = Path(path)
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "n": np.int64(stats.n), "ddof": np.int64(stats.ddof)}
    if spatial is not None:
        arrays.update(mu_s=spatial.mu, sigma_s=spatial.sigma)
    arrays.update({k: v for k, v in extra.items() if v is not None})
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, **arrays)


def load_stats(path, spatial: bool = False) -> Stats:
    """Read `mu`/`sigma` (or `mu_s`/`sigma_s` with ``spatial``) from an ADM-style npz."""
    keys = ("mu_s", "sigma_s") if spatial else ("mu", "sigma")
    with np.load(path) as f:
        missing = [k for k in keys if k not in f.files]
        if missing:
            raise KeyError(f"{path}: no {missing} in the statistics file (keys present: {f.files}); "
                           "it is not an ADM/pytorch-fid statistics npz, or lacks the sFID part")
        n = int(f["n"]) if "n" in f.files else 0
        ddof = int(f["ddof"]) if "ddof" in f.files else 1  # ADM / pytorch-fid use np.cov: N-1
        return Stats(mu=f[keys[0]].astype(np.float64), sigma=f[keys[1]].astype(np.float64), n=n, ddof=ddof,
                     meta={"source": str(path)})


def is_stats_file(path) -> bool:
    """True when an npz holds precomputed statistics (`mu`, `sigma`) rather than samples."""
    try:
        with np.load(path) as f:
            return "mu" in f.files and "sigma" in f.files
    except (OSError, ValueError):
        return False
