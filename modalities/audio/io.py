"""Audio file I/O: probe and read (soundfile, librosa fallback) to mono at a target rate; write WAV.

``torchaudio.load/save`` need torchcodec and a system FFmpeg (DESIGN.md, "Environment"), so
files are read with soundfile (wav/flac/ogg/mp3 with libsndfile >= 1.1) and, for anything
soundfile cannot open, librosa (audioread/FFmpeg). Resampling uses torchaudio's transform.
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


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def probe(path: str | os.PathLike) -> AudioInfo:
    """Length, rate and channel count from the header (soundfile), or by decoding (librosa)."""
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
        if info.frames <= 0:
            raise MediaError(path, "audio file has no samples", "re-export it or remove it")
        return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))
    except MediaError:
        raise
    except Exception as e:
        first = _first_line(e)
    wave, sr = _librosa_read(path, first)
    return AudioInfo(wave.shape[-1], sr, 1)


def _librosa_read(path: Path, soundfile_error: str) -> tuple[np.ndarray, int]:
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():  # librosa warns about its own audioread fallback; we report instead
            warnings.simplefilter("ignore")
            wave, sr = librosa.load(str(path), sr=None, mono=True)
    except Exception as e:
        raise MediaError(path, f"not a readable audio file (soundfile: {soundfile_error}; librosa: {_first_line(e)})",
                         "the file is truncated, corrupt or not audio; re-export it or remove it") from None
    if wave.size == 0:
        raise MediaError(path, "audio file has no samples", "re-export it or remove it")
    return wave.astype(np.float32), int(sr)


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read a file as mono float32 ``(num_samples,)``, resampled to ``sample_rate`` if given.

    Returns the waveform and the file's own sample rate.
    """
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)   # (num_samples, channels)
        wave = data.mean(axis=1)                                         # mix to mono
        if wave.size == 0:
            raise MediaError(path, "audio file has no samples", "re-export it or remove it")
    except MediaError:
        raise
    except Exception as e:
        wave, sr = _librosa_read(path, _first_line(e))
    out = torch.from_numpy(np.ascontiguousarray(wave))
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
