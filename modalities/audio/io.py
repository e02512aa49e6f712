"""Audio file I/O: probe and read (soundfile, librosa fallback) to mono at a target rate; write WAV.

``torchaudio.load/save`` need torchcodec and a system FFmpeg, so files are read with soundfile
(wav/flac/ogg/mp3 with libsndfile >= 1.1) and, for anything soundfile cannot open, librosa
(audioread/FFmpeg). The decoding itself is :func:`evals.audio_io.decode_audio`, so training and
``python -m evals fad`` accept the same files. Resampling uses torchaudio's transform.
Every failure is a :class:`MediaError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.io_utils import atomic_path
from core.audio_decode import AudioDecodeError, audio_info, decode_audio
from modalities.media_common import MediaError

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")


@dataclass(frozen=True)
class AudioInfo:
    num_samples: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "audio file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "audio file is empty (0 bytes)", "re-copy or delete the file")


def probe(path: str | os.PathLike) -> AudioInfo:
    """Length, rate and channel count from the header (soundfile), or by decoding (librosa)."""
    path = Path(path)
    _check_file(path)
    try:
        return AudioInfo(*audio_info(path))
    except AudioDecodeError as e:
        raise MediaError(path, e.reason, e.fix) from None


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read a file as mono float32 ``(num_samples,)``, resampled to ``sample_rate`` if given.

    Returns the waveform and the file's own sample rate.
    """
    path = Path(path)
    _check_file(path)
    try:
        wave, sr = decode_audio(path)
    except AudioDecodeError as e:
        raise MediaError(path, e.reason, e.fix) from None
    out = torch.from_numpy(wave)
    if sample_rate is not None and sr != sample_rate:
        out = resample(out, sr, sample_rate)
    return out, int(sr)


def resample(wave: Tensor, orig: int, new: int) -> Tensor:
    import torchaudio.functional as AF

    return AF.resample(wave, orig_freq=int(orig), new_freq=int(new))


def write_wav(path: str | os.PathLike, wave, sample_rate: int) -> Path:
    """Write mono float ``(num_samples,)`` in [-1, 1] as 16-bit PCM WAV (clipped), atomically."""
    import soundfile as sf

    path = Path(path)
    data = np.clip(torch.as_tensor(wave).detach().float().cpu().numpy().reshape(-1), -1, 1)
    with atomic_path(path, keep_suffix=True) as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")
    return path
