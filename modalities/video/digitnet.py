"""DigitNet: the domain classifier of the moving-digit video sets (10 classes), and the
temporal-consistency metrics built on its per-frame predictions.

Two specs share the network: :data:`DIGITNET` (the procedural sklearn digits of
:class:`~modalities.video.MovingDigitsDataset`) and :data:`MNISTNET` (real MNIST digits of
:class:`~modalities.video.MovingMNISTDataset`, trained on the ``classifier`` digit-id split).

A frame CNN on a 16x16 window of each frame's intensity (max over RGB), centred on the
bright mass (the sprite's centre, as the motion metric tracks it): so it judges the digit's
shape, not its colour or position. Two conv blocks (32, 64 channels) and a linear layer give
64 features per frame; the clip's features are their mean over frames, and a linear head
classifies the digit. Trained on 4 random frames per clip (cheap on a CPU); scored on all.
The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from hydra.utils import get_object
from torch import Tensor, nn

from modalities.classifier import DomainSpec, Recipe, conv_block, get_classifier
from modalities.video.moving_mnist import MovingMNISTDataset
from modalities.video.sprites import MovingDigitsDataset, track_centres

log = logging.getLogger(__name__)

TRAIN_FRAMES = 4


WINDOW = 16


def centred_windows(frames: Tensor, window: int = WINDOW, threshold: float = 0.15) -> Tensor:
    """``(N, 3, H, W)`` frames in [-1, 1] -> ``(N, 1, window, window)`` intensity crops around
    the centre of the above-threshold mass (the frame centre when a frame is empty)."""
    intensity = ((frames + 1) / 2).clamp(0, 1).amax(dim=1)  # (N, H, W)
    centres, _ = track_centres(intensity[:, None, None].expand(-1, 1, 3, -1, -1) * 2 - 1, threshold)
    half = window // 2
    c = centres[:, 0].round().long()  # (N, 2) x, y
    padded = F.pad(intensity, (half, half, half, half))
    r = torch.arange(window)
    rows = (c[:, 1, None] + r)[:, :, None]  # padded coordinates: centre - half + half
    cols = (c[:, 0, None] + r)[:, None, :]
    return padded[torch.arange(len(frames))[:, None, None], rows, cols][:, None] * 2 - 1


class DigitNet(nn.Module):
    """``(B, T, 3, H, W)`` clips in [-1, 1] -> features ``(B, 64)`` (mean over frames)."""

    def __init__(self, num_classes: int = 10, width: int = 32, dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(conv_block(1, width), conv_block(width, 2 * width), nn.Flatten(),
                                  nn.Linear(2 * width * (WINDOW // 4) ** 2, dim), nn.ReLU())
        self.head = nn.Linear(dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        return self.body(centred_windows(x.clamp(-1, 1).flatten(0, 1))).view(b, t, -1).mean(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def frame_logits(self, x: Tensor) -> Tensor:
        """``(B, T, 3, H, W)`` -> per-frame logits ``(B, T, classes)``. The head is linear, so
        their mean over frames is exactly the clip's logits (``forward``)."""
        b, t = x.shape[:2]
        return self.head(self.body(centred_windows(x.clamp(-1, 1).flatten(0, 1)))).view(b, t, -1)


def random_frames(x: Tensor, g: torch.Generator) -> Tensor:
    """``TRAIN_FRAMES`` frames of each clip, the same random times for the whole batch."""
    t = torch.randperm(x.shape[1], generator=g)[:TRAIN_FRAMES].sort().values
    return x[:, t]


def noisy_random_frames(x: Tensor, g: torch.Generator, sigma: float = 0.1) -> Tensor:
    """:func:`random_frames` plus Gaussian pixel noise: generated frames carry faint noise that
    clean training frames never show, and the classifier should read the digit through it."""
    x = random_frames(x, g)
    return x + sigma * torch.randn(x.shape, generator=g)


DIGITNET = DomainSpec(name="digitnet", make_net=DigitNet, recipe=Recipe(epochs=12, batch_size=32, lr=3e-3),
                      classifier_per_class=64, dataset_type=MovingDigitsDataset, train_view=random_frames,
                      notes={"train_frames_per_clip": TRAIN_FRAMES})

MNISTNET = DomainSpec(name="mnistnet", make_net=DigitNet, recipe=Recipe(epochs=15, batch_size=32, lr=3e-3),
                      classifier_per_class=150, dataset_type=MovingMNISTDataset, train_view=noisy_random_frames,
                      notes={"train_frames_per_clip": TRAIN_FRAMES, "train_noise_sigma": 0.1})
"""Moving MNIST's classifier: the same net, trained on the 150 ``classifier`` digits per class."""


# --- temporal consistency -----------------------------------------------------------------

@torch.no_grad()
def frame_predictions(net: DigitNet, clips: Tensor, batch_size: int = 256) -> Tensor:
    """Per-frame class predictions ``(B, T)`` of ``clips (B, T, 3, H, W)`` (eval mode, batched)."""
    net.eval()
    return torch.cat([net.frame_logits(clips[i:i + batch_size].float()).argmax(-1)
                      for i in range(0, len(clips), batch_size)])


def frame_scores(pred: Tensor, labels: Tensor | None = None) -> dict:
    """Temporal-consistency scores of per-frame predictions ``pred (B, T)``.

    ``all_agree``: fraction of clips whose frames are all read as one class (a glyph that morphs
    into another digit fails); ``majority_agreement``: mean fraction of a clip's frames that
    agree with its majority class. With ``labels (B,)``: ``frame_acc`` (fraction of all frames
    read as the clip's class) and ``all_frames_correct`` (fraction of clips with every frame
    correct).
    """
    majority = pred.mode(dim=1).values  # (B,)
    agree = (pred == majority[:, None]).double()
    out = {"all_agree": float(agree.min(1).values.mean()), "majority_agreement": float(agree.mean())}
    if labels is not None:
        hit = (pred == labels[:, None]).double()
        out.update(frame_acc=float(hit.mean()), all_frames_correct=float(hit.min(1).values.mean()))
    return out


def temporal_metrics(fake: Tensor, dataset, labels: Tensor | None = None, *, spec: DomainSpec | str,
                     cache_dir=None) -> list[dict]:
    """Records ``frame_agreement_<net>`` and ``frame_acc_<net>`` for generated clips ``fake (B, T, 3, H, W)``.

    ``frame_agreement_<net>`` (value: fraction of clips whose per-frame predictions all agree;
    details: mean agreement with the clip's majority) fails a sprite that changes shape over
    time even when the clip-level prediction (``class_acc_<net>``, the mean over frames) is
    right. ``frame_acc_<net>`` is the accuracy of every frame against the conditioning label
    (details: fraction of clips with all frames right). ``real_value`` is the same number on the
    held-out split (real clips the classifier never saw, with their labels); it is the reference
    a perfect generator matches. Records follow app/domain_metrics.py.
    """
    if isinstance(spec, str):
        spec = get_object(spec)
    names = (f"frame_agreement_{spec.name}", f"frame_acc_{spec.name}")
    if not isinstance(dataset, spec.dataset_type):
        reason = (f"{spec.name} is the classifier of {spec.dataset_type.__name__}; the data set is "
                  f"{type(dataset).__name__}")
        return [{"metric": m, "value": None, "available": False, "reason": reason} for m in names]
    clf, (ref_x, ref_y) = get_classifier(spec, dataset, cache_dir)
    fake = fake.detach().cpu().float()
    if labels is not None:
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape[0] != fake.shape[0]:
            log.warning("%s: %d labels for %d samples; per-frame accuracy skipped", spec.name, len(labels), len(fake))
            labels = None
    f = frame_scores(frame_predictions(clf.net, fake), labels)
    r = frame_scores(frame_predictions(clf.net, ref_x), ref_y)
    base = {"available": True, "extractor": f"{spec.name} (domain classifier, per-frame predictions)",
            "classifier_key": clf.provenance["cache_key"][:16],
            "classifier_heldout_accuracy": clf.provenance["heldout_accuracy"], "n_fake": int(len(fake)),
            "n_real": int(len(ref_x)), "reference": f"held-out split {dataset.reference_root()}",
            "num_frames": int(fake.shape[1])}
    out = [{"metric": names[0], "value": f["all_agree"], "real_value": r["all_agree"], **base,
            "details": {"majority_agreement": f["majority_agreement"],
                        "majority_agreement_real": r["majority_agreement"]},
            "note": "fraction of clips whose frames are all classified alike"}]
    if labels is None:
        out.append({"metric": names[1], "value": None, "available": False, "reason": "no conditioning labels given"})
    else:
        out.append({"metric": names[1], "value": f["frame_acc"], "real_value": r["frame_acc"], **base,
                    "details": {"all_frames_correct": f["all_frames_correct"],
                                "all_frames_correct_real": r["all_frames_correct"]},
                    "note": "fraction of all frames classified as the clip's conditioning class"})
    return out
