"""Audio sources for FAD: waveform tensors and folders of audio files, as mono float32 clips.

Files are read with soundfile (wav/flac/ogg/mp3 with libsndfile >= 1.1; torchaudio.load needs
torchcodec + FFmpeg) and, for what soundfile cannot open, librosa (audioread/FFmpeg): the same
decoder the training data sets use (core/audio_decode.py, shared by both). Clips are
mixed down to mono by averaging channels (as frechet-audio-distance does), and resampled with
``torchaudio.functional.resample`` (windowed sinc, its defaults) to the extractor's rate. The
resampler is recorded with each result because it moves FAD numbers slightly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.audio_decode import AudioDecodeError, audio_info, decode_audio  # noqa: F401 -- re-exported

from .provenance import subset

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
RESAMPLER = "torchaudio.functional.resample(sinc_interp_hann, lowpass_filter_width=6, rolloff=0.99)"


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Mono float32 waveform (T,) at ``sr`` -> (T',) at ``target``."""
    if sr == target:
        return np.asarray(x, np.float32)
    import torchaudio.functional as AF

    return AF.resample(torch.as_tensor(x, dtype=torch.float32), int(sr), int(target)).numpy()


def list_audio_files(root) -> list[Path]:
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no audio files ({', '.join(sorted(AUDIO_EXTS))}) found")
    return files


read_audio = decode_audio  # the name evals used before the decoder was shared


def iter_clips(source, sample_rate: int | None, target_sr: int, limit: int | None = None,
               skips=None) -> Iterator[np.ndarray]:
    """Yield mono float32 clips at ``target_sr`` from (N, T) waveforms or a folder of audio files.

    For tensors/arrays, ``sample_rate`` is required: a wrong rate would silently shift every pitch.
    """
    if isinstance(source, (torch.Tensor, np.ndarray)):
        if sample_rate is None:
            raise ValueError("waveforms given without sample_rate; pass the rate they were generated at")
        x = source.detach().float().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        if x.ndim == 3:  # (N, channels, T): mix down
            x = x.mean(1)
        if x.ndim != 2:
            raise ValueError(f"waveforms must be (N, samples) or (N, channels, samples), got {x.shape}")
        for clip in subset(x, limit):
            yield resample(clip.astype(np.float32), sample_rate, target_sr)
        return
    files = list_audio_files(source)
    for f in subset(files, limit):
        try:
            x, sr = decode_audio(f)
        except Exception as e:  # corrupt file: skip, count, report
            if skips is None:
                raise ValueError(f"{f}: unreadable audio ({e})") from e
            skips.add(f, e)
            continue
        yield resample(x, sr, target_sr)
