"""SpeechNet: the domain classifier of the spoken digits (10 words, voices it never heard).

Log-mel spectrogram (64 bands, n_fft 512, hop 256: 63 frames per second at 16 kHz), each clip
standardised to zero mean and unit variance (loudness does not decide the word), then four conv
blocks (16, 32, 64, 128 channels; the fourth gives the receptive field a whole syllable needs),
a global average pool (128 features) and a linear head. Trained on the ``classifier`` split's
voices (modalities/audio/spoken_digits.py) with a random time shift of up to +-0.15 s per clip,
so a word that a generator places off-centre is still read; scored on the ``heldout`` voices.
The metrics over its features are computed by app/domain_metrics.py (docs/domain_metrics.md).
"""

from __future__ import annotations

import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

from modalities.audio.spoken_digits import SpokenDigitsDataset
from modalities.classifier import DomainSpec, Recipe, conv_block


class SpeechNet(nn.Module):
    """``(B, L)`` waveforms in [-1, 1] -> features ``(B, 8 * width)``."""

    def __init__(self, num_classes: int = 10, width: int = 16, sample_rate: int = 16000, n_mels: int = 64):
        super().__init__()
        self.mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=512, hop_length=256, n_mels=n_mels)
        self.body = nn.Sequential(conv_block(1, width), conv_block(width, 2 * width), conv_block(2 * width, 4 * width),
                                  conv_block(4 * width, 8 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * width, num_classes)

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


def random_shift(batch: Tensor, g: torch.Generator, max_shift: int = 2400) -> Tensor:
    """``(B, L)`` clips each moved by a random ``[-max_shift, max_shift]`` samples, zero-filled (not wrapped)."""
    shifts = torch.randint(-max_shift, max_shift + 1, (batch.shape[0],), generator=g).tolist()
    out = torch.zeros_like(batch)
    L = batch.shape[-1]
    for k, s in enumerate(shifts):
        if s >= 0:
            out[k, s:] = batch[k, :L - s]
        else:
            out[k, :L + s] = batch[k, -s:]
    return out


SPEECHNET = DomainSpec(name="speechnet", make_net=SpeechNet, recipe=Recipe(epochs=15, batch_size=32, lr=3e-3),
                       classifier_per_class=100, dataset_type=SpokenDigitsDataset, prepare=_waves,
                       train_view=random_shift, notes={"train_view": "random time shift +-0.15 s"})
