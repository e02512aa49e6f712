"""A small learned mel latent: a convolutional autoencoder over normalised log-mels.

The paper's audio model runs on an autoencoder's latents (Songbloom AE, 25 latents/s x 64),
not on spectrogram patches. This is the laptop-sized analogue: a 2-D conv autoencoder that
maps a normalised log-mel ``(1, M, F)`` to a latent ``(C, M/4, F/4)`` and back. Training is
one job (:mod:`modalities.audio.mel_ae_train`, also ``python -m modalities.audio.mel_ae_train``
and ``run.py task=train_tokenizer modality=audio``); the checkpoint it writes
holds the autoencoder, the mel normalisation statistics it was trained with and the latent
scale, and :class:`~modalities.audio.mel.MelTokenizer` loads it through
``latent_checkpoint`` so the flow model trains on latent tokens.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor, nn

from core.io_utils import atomic_write_bytes

DOWN = 4  # spatial downsampling of the autoencoder (two stride-2 convolutions)


class MelAutoencoder(nn.Module):
    """Args:
        latent_channels: channels of the latent ``(C, M/4, F/4)``.
        width: channels of the hidden convolutions.
    """

    def __init__(self, latent_channels: int = 4, width: int = 32):
        super().__init__()
        self.latent_channels, self.width = latent_channels, width
        w = width
        # Downsample first: full-resolution convolutions dominated the cost on a 2-core CPU.
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w // 2, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w // 2, w // 4, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w // 4, 1, 3, padding=1),
        )
        # Latents are divided by this (their std over the training set) so tokens are ~unit scale.
        self.register_buffer("latent_scale", torch.ones(()))

    def encode(self, mel: Tensor) -> Tensor:
        """Normalised log-mel ``(B, M, F)`` (M, F multiples of 4) -> scaled latent ``(B, C, M/4, F/4)``."""
        return self.encoder(mel[:, None]) / self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent ``(B, C, M/4, F/4)`` -> normalised log-mel ``(B, M, F)``."""
        return self.decoder(z * self.latent_scale)[:, 0]

    def forward(self, mel: Tensor) -> Tensor:
        return self.decode(self.encode(mel))


def pad_frames(mel: Tensor, multiple: int, value: Tensor) -> Tensor:
    """Pad ``(B, M, F)`` on the frame axis to a multiple, with a per-band ``value (M,)``."""
    pad = -mel.shape[-1] % multiple
    if not pad:
        return mel
    return torch.cat([mel, value[None, :, None].expand(mel.shape[0], -1, pad).to(mel)], dim=-1)


def save_checkpoint(path: Path, ae: MelAutoencoder, mel_state: dict, mel_config: dict, report: dict) -> Path:
    """Tensors and plain types only, so ``torch.load(weights_only=True)`` reads it."""
    state = {"format": "selfflow-mel-ae-v1", "ae": ae.state_dict(),
             "ae_config": {"latent_channels": ae.latent_channels, "width": ae.width},
             "mel_stats": {k: mel_state[k] for k in ("band_mean", "band_std")}, "mel_config": mel_config,
             "report": report}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mel autoencoder checkpoint not found; train one with "
                                f"`python -m modalities.audio.mel_ae_train --out DIR` and set modality.tokenizer.latent_checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "selfflow-mel-ae-v1":
        raise ValueError(f"{path}: not a mel autoencoder checkpoint (format selfflow-mel-ae-v1)")
    return state
