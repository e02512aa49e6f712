"""Memorisation check: is a generated sample a (lightly altered) copy of a training item?

A sample is compared with the training items in two spaces, each with its own threshold:

* **input space** (pixels, frames, waveform samples), against every training item *and its
  small shifts and flips* (:func:`variants`), so a copy moved by a pixel or mirrored is still
  found; the score is nearest over second-nearest training item (a ratio test: noise added to a
  copy raises both distances' floor, the ratio stays small);
* the domain classifier's **feature space** (penultimate layer), where a copy with a little
  noise or blur stays next to its original.

Each threshold is the ``FLAG_QUANTILE`` quantile of the nearest-training distances of *held-out*
real items (the even ones): a new real item comes that close to a training item by chance that
rarely. A sample closer than the threshold in either space is flagged. The false-positive rate
is measured on the other (odd) held-out items and reported beside it, and so is the ratio of
median nearest-neighbour distances (samples vs held-out items; well below 1: the samples hug the
training set) and the closest sample/training pairs, for a person to look at.

Calibrated on planted copies (tests/app/test_memorisation.py): exact copies, Gaussian noise of
std 0.05-0.1, shifts of 1-2 px, horizontal flips and (video) a clip started one frame later are
flagged, held-out items are not.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

FLAG_QUANTILE = 0.005  # per space; two spaces -> at most ~1% of new real items flagged
SHIFTS = (-2, -1, 0, 1, 2)  # pixels (images, frames) a copy may be moved by
AUDIO_SHIFTS = (-160, -80, 0, 80, 160)  # waveform samples (10 ms at 16 kHz)
TOP_PAIRS = 8


def variants(x: Tensor) -> Iterator[tuple[str, Tensor]]:
    """``(name, transformed x)`` for every small shift / flip of a batch (and, for video, re-timing).

    Images ``(B, C, H, W)`` and clips ``(B, T, C, H, W)``: circular shifts of up to 2 px in each
    direction, with and without a horizontal flip (50 variants); clips also start one frame later
    or earlier (the frame axis rolled). Audio ``(B, N)``: shifts of up to 10 ms.
    """
    if x.dim() == 2:
        for s in AUDIO_SHIFTS:
            yield f"shift {s}", torch.roll(x, s, dims=1)
        return
    if x.dim() not in (4, 5):
        raise ValueError(f"memorisation check: expected (B, N), (B, C, H, W) or (B, T, C, H, W), got {tuple(x.shape)}")
    for flip in (False, True):
        base = torch.flip(x, dims=(-1,)) if flip else x
        for dy in SHIFTS:
            for dx in SHIFTS:
                yield f"shift ({dy},{dx}){' flipped' if flip else ''}", torch.roll(base, (dy, dx), dims=(-2, -1))
    if x.dim() == 5:
        for dt in (-1, 1):
            yield f"frames rolled {dt}", torch.roll(x, dt, dims=1)


def _smooth(x: Tensor) -> Tensor:
    """2x2 average pooling of images / frames of 16 px and more: halves pixel noise, keeps the layout."""
    if x.dim() < 4 or x.shape[-1] < 16:
        return x
    lead = x.shape[:-3]
    return torch.nn.functional.avg_pool2d(x.reshape(-1, *x.shape[-3:]), 2).reshape(*lead, x.shape[-3],
                                                                                   x.shape[-2] // 2, x.shape[-1] // 2)


def nearest_input_distance(queries: Tensor, train: Tensor, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """``(score (Q,), index (Q,))``: each query's nearest training item over all :func:`variants`.

    The score is the distance to the nearest training item divided by the distance to the
    second-nearest *other* training item (each item at its own best shift / flip): a copy has
    one training item far closer than all others (score near 0, even with noise added), a new
    item of a set whose items resemble each other does not (score near 1). Distances are
    per-element RMS (Euclidean over sqrt(#elements)).
    """
    q = _smooth(queries).flatten(1).double()
    per_item = torch.full((len(q), len(train)), float("inf"), dtype=torch.float64)
    for _, v in variants(train):
        v = _smooth(v).flatten(1).double()
        for i in range(0, len(v), chunk):
            per_item[:, i:i + chunk] = torch.minimum(per_item[:, i:i + chunk], torch.cdist(q, v[i:i + chunk]))
    two = per_item.topk(min(2, len(train)), dim=1, largest=False)
    d1, j = two.values[:, 0], two.indices[:, 0]
    d2 = two.values[:, -1]
    return d1 / d2.clamp_min(1e-12), j


def nearest_feature_distance(queries: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    d, j = torch.cdist(queries.double(), train.double()).min(1)
    return d, j


def memorisation_check(sample_x: Tensor, sample_f: Tensor, train_x: Tensor, train_f: Tensor, heldout_x: Tensor,
                       heldout_f: Tensor, quantile: float = FLAG_QUANTILE) -> dict:
    """Flag samples that copy a training item; calibrate and measure on held-out items.

    ``*_x``: classifier inputs (images, clips or waves), ``*_f``: the classifier's features of the
    same items. Returns ``frac_flagged`` (either space), per-space fractions and thresholds, the
    false-positive rate on the odd held-out items, median-distance ratios and ``top_pairs``.
    """
    out: dict = {"quantile": quantile, "n_train_searched": int(len(train_x))}
    flagged = torch.zeros(len(sample_x), dtype=torch.bool)
    false_pos = torch.zeros(len(heldout_x[1::2]), dtype=torch.bool)
    nearest = {}
    for space, fn, s, t, h in (("input", nearest_input_distance, sample_x, train_x, heldout_x),
                               ("feature", nearest_feature_distance, sample_f, train_f, heldout_f)):
        d_s, j_s = fn(s, t)
        d_h, _ = fn(h, t)
        tau = float(torch.quantile(d_h[0::2], quantile))
        flag_s, flag_h = d_s < tau, d_h[1::2] < tau
        flagged |= flag_s
        false_pos |= flag_h
        nearest[space] = (d_s, j_s)
        out[space] = {"threshold": tau, "frac_flagged": float(flag_s.double().mean()),
                      "heldout_false_positive": float(flag_h.double().mean()),
                      "median_nn_sample": float(d_s.median()), "median_nn_heldout": float(d_h.median()),
                      "nn_ratio": float(d_s.median() / d_h.median().clamp_min(1e-12))}
    out["frac_flagged"] = float(flagged.double().mean())
    out["heldout_false_positive"] = float(false_pos.double().mean())
    out["nn_ratio"] = out["feature"]["nn_ratio"]
    d, j = nearest["input"]
    order = torch.argsort(d)[:TOP_PAIRS]
    out["top_pairs"] = [{"sample": int(i), "train_item": int(j[i]), "input_ratio": float(d[i]),
                         "feature_distance": float(nearest["feature"][0][i])} for i in order]
    return out
