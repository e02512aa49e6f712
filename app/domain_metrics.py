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

from app.memorisation import memorisation_check
from evals.fid import precision_recall
from evals.frechet import compute_stats, frechet_distance
from modalities.classifier import DomainSpec, get_classifier, predict, stack_split
from modalities.splits import CLASSIFIER_SEED_OFFSET, HELDOUT_SEED_OFFSET

log = logging.getLogger(__name__)

K_NN = 3  # precision/recall neighbourhood size (Kynkaanniemi et al. 2019 use k = 3)
OOD_K = 5  # out-of-distribution score: distance to the 5th nearest training item in the classifier's features
OOD_QUANTILE = 0.98  # threshold: this quantile of held-out real items' scores (2% of real items rejected)


def knn_distance(feats: Tensor, bank: Tensor, k: int = OOD_K) -> Tensor:
    """``(N,)`` distance of each row of ``feats`` to its ``k``-th nearest row of ``bank`` (float64)."""
    k = min(k, len(bank))
    return torch.cdist(feats.double(), bank.double()).topk(k, largest=False).values[:, -1]


def ood_threshold(calibration: Tensor, bank: Tensor, quantile: float = OOD_QUANTILE) -> float:
    """The in-distribution threshold: the ``quantile`` of held-out real items' :func:`knn_distance` scores.

    A classifier's softmax is confident on inputs unlike any real item (uniform noise, a grey
    frame), so its answer alone would credit garbage. Its *features* tell: real items lie close
    to other real items, noise far away. The score of an input is its distance to the
    ``OOD_K``-th nearest training item (``bank``); an input is accepted when that is at most this
    threshold, set on ``calibration`` (held-out real items), so about 2% of new real items are
    rejected; the check is reported on other held-out items than those that set it.
    """
    return float(torch.quantile(knn_distance(calibration, bank), quantile))


def _scores(feats: Tensor, ref_feats: Tensor) -> dict:
    out = {"fd": frechet_distance(compute_stats(ref_feats.numpy()), compute_stats(feats.numpy()))}
    out["precision"], out["recall"] = precision_recall(ref_feats.numpy(), feats.numpy(), k=K_NN)
    return out


def _accuracy(logits: Tensor, labels: Tensor, accepted: Tensor) -> dict:
    """Class accuracy that counts an item as correct only when it is also in distribution."""
    correct = logits.argmax(1) == labels
    return {"class_acc": float((correct & accepted).double().mean()), "class_acc_any": float(correct.double().mean())}


def domain_metrics(fake: Tensor, dataset, labels: Tensor | None = None, *, spec: DomainSpec | str, cache_dir=None,
                   max_train: int = 5000) -> list[dict]:
    """Records ``class_acc_<name>``, ``fd_<name>``, ``precision_<name>``, ``recall_<name>``,
    ``memorisation_<name>`` for generated ``fake`` conditioned on ``labels`` (None: no accuracy).

    max_train: training items (evenly spaced) searched for nearest neighbours and used for the
    real-data scores.
    """
    if isinstance(spec, str):  # a dotted path from the modality's YAML
        spec = get_object(spec)
    names = [f"{m}_{spec.name}" for m in ("class_acc", "ood_frac", "fd", "precision", "recall", "memorisation")]
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
    ref_feats, ref_logits = predict(clf.net, ref_x)
    train_x, _ = stack_split(dataset, max_train)
    train_feats, _ = predict(clf.net, train_x)
    fake_scores = _scores(feats, ref_feats)
    # a perfect generator: real training items, as many as samples, balanced like the samples
    n = min(len(x), len(train_x))
    pick = torch.linspace(0, len(train_x) - 1, n).round().long()
    real_scores = _scores(train_feats[pick], ref_feats)
    # in-distribution check: threshold set on the even held-out items, its real value read on the odd ones
    tau = ood_threshold(ref_feats[0::2], train_feats)
    accepted, real_accepted = knn_distance(feats, train_feats) <= tau, knn_distance(ref_feats[1::2], train_feats) <= tau
    fake_scores["ood_frac"] = float((~accepted).double().mean())
    real_scores["ood_frac"] = float((~real_accepted).double().mean())
    if labels is not None:
        fake_scores.update(_accuracy(logits, labels, accepted))
        real_scores.update(_accuracy(ref_logits[1::2], ref_y[1::2], real_accepted))
    memo = memorisation_check(x, feats, train_x.float(), train_feats, ref_x.float(), ref_feats)
    base = {"available": True, "extractor": f"{spec.name} (domain classifier, penultimate features)",
            "classifier_key": clf.provenance["cache_key"][:16],
            "classifier_heldout_accuracy": clf.provenance["heldout_accuracy"],
            "classifier_loaded_from_cache": clf.loaded_from_cache, "n_fake": int(len(x)), "n_real": int(len(ref_x)),
            "reference": f"held-out split {dataset.reference_root()}",
            "splits": {"training_seed": dataset.seed, "heldout_seed": dataset.seed + HELDOUT_SEED_OFFSET,
                       "classifier_seed": dataset.seed + CLASSIFIER_SEED_OFFSET}}
    out = []
    ood = {"ood_k": OOD_K, "ood_quantile": OOD_QUANTILE, "ood_threshold": tau,
           "ood_calibration": f"{len(ref_feats[0::2])} held-out items (even); real_value on the other "
                              f"{len(ref_feats[1::2])}"}
    for metric in ("class_acc", "ood_frac", "fd", "precision", "recall"):
        if metric not in fake_scores:
            out.append({"metric": f"{metric}_{spec.name}", "value": None, "available": False,
                        "reason": "no conditioning labels given"})
            continue
        extra = {"k": K_NN} if metric in ("precision", "recall") else {}
        if metric == "class_acc":  # correct AND in distribution; real_value: held-out items, same rule
            extra = {**ood, "class_acc_any_class": fake_scores["class_acc_any"],
                     "real_value_source": "held-out items (odd), not the training items",
                     "note": "fraction of samples recognised as their class and lying where real items do"}
        elif metric == "ood_frac":
            extra = {**ood, "note": "fraction of samples farther from the training items (classifier features) "
                                    "than 98% of held-out real items are"}
        out.append({"metric": f"{metric}_{spec.name}", "value": float(fake_scores[metric]), **base,
                    "real_value": float(real_scores[metric]), **extra})
    out.append({"metric": f"memorisation_{spec.name}", "value": memo["frac_flagged"], **base, "details": memo,
                "real_value": memo["heldout_false_positive"], "real_value_source": "held-out items (odd)",
                "n_train_searched": int(len(train_x)),
                "note": "fraction of samples flagged as copies of a training item (input space with 1-2 px shifts "
                        "and flips, or classifier features); real_value: held-out items flagged (false positives)"})
    return out
