"""ShapesNet: the domain classifier of the embedded shapes (4 classes, 32x32 RGB).

Three conv blocks (16, 32, 64 channels) and a global average pool give 64 penultimate
features; a linear head classifies the shape. The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from modalities.classifier import DomainSpec, Recipe, conv_block
from modalities.image import ShapesDataset


class ShapesNet(nn.Module):
    """``(B, 3, S, S)`` images in [-1, 1] -> features ``(B, 4 * width)``."""

    def __init__(self, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(conv_block(3, width), conv_block(width, 2 * width), conv_block(2 * width, 4 * width),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.clamp(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


SHAPESNET = DomainSpec(name="shapesnet", make_net=ShapesNet, recipe=Recipe(epochs=20, batch_size=32, lr=3e-3),
                       classifier_per_class=400, dataset_type=ShapesDataset)
