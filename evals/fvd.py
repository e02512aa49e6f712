"""FVD with StyleGAN-V's Kinetics-400 I3D (``i3d_torchscript.pt``), user-supplied.

Protocol ``fvd2048_16f`` (universome/stylegan-v, src/metrics/frechet_video_distance.py and
metric_utils.py): 2048 real and 2048 generated clips of 16 consecutive frames; real clips are
random windows of videos long enough (shorter ones are discarded), generated clips their first 16
frames; the detector receives uint8-valued (B, 3, T, H, W) and is called with
``rescale=True, resize=True, return_features=True`` (it maps to [-1, 1] and resizes to 224
itself) and returns 400-d pre-softmax logits; statistics use the *biased* covariance (divide by
N), then the Frechet distance.

No PyPI package ships this network (docs/offline_weights.md, "Files the user supplies"), so with the file absent
:func:`load_i3d` raises :class:`~evals.weights.MissingWeightsError` naming it; the API turns that
into an "unavailable" record and the video report still carries ``fid_frame``. No checksum is
published: the SHA-256 of the copy used is recorded with every result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import weights
from .frechet import Stats, StreamingStats

PROTOCOLS = {
    # name: clips per side, frames per clip, covariance ddof
    "fvd2048_16f": {"n_clips": 2048, "num_frames": 16, "ddof": 0},
    "fvd2048_128f": {"n_clips": 2048, "num_frames": 128, "ddof": 0},
    # for CPU smoke runs: same network and maths, fewer clips; never compare with fvd2048_* numbers
    "fvd_any_16f": {"n_clips": None, "num_frames": 16, "ddof": 0},
}


class I3DExtractor:
    """Wraps the TorchScript I3D: uint8 clips (B, T, H, W, 3) -> (B, 400) float64."""

    dim = 400

    def __init__(self, path=None, device="cpu", module=None, sha256: str | None = None, name: str = "i3d_k400_tfhub"):
        if module is None:  # injected modules are for tests / other detectors
            p, sha256 = weights.resolve("i3d", path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load deprecation
                module = torch.jit.load(str(p), map_location=device).eval()
        self.module, self.sha256, self.device, self.name = module, sha256, device, name

    @torch.inference_mode()
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device)
        x = x.permute(0, 4, 1, 2, 3).float()  # (B, 3, T, H, W), values in [0, 255]
        out = self.module(x, rescale=True, resize=True, return_features=True)
        return out.double().cpu().numpy()


@dataclass
class VideoSet:
    stats: Stats
    n: int
    skipped: tuple = ()


def select_clip(video: np.ndarray, num_frames: int, rng: np.random.Generator | None) -> np.ndarray | None:
    """A window of ``num_frames`` consecutive frames; random start when ``rng`` is given (real data)."""
    if len(video) < num_frames:
        return None
    start = int(rng.integers(0, len(video) - num_frames + 1)) if rng is not None else 0
    return video[start:start + num_frames]


def video_set(videos, extractor, protocol: str = "fvd2048_16f", real: bool = False, seed: int = 0,
              batch_size: int = 8, limit: int | None = None, progress: bool = False) -> VideoSet:
    """Statistics of I3D features over clips selected by ``protocol`` from an iterable of videos.

    ``limit``: at most that many clips, taken from videos evenly spaced over the sorted files."""
    from core.progress import bar
    from .images import SkipLog
    from .video_io import iter_videos

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown FVD protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    cfg = PROTOCOLS[protocol]
    n_max = limit or cfg["n_clips"]
    rng = np.random.default_rng(seed) if real else None
    acc, batch, skips, short = StreamingStats(ddof=cfg["ddof"]), [], SkipLog(), 0
    max_frames = None if real else cfg["num_frames"]
    pbar = bar(desc="I3D " + ("reference" if real else "samples"), total=n_max, unit="clip", enabled=progress)
    for v in iter_videos(videos, limit, skips, max_frames=max_frames):
        clip = select_clip(v, cfg["num_frames"], rng)
        if clip is None:
            short += 1
            continue
        batch.append(clip)
        if len(batch) == batch_size:
            acc.update(extractor(np.stack(batch)))
            pbar.update(len(batch))
            batch = []
        if n_max and acc.n + len(batch) >= n_max:
            break
    if batch:
        acc.update(extractor(np.stack(batch)))
    pbar.close()
    if short:
        skips.add(f"{short} videos", f"shorter than {cfg['num_frames']} frames (discarded, as StyleGAN-V does)")
    if acc.n < 2:
        raise ValueError(f"FVD ({protocol}): need at least 2 clips of {cfg['num_frames']} frames, got {acc.n}")
    return VideoSet(acc.stats(), acc.n, skips.lines())
