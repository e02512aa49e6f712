"""Small domain classifiers: trained once, deterministically, cached by content hash.

Each embedded data set has one (shapes: :mod:`modalities.image_domain`, moving digits:
:mod:`modalities.video.digitnet`, instruments: :mod:`modalities.audio.timbrenet`). They give
cheap metrics that see what matters for that data (is the shape a triangle, is the digit a 7)
and are independent of the networks REPA aligns to (Inception, DINOv2, ...).

A classifier is trained on its own split (``classifier``, seed + 2000; neither the training nor
the held-out split) and its accuracy on the held-out split is recorded with it. The cache key
is the SHA-256 of the training data, the held-out data, the architecture and the recipe, so a
changed generator, network or recipe never reuses old weights.

Every net has ``features(x) -> (B, D)`` (the penultimate features the Frechet distance and
precision/recall use) and ``head(features) -> (B, classes)`` logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from core.io_utils import atomic_torch_save
from core.io_utils import cache_dir as io_cache_dir
from modalities.splits import split_seed

log = logging.getLogger(__name__)

CLASSIFIER_VERSION = 2  # bump when the training loop changes: part of the cache key (2: one thread)


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained (part of its cache key)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    schedule: str = "constant"  # constant | cosine (lr decays to 0 over the epochs: settles at saturation)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv, batch norm (fast convergence on tiny sets), ReLU, 2x2 max-pool: halves the size."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


def classifier_cache_dir(cache_dir=None) -> Path:
    return io_cache_dir("classifiers", root=cache_dir)


def tensor_hash(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _deterministic(seed: int):
    """Fixed RNG state, deterministic kernels and ONE intra-op thread for the duration; restores all three.

    Deterministic kernels alone are not enough: a CPU convolution's and a matrix product's
    reduction order depends on how the work is split over threads, so the same recipe trained
    with OMP_NUM_THREADS=1 and =2 ends in different weights (and, near an accuracy bar, in a
    different verdict). With one thread the weights are bit-identical for any thread setting.
    """
    was, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(was)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """``(features (N, D), logits (N, C))`` of ``net`` on ``x`` in eval mode, batched."""
    net.eval()
    feats, logits = [], []
    for i in range(0, len(x), batch_size):
        f = net.features(x[i:i + batch_size].float())
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats), torch.cat(logits)


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((predict(net, x)[1].argmax(1) == y).double().mean())


def train_classifier(net: nn.Module, x: Tensor, y: Tensor, recipe: Recipe, train_view=None) -> nn.Module:
    """Deterministic Adam training of ``net`` on ``(x, y)``; returns it in eval mode.

    train_view: optional ``(batch, generator) -> batch`` applied to every training batch (e.g.
    a random subset of a clip's frames, which keeps video training cheap).
    """
    g = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule not in ("constant", "cosine"):
        raise ValueError(f"Recipe.schedule={recipe.schedule!r}: must be constant or cosine")
    steps = recipe.epochs * -(-len(x) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda k: 0.5 * (1 + math.cos(math.pi * k / steps))) if recipe.schedule == "cosine" else (lambda k: 1.0))
    net.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            xb = x[idx].float()
            if train_view is not None:
                xb = train_view(xb, g)
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@dataclass
class DomainClassifier:
    """A trained classifier with its provenance (what it was trained on, how well it does)."""

    name: str
    net: nn.Module
    provenance: dict
    loaded_from_cache: bool


def train_or_load(name: str, make_net, recipe: Recipe, train: tuple[Tensor, Tensor],
                  heldout: tuple[Tensor, Tensor], cache_dir=None, train_view=None,
                  extra: dict | None = None) -> DomainClassifier:
    """Load ``<cache>/classifiers/<name>-<key>.pt`` or train it (and record held-out accuracy).

    make_net: ``() -> nn.Module``, called under the recipe's seed (the initial weights are
    part of the recipe). train/heldout: ``(x, y)`` tensors of the classifier and held-out
    splits. extra: facts for the provenance (split seeds, sizes).
    """
    with _deterministic(recipe.seed):
        net = make_net()
    arch = f"{type(net).__module__}.{type(net).__qualname__}\n{net!r}"
    key = hashlib.sha256(json.dumps({
        "version": CLASSIFIER_VERSION, "arch": arch, "recipe": asdict(recipe),
        "train": tensor_hash(*train), "heldout": tensor_hash(*heldout)}, sort_keys=True).encode()).hexdigest()
    path = classifier_cache_dir(cache_dir) / f"{name}-{key[:16]}.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["state_dict"])
        return DomainClassifier(name, net.eval(), blob["provenance"], loaded_from_cache=True)
    start = time.perf_counter()
    with _deterministic(recipe.seed):
        train_classifier(net, *train, recipe, train_view)
    seconds = time.perf_counter() - start
    provenance = {"classifier": name, "cache_key": key, "architecture": arch.splitlines()[0],
                  "parameters": sum(p.numel() for p in net.parameters()), "recipe": asdict(recipe),
                  "n_train": len(train[0]), "n_heldout": len(heldout[0]),
                  "train_accuracy": accuracy(net, *train), "heldout_accuracy": accuracy(net, *heldout),
                  "train_seconds": round(seconds, 2), "torch_threads": 1, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"state_dict": net.state_dict(), "provenance": provenance}, path)  # no half-written weights
    log.info("trained %s in %.1f s: held-out accuracy %.3f -> %s", name, seconds, provenance["heldout_accuracy"],
             path)
    return DomainClassifier(name, net, provenance, loaded_from_cache=False)


def stack_split(dataset, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """All items (or ``limit`` evenly spaced ones) of a labelled data set as ``(x, y)`` tensors."""
    n = len(dataset)
    idx = range(n) if limit is None or limit >= n else torch.linspace(0, n - 1, limit).round().long().tolist()
    xs, ys = zip(*(dataset[i] for i in idx))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


@dataclass
class DomainSpec:
    """One data set's classifier: the net, how it is trained, and how samples are fed to it.

    dataset_type: the embedded data set class the classifier belongs to (others get
    "unavailable" records). prepare: ``fake -> tensor`` in the net's input format.
    """

    name: str
    make_net: Callable
    recipe: Recipe
    classifier_per_class: int
    dataset_type: type
    prepare: Callable[[Tensor], Tensor] = lambda x: x
    train_view: Callable | None = None
    notes: dict = field(default_factory=dict)


_LOADED: dict[tuple, tuple[DomainClassifier, tuple[Tensor, Tensor]]] = {}


def get_classifier(spec: DomainSpec, dataset, cache_dir=None) -> tuple[DomainClassifier, tuple[Tensor, Tensor]]:
    """The trained (or cached) classifier of ``dataset`` and the held-out split ``(x, y)``.

    Kept in memory per process after the first call, so periodic evaluations do not decode
    and hash the classifier split again (a repeat reports ``loaded_from_cache``).
    """
    memo = (spec.name, spec.recipe, spec.classifier_per_class, str(dataset.root), dataset.seed,
            getattr(dataset, "heldout_per_class", None), str(cache_dir))
    if memo in _LOADED:
        clf, heldout = _LOADED[memo]
        return dataclasses.replace(clf, loaded_from_cache=True), heldout
    reference = dataset.reference_dataset()
    if reference is None:
        raise ValueError(f"{type(dataset).__name__} has no held-out split (heldout_per_class=0); the domain "
                         "metrics need one")
    heldout = stack_split(reference)
    train = stack_split(dataset.split("classifier", spec.classifier_per_class))
    extra = {"classifier_split_seed": split_seed(dataset.seed, "classifier"),
             "heldout_split_seed": split_seed(dataset.seed, "heldout"), "training_split_seed": dataset.seed,
             "heldout_root": str(reference.root), **spec.notes}
    clf = train_or_load(spec.name, lambda: spec.make_net(num_classes=dataset.num_classes), spec.recipe,
                        train, heldout, cache_dir, spec.train_view, extra)
    _LOADED[memo] = (clf, heldout)
    return clf, heldout
