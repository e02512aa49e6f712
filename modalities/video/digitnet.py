"""DigitNet: the domain classifier of the embedded moving digits (10 classes).

A frame CNN on a 16x16 window of each frame's intensity (max over RGB), centred on the
bright mass (the sprite's centre, as the motion metric tracks it): so it judges the digit's
shape, not its colour or position. Two conv blocks (32, 64 channels) and a linear layer give
64 features per frame; the clip's features are their mean over frames, and a linear head
classifies the digit. Trained on 4 random frames per clip (cheap on a CPU); scored on all.
The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalities.classifier import DomainSpec, Recipe, conv_block
from modalities.video.sprites import MovingDigitsDataset, track_centres

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


def random_frames(x: Tensor, g: torch.Generator) -> Tensor:
    """``TRAIN_FRAMES`` frames of each clip, the same random times for the whole batch."""
    t = torch.randperm(x.shape[1], generator=g)[:TRAIN_FRAMES].sort().values
    return x[:, t]


DIGITNET = DomainSpec(name="digitnet", make_net=DigitNet, recipe=Recipe(epochs=12, batch_size=32, lr=3e-3),
                      classifier_per_class=64, dataset_type=MovingDigitsDataset, train_view=random_frames,
                      notes={"train_frames_per_clip": TRAIN_FRAMES})
