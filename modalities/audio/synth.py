"""Synthetic instruments: the embedded default audio data set.

Short clips (default 1 s at 16 kHz) of a single note or a short melody (2-4 notes from a
pentatonic scale) played by one of six instrument-like timbres; the class is the instrument.
The timbres differ in the things a mel spectrogram shows: harmonic content (all, odd only,
inharmonic), envelope (plucked decay, slow bow attack, flat organ) and vibrato. Rendering is
additive synthesis in numpy, seeded per clip, written as 16-bit WAV on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modalities.audio.folder import AudioFolderDataset
from modalities.audio.io import write_wav
from modalities.media_common import file_sha256, generate_once
from modalities.splits import split_seed

GENERATOR_VERSION = 1
INSTRUMENTS = ("bell", "clarinet", "flute", "organ", "plucked", "strings")
PENTATONIC = (0, 2, 4, 7, 9)
BASE_NOTE = {"bell": 72, "plucked": 55, "strings": 55, "clarinet": 50, "flute": 72, "organ": 48}  # MIDI; notes go up to +21


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _adsr(n: int, sr: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    """Attack/decay/sustain/release envelope of ``n`` samples (times in seconds, s = level)."""
    t = np.arange(n) / sr
    dur = n / sr
    env = np.where(t < a, t / max(a, 1e-4), s + (1 - s) * np.exp(-(t - a) / max(d, 1e-4)))
    rel = np.clip((dur - t) / max(r, 1e-4), 0, 1)
    return env * rel


def _note(inst: str, f0: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``n`` samples at fundamental ``f0`` Hz."""
    t = np.arange(n) / sr
    nyq = sr / 2 * 0.9
    vib_rate, vib_depth = {"flute": (5.0, 0.006), "strings": (6.0, 0.008), "clarinet": (4.5, 0.002)}.get(inst, (0, 0))
    # Vibrato modulates the instantaneous frequency; phase is its running integral.
    freq = f0 * (1 + vib_depth * np.sin(2 * np.pi * vib_rate * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    out = np.zeros(n)
    if inst == "bell":  # inharmonic partials, each with its own long decay
        for ratio, amp, tau in ((1.0, 1.0, 0.9), (2.76, 0.6, 0.5), (5.40, 0.4, 0.3), (8.93, 0.25, 0.2), (13.34, 0.15, 0.12)):
            if ratio * f0 < nyq:
                out += amp * np.sin(ratio * phase) * np.exp(-t / tau)
        return out * np.minimum(1, t / 0.002)
    if inst == "plucked":  # bright attack, high harmonics die first
        for k in range(1, 40):
            if k * f0 >= nyq:
                break
            out += (1 / k ** 1.2) * np.sin(k * phase) * np.exp(-t * (3 + 1.5 * k))
        return out * np.minimum(1, t / 0.001)
    if inst == "organ":  # drawbar harmonics, flat envelope
        for k, amp in ((1, 1.0), (2, 0.7), (3, 0.5), (4, 0.4), (6, 0.25), (8, 0.2)):
            if k * f0 < nyq:
                out += amp * np.sin(k * phase)
        return out * _adsr(n, sr, 0.01, 0.05, 1.0, 0.02)
    if inst == "clarinet":  # odd harmonics only
        for k in range(1, 40, 2):
            if k * f0 >= nyq:
                break
            out += (1 / k) * np.sin(k * phase)
        return out * _adsr(n, sr, 0.03, 0.1, 0.8, 0.04)
    if inst == "flute":  # nearly sinusoidal plus breath noise
        for k, amp in ((1, 1.0), (2, 0.25), (3, 0.1)):
            out += amp * np.sin(k * phase)
        out += 0.05 * rng.standard_normal(n)
        return out * _adsr(n, sr, 0.08, 0.2, 0.85, 0.06)
    if inst == "strings":  # sawtooth (all harmonics, 1/k), slow bow attack
        for k in range(1, 60):
            if k * f0 >= nyq:
                break
            out += (1 / k) * np.sin(k * phase)
        return out * _adsr(n, sr, 0.15, 0.3, 0.9, 0.08)
    raise ValueError(f"unknown instrument {inst!r}; choose from {INSTRUMENTS}")


def render(inst: str, rng: np.random.Generator, sample_rate: int, num_samples: int,
           notes: list | None = None) -> np.ndarray:
    """A clip: 1-4 notes of a pentatonic melody, peak-normalised to 0.7 (some headroom).

    notes: when a list, each note's semitone step above the instrument's base (0-21) is appended
    (the captions of modalities/captions.py read them; the draws are unchanged).
    """
    n_notes = int(rng.integers(1, 5))
    base = BASE_NOTE[inst]
    bounds = np.sort(rng.choice(np.arange(1, 8), size=n_notes - 1, replace=False)) * num_samples // 8
    edges = np.concatenate([[0], bounds, [num_samples]]).astype(int)
    wave = np.zeros(num_samples)
    for i in range(n_notes):
        start, stop = edges[i], edges[i + 1]
        step = PENTATONIC[int(rng.integers(len(PENTATONIC)))] + 12 * int(rng.integers(0, 2))
        if notes is not None:
            notes.append(step)
        wave[start:stop] += _note(inst, _midi_hz(base + step), stop - start, sample_rate, rng)
    return 0.7 * wave / max(np.abs(wave).max(), 1e-8)


def generate_instruments(out: Path, sample_rate: int, num_samples: int, clips_per_class: int, seed: int,
                         exclude: frozenset[str] = frozenset()) -> int:
    """Write ``out/<instrument>/<instrument>_<i>.wav``; return the file count.

    exclude: SHA-256 digests of files another split holds. Some clips are exact repeats (a
    single organ note at one pitch renders identically whatever the seed), so a held-out split
    re-draws any clip whose file equals one of them, from the stream ``(seed, class, i, attempt)``.
    """
    for c, inst in enumerate(INSTRUMENTS):
        for i in range(clips_per_class):
            path = out / inst / f"{inst}_{i:04d}.wav"
            for attempt in range(100):
                key = [seed, c, i] if attempt == 0 else [seed, c, i, attempt]  # one stream per clip
                write_wav(path, render(inst, np.random.default_rng(key), sample_rate, num_samples), sample_rate)
                if not exclude or file_sha256(path) not in exclude:
                    break
            else:
                raise RuntimeError(f"{path}: 100 draws all repeat a clip of the excluded split")
    return len(INSTRUMENTS) * clips_per_class


class SynthInstrumentsDataset(AudioFolderDataset):
    """Procedural instrument clips, generated into the cache on first use (6 classes).

    Args:
        sample_rate: rate of the generated WAVs (Hz).
        num_samples: clip length in samples (16000 = 1 s at 16 kHz).
        clips_per_class: clips per instrument.
        seed: generator seed; any changed argument is a different cache entry.
        root: where generated data sets live (default ``$SELFFLOW_CACHE/data``).
        heldout_per_class: clips per instrument of the held-out reference split (seed + 1000,
            its own cache folder; see modalities/splits.py); 0 = none.
    """

    def __init__(self, sample_rate: int = 16000, num_samples: int = 16000, clips_per_class: int = 64,
                 seed: int = 0, root: str | None = None, heldout_per_class: int = 32,
                 disjoint_from: str | None = None):
        self._args = dict(sample_rate=sample_rate, num_samples=num_samples, root=root)
        self.seed, self.heldout_per_class = int(seed), int(heldout_per_class)
        params = dict(version=GENERATOR_VERSION, sample_rate=sample_rate, num_samples=num_samples,
                      clips_per_class=clips_per_class, seed=seed)
        exclude = frozenset()
        if disjoint_from:  # another split's folder: no file of this one may equal one of its files
            params["disjoint_from"] = Path(disjoint_from).name  # its name hashes its parameters
            exclude = frozenset(file_sha256(f) for f in Path(disjoint_from).rglob("*.wav"))
        data_dir = generate_once(
            "synth_instruments", params,
            lambda out: generate_instruments(out, sample_rate, num_samples, clips_per_class, seed, exclude),
            root=Path(root).expanduser() if root else None,
        )
        super().__init__(data_dir, sample_rate=sample_rate, num_samples=num_samples, crop="start")

    def split(self, name: str, clips_per_class: int) -> "SynthInstrumentsDataset":
        """Another split of the same generator (``heldout`` | ``classifier``), in its own folder."""
        return SynthInstrumentsDataset(clips_per_class=clips_per_class, seed=split_seed(self.seed, name),
                                       heldout_per_class=0, disjoint_from=str(self.root), **self._args)

    def reference_dataset(self) -> "SynthInstrumentsDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root
