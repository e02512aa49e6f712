"""Spoken digits ("SC09-like"): "zero" .. "nine" said by two offline synthesizers, split by voice.

Ten classes, 1 s mono clips at 16 kHz, rendered once into ``$SELFFLOW_CACHE/data`` from the
verified source folders ``espeak_ng`` and ``flite`` (``python -m modalities.data fetch espeak_ng
flite``; modalities/data/sources.py). Class index = digit value (folder ``seven`` is class 7).

A clip is one word (optionally with ``.``, ``!`` or ``?``, which changes the intonation) in one
voice at a random speaking rate and pitch:

* espeak-ng (80 % of clips): voice ``<accent>+<variant>``, rate 130-230 words/min, pitch 20-80,
  pitch range 20-90 (espeak's 0-100 scales). All eight English accents are shared by the
  splits: ``en, en-us, en-gb-scotland, en-gb-x-rp, en-029, en-gb-x-gbclan, en-gb-x-gbcwmd,
  en-us-nyc``; the *variants* (the speaker: formants, pitch, breath, Klatt or not) are not.
* flite (20 %): duration stretch 0.8-1.3, mean f0 0.8-1.25 x the voice's own (``rms`` ignores it).

**Split by voice** (no variant and no flite voice is in two splits; :data:`VARIANTS`, :data:`FLITE`):

========== ============================================================================ =================
split      espeak-ng variants (x all 8 accents)                                          flite voices
========== ============================================================================ =================
training   m1 m4 m5 m8 f1 f4 klatt klatt4 Alex Gene Michael Mike adam anika belinda      kal kal16
           david edward grandpa ian iven john max norbert paul rob shelby (26)
heldout    m3 m6 klatt2 Andrea Annie benjamin grandma quincy (8)                         slt rms
classifier m2 m7 klatt3 Andy Lee aunty boris linda robert steph steph2 steph3 travis    awb
           (13)
========== ============================================================================ =================

Variants with a ``breath`` setting (f2, f3, f5, caleb, ...) are left out: espeak-ng's breath
noise reads memory it has not written, so their renders differ between processes.

``heldout`` is the reference of every metric and is never heard in training nor by the domain
classifier (modalities/audio/speechnet.py), which trains on ``classifier``. Held-out voices
cross both engines: two of flite's five voices (one female, one male, neither heard anywhere
else; kal and kal16 are one speaker, so both stay in training).

Processing of every render: resample to the target rate (polyphase, exact and deterministic),
trim leading/trailing silence (10 ms frames below 2 % of the loudest frame's RMS), RMS-normalise
to 0.1 (peak capped at 0.95), centre in ``num_samples`` with zeros, 16-bit WAV. A render longer
than the clip, or whose file equals one already written (in this split or in ``disjoint_from``),
is re-drawn from the stream ``(seed, class, index, attempt)``. ``voices.csv`` in each folder
records every clip's engine, voice and settings.
"""

from __future__ import annotations

import csv
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from modalities.audio.folder import AudioFolderDataset
from modalities.audio.io import write_wav
from modalities.audio.speech_engines import render_espeak, render_flite
from modalities.media_common import file_sha256, generate_once
from modalities.splits import align_classes, split_seed

GENERATOR_VERSION = 2  # 2: no breathy variants (not reproducible)
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = {
    "training": ("m1", "m4", "m5", "m8", "f1", "f4", "klatt", "klatt4", "Alex", "Gene", "Michael", "Mike", "adam",
                 "anika", "belinda", "david", "edward", "grandpa", "ian", "iven", "john", "max", "norbert", "paul",
                 "rob", "shelby"),
    "heldout": ("m3", "m6", "klatt2", "Andrea", "Annie", "benjamin", "grandma", "quincy"),
    "classifier": ("m2", "m7", "klatt3", "Andy", "Lee", "aunty", "boris", "linda", "robert", "steph", "steph2",
                   "steph3", "travis"),
}
FLITE = {"training": ("kal", "kal16"), "heldout": ("slt", "rms"), "classifier": ("awb",)}
FLITE_F0 = {"kal": 105, "kal16": 105, "awb": 110, "rms": 100, "slt": 170}  # Hz, roughly each voice's own mean
FLITE_SHARE = 0.2
ENDINGS = ("", ".", "!", "?")
MAX_ATTEMPTS = 20


def voices(split: str) -> list[str]:
    """Every voice of ``split`` as ``espeak:<accent>+<variant>`` / ``flite:<voice>``."""
    return ([f"espeak:{a}+{v}" for v in VARIANTS[split] for a in ACCENTS]
            + [f"flite:{v}" for v in FLITE[split]])


def draw_job(split: str, digit: int, rng: np.random.Generator) -> dict:
    """One render job (see modalities/audio/speech_engines.py) of ``DIGITS[digit]`` in a voice of ``split``."""
    text = DIGITS[digit] + ENDINGS[int(rng.integers(len(ENDINGS)))]
    if rng.random() < FLITE_SHARE:
        voice = FLITE[split][int(rng.integers(len(FLITE[split])))]
        return {"engine": "flite", "voice": voice, "text": text, "stretch": round(float(rng.uniform(0.8, 1.3)), 3),
                "f0": int(FLITE_F0[voice] * rng.uniform(0.8, 1.25))}
    accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
    variant = VARIANTS[split][int(rng.integers(len(VARIANTS[split])))]
    return {"engine": "espeak", "voice": f"{accent}+{variant}", "text": text, "rate": int(rng.integers(130, 231)),
            "pitch": int(rng.integers(20, 81)), "range": int(rng.integers(20, 91)), "seed": int(rng.integers(2 ** 31))}


def finish(pcm: bytes, rate: int, sample_rate: int, num_samples: int) -> np.ndarray | None:
    """Raw int16 speech at ``rate`` -> float ``(num_samples,)`` clip (trimmed, normalised, centred).

    None when the trimmed word is longer than the clip or silent (the caller re-draws).
    """
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    if rate != sample_rate:
        g = gcd(sample_rate, rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    hop = max(1, sample_rate // 100)  # 10 ms frames
    frames = len(x) // hop
    if frames == 0:
        return None
    rms = np.sqrt((x[:frames * hop].reshape(frames, hop) ** 2).mean(1))
    loud = np.flatnonzero(rms > 0.02 * rms.max())
    if rms.max() <= 1e-4 or len(loud) == 0:
        return None
    x = x[loud[0] * hop:(loud[-1] + 1) * hop]
    if len(x) > num_samples:
        return None
    x = x * (0.1 / np.sqrt((x ** 2).mean()))
    x = x * min(1.0, 0.95 / np.abs(x).max())
    out = np.zeros(num_samples)
    start = (num_samples - len(x)) // 2
    out[start:start + len(x)] = x
    return out


def _require(name: str) -> Path:
    from modalities.data.sources import require

    return require(name)


def generate_digits(out: Path, split: str, sample_rate: int, num_samples: int, clips_per_class: int, seed: int,
                    exclude: frozenset[str] = frozenset()) -> int:
    """Write ``out/<digit>/<digit>_<i>.wav`` and ``out/voices.csv``; return the file count.

    exclude: SHA-256 digests of files another split holds; no file of this one may equal them.
    """
    espeak_dir, flite_dir = _require("espeak_ng"), _require("flite")
    seen, rows = set(exclude), {}
    pending = [(c, i, 0) for c in range(len(DIGITS)) for i in range(clips_per_class)]
    while pending:  # each round renders every clip still missing, in a fixed order (deterministic)
        jobs = [draw_job(split, c, np.random.default_rng([seed, c, i] if a == 0 else [seed, c, i, a]))
                for c, i, a in pending]
        espeak_idx = [k for k, job in enumerate(jobs) if job["engine"] == "espeak"]
        renders = dict(zip(espeak_idx, render_espeak([jobs[k] for k in espeak_idx], espeak_dir)))
        retry = []
        for k, ((c, i, a), job) in enumerate(zip(pending, jobs)):
            pcm, rate = renders[k] if k in renders else render_flite(job, flite_dir)
            wave = finish(pcm, rate, sample_rate, num_samples)
            path = out / DIGITS[c] / f"{DIGITS[c]}_{i:04d}.wav"
            if wave is not None:
                write_wav(path, wave, sample_rate)
                digest = file_sha256(path)
                if digest not in seen:
                    seen.add(digest)
                    rows[(c, i)] = {"file": path.relative_to(out).as_posix(), "attempt": a, "sha256": digest, **job}
                    continue
            if a + 1 >= MAX_ATTEMPTS:
                raise RuntimeError(f"{path}: {MAX_ATTEMPTS} draws were all too long for {num_samples} samples or "
                                   "repeated another clip; raise num_samples")
            retry.append((c, i, a + 1))
        pending = retry
    fields = ["file", "engine", "voice", "text", "rate", "pitch", "range", "seed", "stretch", "f0", "attempt", "sha256"]
    with open(out / "voices.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows[key] for key in sorted(rows))
    return len(rows) + 1


def read_voices(root: str | Path) -> list[dict]:
    """The rows of a generated folder's ``voices.csv`` (one per clip: file, engine, voice, settings)."""
    with open(Path(root) / "voices.csv", newline="") as f:
        return list(csv.DictReader(f))


class SpokenDigitsDataset(AudioFolderDataset):
    """Spoken digits, generated into the cache on first use (10 classes, index = digit).

    Args:
        sample_rate: rate of the generated WAVs (Hz).
        num_samples: clip length in samples (16000 = 1 s at 16 kHz).
        clips_per_class: clips per digit.
        seed: generator seed of this split; any changed argument is a different cache entry.
        root: where generated data sets live (default ``$SELFFLOW_CACHE/data``).
        heldout_per_class: clips per digit of the held-out reference split (held-out voices,
            seed + 1000, its own cache folder); 0 = none.
        split: whose voices speak: ``training`` | ``heldout`` | ``classifier`` (:data:`VARIANTS`).
        disjoint_from: another split's folder; no file of this one equals one of its files.
    """

    def __init__(self, sample_rate: int = 16000, num_samples: int = 16000, clips_per_class: int = 200,
                 seed: int = 0, root: str | None = None, heldout_per_class: int = 32, split: str = "training",
                 disjoint_from: str | None = None):
        if split not in VARIANTS:
            raise ValueError(f"modality.dataset.split must be one of {sorted(VARIANTS)}, got {split!r}")
        from modalities.data.sources import SOURCES

        self._args = dict(sample_rate=sample_rate, num_samples=num_samples, root=root)
        self.seed, self.heldout_per_class, self.voice_split = int(seed), int(heldout_per_class), split
        params = dict(version=GENERATOR_VERSION, split=split, sample_rate=sample_rate, num_samples=num_samples,
                      clips_per_class=clips_per_class, seed=seed, voices=voices(split),
                      sources={n: SOURCES[n].tree_sha256 for n in ("espeak_ng", "flite")})
        exclude = frozenset()
        if disjoint_from:
            params["disjoint_from"] = Path(disjoint_from).name  # its name hashes its parameters
            exclude = frozenset(file_sha256(f) for f in Path(disjoint_from).rglob("*.wav"))
        data_dir = generate_once(
            "spoken_digits", params,
            lambda out: generate_digits(out, split, sample_rate, num_samples, clips_per_class, seed, exclude),
            root=Path(root).expanduser() if root else None,
        )
        super().__init__(data_dir, sample_rate=sample_rate, num_samples=num_samples, crop="start")
        align_classes(self, list(DIGITS))  # folders sort alphabetically; number them by digit value

    def split(self, name: str, clips_per_class: int) -> "SpokenDigitsDataset":
        """Another split (``heldout`` | ``classifier``): its own voices, seed and folder."""
        return SpokenDigitsDataset(clips_per_class=clips_per_class, seed=split_seed(self.seed, name),
                                   heldout_per_class=0, split=name, disjoint_from=str(self.root), **self._args)

    def reference_dataset(self) -> "SpokenDigitsDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root
