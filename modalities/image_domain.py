"""ShapesNet: the domain classifier of the embedded shapes (4 classes, RGB) and of Fashion-MNIST (grey).

Three conv blocks (16, 32, 64 channels) and a global average pool give 64 penultimate
features; a linear head classifies the shape. The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from functools import partial

from modalities.classifier import DomainSpec, Recipe, conv_block
from modalities.fashion_mnist import FashionMNISTDataset
from modalities.image import ShapesDataset


class ShapesNet(nn.Module):
    """``(B, in_channels, S, S)`` images in [-1, 1] -> features ``(B, 4 * width)``."""

    def __init__(self, num_classes: int = 4, width: int = 16, in_channels: int = 3):
        super().__init__()
        self.body = nn.Sequential(conv_block(in_channels, width), conv_block(width, 2 * width), conv_block(2 * width, 4 * width),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.clamp(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


SHAPESNET = DomainSpec(name="shapesnet", make_net=ShapesNet, recipe=Recipe(epochs=20, batch_size=32, lr=3e-3),
                       classifier_per_class=400, dataset_type=ShapesDataset)


# Fashion-MNIST (grey, 10 classes): the same network, twice as wide, trained on 2,000 items per
# class carved from the official train file; scored on the official test file's items.
FASHIONNET = DomainSpec(name="fashionnet", make_net=partial(ShapesNet, width=32, in_channels=1),
                        recipe=Recipe(epochs=12, batch_size=64, lr=3e-3, schedule="cosine"),
                        classifier_per_class=2000, dataset_type=FashionMNISTDataset,
                        # measured 0.885 on 1,000 official test items at 16 px (0.901 at 28 px, 3x the cost);
                        # the test asserts this bar, a margin below what it reaches
                        notes={"min_heldout_accuracy": 0.86})
