"""Decoding one audio file to a mono float32 waveform, shared by training data and evaluators.

soundfile first (wav/flac/ogg, and mp3 with libsndfile >= 1.1); what it cannot open goes to librosa
(audioread/FFmpeg). ``torchaudio.load`` is not used: it needs torchcodec and a system FFmpeg
(docs/environment.md). Both ``modalities/audio`` (training sets) and ``evals`` (FAD-style metrics
and their CLI) read files through these functions, so a file that trains also evaluates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioDecodeError(ValueError):
    """A file neither soundfile nor librosa can decode; ``reason`` and ``fix`` for the caller's message."""

    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason} ({fix})")


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _librosa_decode(path: Path, soundfile_error: str) -> tuple[np.ndarray, int]:
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():  # librosa warns about its own audioread fallback; we report instead
            warnings.simplefilter("ignore")
            wave, sr = librosa.load(str(path), sr=None, mono=True)
    except Exception as e:
        raise AudioDecodeError(path, f"not a readable audio file (soundfile: {soundfile_error}; librosa: "
                                     f"{_first_line(e)})",
                               "the file is truncated, corrupt or not audio; re-export it or remove it") from None
    return np.asarray(wave, np.float32), int(sr)


def decode_audio(path) -> tuple[np.ndarray, int]:
    """One file -> (mono float32 (T,), its sample rate): soundfile, else librosa.

    Raises :class:`AudioDecodeError` for an undecodable or sample-less file.
    """
    import soundfile as sf

    path = Path(path)
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)   # (T, channels)
        wave = x.mean(1)
    except Exception as e:
        wave, sr = _librosa_decode(path, _first_line(e))
    if wave.size == 0:
        raise AudioDecodeError(path, "audio file has no samples", "re-export it or remove it")
    return np.ascontiguousarray(wave, np.float32), int(sr)


def audio_info(path) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from the header (soundfile), or by decoding (librosa)."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        wave, sr = _librosa_decode(path, _first_line(e))
        frames, channels = wave.shape[-1], 1
    else:
        frames, sr, channels = int(info.frames), int(info.samplerate), int(info.channels)
    if frames <= 0:
        raise AudioDecodeError(path, "audio file has no samples", "re-export it or remove it")
    return frames, sr, channels
