"""Evaluator benchmark: Frechet distance (ours vs the scipy sqrtm route), Inception and aiSFX speed.

    python benchmarks/evaluators.py [--dim 2048] [--n 4096] [--repeat 1] [--images 32] [--audio-seconds 30]
                                    [--json out.json]      (--images 0 / --audio-seconds 0 skip a part)

1. One D-dimensional Frechet distance between two full-rank covariances (N > D samples each):
   ours (two symmetric eigendecompositions, evals/frechet.py) against the route ADM / pytorch-fid /
   StyleGAN-V use (``scipy.linalg.sqrtm(S1 @ S2)``, real part), timed in the same process on the
   same matrices; reports both times, the ratio and the relative difference of the distances.
   Also the low-rank route our code takes when one side has N <= D samples (a CPU run).
2. TF-2015 Inception images/s (ADM preprocessing, 256x256 uint8 input resized to 299).
3. aiSFX CNN9 audio-seconds/s (44.1 kHz, log-mel + network).

Networks whose weights are absent are skipped with the fix printed (python -m evals.weights fetch).
Threads: torch and BLAS use what the machine gives (set OMP_NUM_THREADS to pin).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import best_time, environment  # noqa: E402

from evals import MissingWeightsError  # noqa: E402
from evals.frechet import Stats, compute_stats, frechet_distance  # noqa: E402


def fd_sqrtm(a: Stats, b: Stats) -> float:
    """The TTUR/ADM formula with scipy's sqrtm (no ``disp``: removed in SciPy 1.18)."""
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    d = a.mu - b.mu
    return float(d @ d + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def bench_frechet(dim: int, n: int, n_small: int, repeat: int = 1) -> dict:
    rng = np.random.default_rng(0)
    # correlated, non-isotropic features, like network activations
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    x = rng.standard_normal((n, dim)) @ mix + 0.1
    y = (rng.standard_normal((n, dim)) * 1.1) @ mix
    a, b = Stats(*_ms(x)), Stats(*_ms(y))
    # interleaved best-of-`repeat`, so that load from other processes hits both routes alike
    ours, t_ours = best_time(lambda: frechet_distance(a, b), repeat)
    ref, t_ref = best_time(lambda: fd_sqrtm(a, b), repeat)
    small = compute_stats(y[:n_small])
    low, t_low = best_time(lambda: frechet_distance(a, small), repeat)
    low_ref, t_low_ref = best_time(lambda: fd_sqrtm(a, Stats(small.mu, small.sigma, small.n)), repeat)
    return {"dim": dim, "n": n, "fd_ours": ours, "fd_sqrtm": ref, "t_ours_s": t_ours, "t_sqrtm_s": t_ref,
            "speedup": t_ref / t_ours, "rel_diff": abs(ours - ref) / abs(ref),
            "low_rank": {"n_small": n_small, "fd_ours": low, "fd_sqrtm": low_ref, "t_ours_s": t_low,
                         "t_sqrtm_s": t_low_ref, "speedup": t_low_ref / t_low,
                         "rel_diff": abs(low - low_ref) / abs(low_ref)}}


def _ms(x):
    return x.mean(0), np.cov(x, rowvar=False)


def bench_inception(n_images: int, batch: int) -> dict:
    from evals.inception import load_inception

    model, sha = load_inception()
    imgs = torch.randint(0, 256, (n_images, 3, 256, 256), dtype=torch.uint8)
    model(imgs[:2])  # warm-up
    t = time.perf_counter()
    for i in range(0, n_images, batch):
        model(imgs[i:i + batch])
    dt = time.perf_counter() - t
    return {"images": n_images, "batch": batch, "seconds": dt, "images_per_s": n_images / dt, "sha256": sha[:16]}


def bench_aisfx(seconds: float) -> dict:
    from evals.audio_nets import AISFX_SR, aisfx_embed, load_aisfx

    net, sha = load_aisfx()
    x = (np.random.default_rng(0).standard_normal(int(seconds * AISFX_SR)) * 0.1).astype(np.float32)
    aisfx_embed(net, x[: AISFX_SR * 3])  # warm-up (librosa import, filterbank)
    t = time.perf_counter()
    e = aisfx_embed(net, x)
    dt = time.perf_counter() - t
    return {"audio_seconds": seconds, "seconds": dt, "audio_seconds_per_s": seconds / dt, "blocks": len(e),
            "sha256": sha[:16]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--n", type=int, default=4096, help="samples per side for the full-rank case (> dim)")
    ap.add_argument("--n-small", type=int, default=256, help="samples on one side for the low-rank case")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--audio-seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1, help="best of R timings for the Frechet routes")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {"machine": {**environment(), "numpy": np.__version__, "scipy": scipy.__version__}}
    out["frechet"] = f = bench_frechet(a.dim, a.n, a.n_small, a.repeat)
    print(f"Frechet {f['dim']}-d (N={f['n']} per side): ours {f['t_ours_s']:.2f} s, sqrtm {f['t_sqrtm_s']:.2f} s, "
          f"speed-up {f['speedup']:.1f}x, rel. diff {f['rel_diff']:.1e} (FD {f['fd_ours']:.6f})")
    lr = f["low_rank"]
    print(f"  low-rank side (N={lr['n_small']}): ours {lr['t_ours_s']:.3f} s, sqrtm {lr['t_sqrtm_s']:.2f} s, "
          f"speed-up {lr['speedup']:.0f}x, rel. diff {lr['rel_diff']:.1e}")
    for key, fn, args in [("inception", bench_inception, (a.images, a.batch)), ("aisfx", bench_aisfx, (a.audio_seconds,))]:
        if not args[0]:
            continue
        try:
            out[key] = r = fn(*args)
        except MissingWeightsError as e:
            out[key] = {"skipped": str(e).splitlines()[0]}
            print(f"{key}: skipped ({out[key]['skipped']}); run python -m evals.weights fetch")
            continue
        if key == "inception":
            print(f"Inception (TF-2015, 256->299, batch {r['batch']}): {r['images_per_s']:.1f} images/s")
        else:
            print(f"aiSFX CNN9: {r['audio_seconds_per_s']:.1f} audio-seconds/s ({r['blocks']} blocks)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
