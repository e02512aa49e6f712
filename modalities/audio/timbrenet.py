"""TimbreNet: the domain classifier of the embedded instruments (6 timbres).

Log-mel spectrogram (64 bands, n_fft 512, hop 256: 63 frames per second at 16 kHz), each
clip standardised to zero mean and unit variance (so loudness does not decide the class), then
three conv blocks (16, 32, 64 channels) and a global average pool (64 features) and a linear
head. The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

from modalities.audio.synth import SynthInstrumentsDataset
from modalities.classifier import DomainSpec, Recipe, conv_block


class TimbreNet(nn.Module):
    """``(B, L)`` waveforms in [-1, 1] -> features ``(B, 2 ** (blocks - 1) * width)``.

    ``blocks`` conv blocks (width doubling each) over a per-clip standardised log-mel; the spoken
    digits' classifier (modalities/audio/speechnet.py) is the same network one block deeper.
    """

    def __init__(self, num_classes: int = 6, width: int = 16, sample_rate: int = 16000, n_mels: int = 64,
                 blocks: int = 3):
        super().__init__()
        self.mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=512, hop_length=256, n_mels=n_mels)
        widths = [1] + [width * 2 ** i for i in range(blocks)]
        self.body = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths, widths[1:])),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], num_classes)

    def log_mel(self, wave: Tensor) -> Tensor:
        """``(B, L)`` -> per-clip standardised log-mel ``(B, 1, n_mels, frames)``."""
        m = torch.log(self.mel(wave.float()) + 1e-5)
        m = (m - m.mean((1, 2), keepdim=True)) / m.std((1, 2), keepdim=True).clamp(min=1e-5)
        return m[:, None]

    def features(self, x: Tensor) -> Tensor:
        return self.body(self.log_mel(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _waves(fake: Tensor) -> Tensor:
    """Generated audio as ``(N, L)`` (a channel axis of 1 is dropped)."""
    return fake.reshape(fake.shape[0], -1) if fake.dim() == 3 and fake.shape[1] == 1 else fake


TIMBRENET = DomainSpec(name="timbrenet", make_net=TimbreNet, recipe=Recipe(epochs=12, batch_size=32, lr=3e-3),
                       classifier_per_class=64, dataset_type=SynthInstrumentsDataset, prepare=_waves)
