"""Domain metrics: conditional accuracy, Frechet distance, precision/recall and a memorisation
check, all in the feature space of a small classifier trained on the data set's own domain.

Called from the run's evaluation step through ``modality.metrics`` (configs/modality/*.yaml):
``_target_: app.domain_metrics.domain_metrics`` with ``spec:`` the dotted path of the data set's
:class:`~modalities.classifier.DomainSpec` (e.g. ``modalities.image_domain.SHAPESNET``), as
``callable(fake, dataset, labels=...) -> list of records``. It lives in ``app`` because it joins
a modality's classifier with evals' Frechet and precision/recall code; every record names its metric
``<what>_<classifier>`` (e.g. ``class_acc_shapesnet``, ``fd_shapesnet``). The reference of
every number is the data set's held-out split (modalities/splits.py); the training items only
enter the memorisation check. Each record also carries ``real_value``: the same metric for
real items of the training split (as many as there are samples) against the same reference,
i.e. what a perfect generator scores at this sample size.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import get_object
from torch import Tensor

from evals.fid import precision_recall
from evals.frechet import compute_stats, frechet_distance
from modalities.classifier import DomainSpec, get_classifier, predict, stack_split
from modalities.splits import CLASSIFIER_SEED_OFFSET, HELDOUT_SEED_OFFSET

log = logging.getLogger(__name__)

K_NN = 3  # precision/recall neighbourhood size (Kynkaanniemi et al. 2019 use k = 3)


def memorisation(sample_feats: Tensor, train_feats: Tensor, heldout_feats: Tensor) -> dict:
    """Nearest-training-item distances of samples next to those of held-out items.

    A held-out item shows how close a *new* real item comes to the training set by chance;
    a sample much closer than that (in particular closer than every held-out item) is likely
    a copy. Returns ``frac_closer``: fraction of samples whose nearest training item is nearer
    than the nearest training item of ANY held-out item; ``frac_closer_q05``, the same against
    the 5th percentile of the held-out distances (less sensitive to one near-duplicate pair of
    real items); the median nearest-neighbour distances of both sets and their ratio (well
    below 1: samples hug the training items).
    """
    d_s = torch.cdist(sample_feats.double(), train_feats.double()).min(1).values
    d_h = torch.cdist(heldout_feats.double(), train_feats.double()).min(1).values
    med_s, med_h = float(d_s.median()), float(d_h.median())
    q05 = float(torch.quantile(d_h, 0.05))
    return {"frac_closer": float((d_s < d_h.min()).double().mean()),
            "frac_closer_q05": float((d_s < q05).double().mean()), "median_nn_sample": med_s,
            "median_nn_heldout": med_h, "nn_ratio": med_s / max(med_h, 1e-12),
            "min_nn_heldout": float(d_h.min())}


def _scores(feats: Tensor, logits: Tensor, labels: Tensor | None, ref_feats: Tensor) -> dict:
    out = {"fd": frechet_distance(compute_stats(ref_feats.numpy()), compute_stats(feats.numpy()))}
    out["precision"], out["recall"] = precision_recall(ref_feats.numpy(), feats.numpy(), k=K_NN)
    if labels is not None:
        out["class_acc"] = float((logits.argmax(1) == labels).double().mean())
    return out


def domain_metrics(fake: Tensor, dataset, labels: Tensor | None = None, *, spec: DomainSpec | str, cache_dir=None,
                   max_train: int = 5000) -> list[dict]:
    """Records ``class_acc_<name>``, ``fd_<name>``, ``precision_<name>``, ``recall_<name>``,
    ``memorisation_<name>`` for generated ``fake`` conditioned on ``labels`` (None: no accuracy).

    max_train: training items (evenly spaced) searched for nearest neighbours and used for the
    real-data scores.
    """
    if isinstance(spec, str):  # a dotted path from the modality's YAML
        spec = get_object(spec)
    names = [f"{m}_{spec.name}" for m in ("class_acc", "fd", "precision", "recall", "memorisation")]
    if not isinstance(dataset, spec.dataset_type):
        reason = (f"{spec.name} is the classifier of the embedded {spec.dataset_type.__name__}; the data set is "
                  f"{type(dataset).__name__}")
        return [{"metric": m, "value": None, "available": False, "reason": reason} for m in names]
    clf, (ref_x, ref_y) = get_classifier(spec, dataset, cache_dir)
    x = spec.prepare(fake.detach().cpu().float())
    if labels is not None:
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape[0] != x.shape[0] or int(labels.max()) >= dataset.num_classes or int(labels.min()) < 0:
            log.warning("%s: labels do not match the samples or classes; conditional accuracy skipped", spec.name)
            labels = None
    feats, logits = predict(clf.net, x)
    ref_feats, _ = predict(clf.net, ref_x)
    train_x, train_y = stack_split(dataset, max_train)
    train_feats, train_logits = predict(clf.net, train_x)
    fake_scores = _scores(feats, logits, labels, ref_feats)
    # a perfect generator: real training items, as many as samples, balanced like the samples
    n = min(len(x), len(train_x))
    pick = torch.linspace(0, len(train_x) - 1, n).round().long()
    real_scores = _scores(train_feats[pick], train_logits[pick], train_y[pick] if labels is not None else None,
                          ref_feats)
    memo = memorisation(feats, train_feats, ref_feats)
    base = {"available": True, "extractor": f"{spec.name} (domain classifier, penultimate features)",
            "classifier_key": clf.provenance["cache_key"][:16],
            "classifier_heldout_accuracy": clf.provenance["heldout_accuracy"],
            "classifier_loaded_from_cache": clf.loaded_from_cache, "n_fake": int(len(x)), "n_real": int(len(ref_x)),
            "reference": f"held-out split {dataset.reference_root()}",
            "splits": {"training_seed": dataset.seed, "heldout_seed": dataset.seed + HELDOUT_SEED_OFFSET,
                       "classifier_seed": dataset.seed + CLASSIFIER_SEED_OFFSET}}
    out = []
    for metric in ("class_acc", "fd", "precision", "recall"):
        if metric not in fake_scores:
            out.append({"metric": f"{metric}_{spec.name}", "value": None, "available": False,
                        "reason": "no conditioning labels given"})
            continue
        extra = {"k": K_NN} if metric in ("precision", "recall") else {}
        out.append({"metric": f"{metric}_{spec.name}", "value": float(fake_scores[metric]), **base,
                    "real_value": float(real_scores[metric]), **extra})
    out.append({"metric": f"memorisation_{spec.name}", "value": memo["frac_closer"], **base, "details": memo,
                "n_train_searched": int(len(train_x)),
                "note": "fraction of samples closer to a training item than any held-out item is to one"})
    return out
