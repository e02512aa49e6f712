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
from torch import Tensor

from modalities.audio.spoken_digits import SpokenDigitsDataset
from modalities.audio.timbrenet import TimbreNet, _waves
from modalities.classifier import DomainSpec, Recipe


class SpeechNet(TimbreNet):
    """``(B, L)`` waveforms in [-1, 1] -> features ``(B, 8 * width)``: TimbreNet with four conv blocks."""

    def __init__(self, num_classes: int = 10, width: int = 16, sample_rate: int = 16000, n_mels: int = 64):
        super().__init__(num_classes, width, sample_rate, n_mels, blocks=4)


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
