"""Class accuracy must not credit garbage: noise, grey, blurred and shuffled inputs are rejected.

For every domain classifier the in-distribution check (app/domain_metrics.py) must accept real
held-out items (>= 0.95, on items other than those that set its threshold) and reject inputs that
are not of the domain, so that ``class_acc_<net>`` (correct AND in distribution) stays at or
below chance for them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from app.domain_metrics import domain_metrics
from modalities.audio.synth import SynthInstrumentsDataset
from modalities.audio.timbrenet import TIMBRENET
from modalities.classifier import get_classifier
from modalities.image import ShapesDataset
from modalities.image_domain import SHAPESNET
from modalities.video.digitnet import DIGITNET
from modalities.video.sprites import MovingDigitsDataset


def _blur2d(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), torch.ones(c, 1, k, k) / k ** 2, groups=c)


def _shuffle2d(x: torch.Tensor, p: int, g: torch.Generator) -> torch.Tensor:
    """Cut each image into p x p patches and put them back in one random order."""
    b, c, h, w = x.shape
    t = x.unfold(2, p, p).unfold(3, p, p).reshape(b, c, -1, p, p)[:, :, torch.randperm((h // p) * (w // p), generator=g)]
    return t.reshape(b, c, h // p, w // p, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def image_corruptions(x, g):
    return {"uniform noise": torch.rand(x.shape, generator=g) * 2 - 1, "constant grey": torch.zeros_like(x),
            "blur 5x5": _blur2d(x), "shuffled patches": _shuffle2d(x, 4, g)}


def video_corruptions(x, g):  # (B, T, C, H, W): the image corruptions on every frame
    b, t = x.shape[:2]
    flat = x.flatten(0, 1)
    return {k: v.reshape(x.shape) for k, v in image_corruptions(flat, g).items()}


def audio_corruptions(x, g):  # (B, N) waves
    chunks = x.reshape(len(x), 16, -1)[:, torch.randperm(16, generator=g)].reshape(x.shape)
    smooth = F.avg_pool1d(x[:, None], 31, 1, 15, count_include_pad=False)[:, 0]  # a 31-tap moving average: low-pass
    return {"white noise": 0.3 * torch.randn(x.shape, generator=g), "silence": torch.zeros_like(x),
            "low-pass 31": smooth, "shuffled chunks": chunks}


# Corruptions that keep part of their class: a low-passed (muffled) instrument keeps its pitch range
# and envelope, which timbrenet reads (bare argmax 1.00; measured 72% rejected, strict accuracy
# 0.275, chance 0.167); a 5x5 blur of a 16 px garment keeps its silhouette (measured 46% rejected,
# strict 0.18, chance 0.10). Required for these: strict accuracy far below that of real items.
PARTLY_RECOGNISABLE = {("timbrenet", "low-pass 31"), ("fashionnet", "blur 5x5")}
PARTLY_MAX_FRACTION_OF_REAL = 0.35


CASES = {
    "shapesnet": (SHAPESNET, lambda: ShapesDataset(image_size=16, radius=(0.3, 0.42)), image_corruptions),
    "digitnet": (DIGITNET, lambda: MovingDigitsDataset(num_frames=8, size=16, sprite_size=10), video_corruptions),
    "timbrenet": (TIMBRENET, lambda: SynthInstrumentsDataset(), audio_corruptions),
}


def _check(spec, ds, corrupt):
    clf, (hx, hy) = get_classifier(spec, ds)
    real = {r["metric"]: r for r in domain_metrics(hx, ds, hy, spec=spec, max_train=400)}
    acc = real[f"class_acc_{spec.name}"]
    assert 1 - real[f"ood_frac_{spec.name}"]["real_value"] >= 0.95  # held-out items the threshold never saw
    assert acc["real_value"] >= 0.85 * clf.provenance["heldout_accuracy"]
    chance = 1 / ds.num_classes
    g = torch.Generator().manual_seed(0)
    n = min(len(hx), 120)
    for what, x in corrupt(hx[:n], g).items():
        recs = {r["metric"]: r for r in domain_metrics(x, ds, hy[:n], spec=spec, max_train=400)}
        ood, strict = recs[f"ood_frac_{spec.name}"]["value"], recs[f"class_acc_{spec.name}"]["value"]
        print(f"{spec.name} {what}: ood {ood:.3f}, class_acc {strict:.3f} (any class "
              f"{recs[f'class_acc_{spec.name}']['class_acc_any_class']:.3f})")
        if (spec.name, what) in PARTLY_RECOGNISABLE:
            assert strict <= PARTLY_MAX_FRACTION_OF_REAL * acc["real_value"], (what, ood, strict)
        else:
            assert strict <= chance + 0.05 or ood >= 0.9, (what, ood, strict)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_garbage_is_rejected_and_real_items_accepted(name):
    spec, make, corrupt = CASES[name]
    _check(spec, make(), corrupt)


@pytest.mark.slow
def test_fashionnet_rejects_garbage():
    from modalities.data import MissingDataError, require

    try:
        require("fashion_mnist")
    except MissingDataError as e:
        pytest.skip(str(e))
    from modalities.fashion_mnist import FashionMNISTDataset
    from modalities.image_domain import FASHIONNET

    _check(FASHIONNET, FashionMNISTDataset(), image_corruptions)
