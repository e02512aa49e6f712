"""FID, sFID, precision/recall and IS as the ADM evaluation suite computes them, in torch.

Protocol (openai/guided-diffusion, evaluations/evaluator.py; docs/evaluation_protocols.md, "FID, sFID, precision/recall, IS (ADM suite)"):

* features: TF-2015 Inception pool3 (2048-d) and ``mixed_6/conv[..., :7]`` (2023-d, sFID),
  after TF-1 bilinear resize to 299 and ``(x - 128) / 128`` on uint8 input (evals/inception.py);
* statistics: float64 mean and unbiased covariance (``np.cov``); a reference npz that already
  holds ``mu``/``sigma`` (``mu_s``/``sigma_s``) is used as-is, as ADM does;
* precision/recall (Kynkaanniemi et al. 2019): pool3, k = 3; the radius of a point is the
  distance to its 3rd nearest neighbour excluding itself; precision = share of samples inside the
  reference manifold, recall = share of reference points inside the sample manifold. ADM computes
  distances in float16 blocks; we use float32 blocks, so expect differences around 1e-3;
* IS: logits = pool3 @ W^T with W the 1008x2048 ``fc.weight`` of the pytorch-fid Inception file and
  no bias, softmax over 1008 classes, contiguous splits of 5000, mean of exp(mean KL).

``fid_frame`` (video) is FID over every frame of every clip. It is blind to frame order by
construction: shuffling frames does not change it. It is not FVD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.io_utils import cache_dir as io_cache_dir

from . import weights
from .frechet import Stats, StreamingStats, frechet_distance, is_stats_file, load_stats, save_stats
from .images import SkipLog, iter_images, to_nchw
from .inception import load_inception
from core.progress import bar
from .provenance import hash_source

EXTRACTOR = "inception_tf2015_adm"  # TF-2015 weights + ADM preprocessing; the only network called "fid"
STATS_VERSION = "1"  # bump when preprocessing changes, so cached reference statistics are recomputed


@dataclass
class ImageSet:
    """Summary of one image set: pool3 / spatial statistics, pool3 features (for P/R), count."""

    pool3: Stats
    spatial: Stats | None
    feats: np.ndarray | None  # (N, 2048) float32, None when loaded from a stats-only file
    n: int
    source_hash: str | None = None
    skipped: tuple = ()


def extract(model, batch) -> dict[str, torch.Tensor]:
    """uint8 NHWC batch (array or list of HWC arrays) -> {"pool3": (B, 2048), "spatial": (B, 2023)}."""
    x = to_nchw(batch)
    if isinstance(x, list):  # mixed sizes: the resize to 299 makes them stackable afterwards
        outs = [model(xi) for xi in x]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return model(x)


def _rebatch(batches, batch_size: int):
    """Merge small same-size uint8 NHWC arrays (e.g. a few frames per video) into full batches."""
    pending = []
    for b in batches:
        if not isinstance(b, np.ndarray):  # a list of differently sized images: pass through
            yield b
            continue
        if pending and pending[0].shape[1:] != b.shape[1:]:
            yield np.concatenate(pending)
            pending = []
        pending.append(b)
        if sum(len(p) for p in pending) >= batch_size:
            yield np.concatenate(pending)
            pending = []
    if pending:
        yield np.concatenate(pending)


def image_set(source, model=None, batch_size: int = 50, limit: int | None = None,
              keep_features: bool = True, progress: bool = False, desc: str = "features") -> ImageSet:
    """Run Inception over ``source`` (tensor, ADM npz, or folder) and summarise it.

    ``model`` may be any network returning ``{"pool3": (B, D)[, "spatial": (B, D')]}`` for uint8
    NCHW images (e.g. evals.dinov2.DINOv2Features: ``pool3`` then holds its CLS feature).
    ``progress``: a tqdm bar on stderr (rank 0 only) counting images."""
    if model is None:
        model, _ = load_inception()
    s3, ss = StreamingStats(), StreamingStats()
    feats, skips = [], SkipLog()
    total = min(len(source), limit or len(source)) if hasattr(source, "shape") else None
    pbar = bar(desc=desc, total=total, unit="img", enabled=progress)
    for batch in _rebatch(iter_images(source, batch_size, limit, skips), batch_size):
        out = extract(model, batch)
        pbar.update(len(batch))
        p3 = out["pool3"].double().cpu().numpy()
        s3.update(p3)
        if "spatial" in out:
            ss.update(out["spatial"].double().cpu().numpy())
        if keep_features:
            feats.append(p3.astype(np.float32))
    pbar.close()
    if s3.n < 2:
        raise ValueError(f"{source if not hasattr(source, 'shape') else 'tensor'}: need at least 2 images, "
                         f"got {s3.n}")
    return ImageSet(s3.stats(), ss.stats() if ss.n else None, np.concatenate(feats) if keep_features else None,
                    s3.n, skipped=skips.lines())


def stats_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` as given, else ``$SELFFLOW_CACHE/stats`` (core/io_utils.py)."""
    return Path(cache_dir) if cache_dir else io_cache_dir("stats")


def video_frame_batches(videos, limit: int | None = None, skips=None, batch_size: int = 50):
    """Clips of a video folder/tensor -> all their frames as uint8 NHWC batches (fid_frame)."""
    from .video_io import iter_videos

    for clip in iter_videos(videos, limit, skips):
        for i in range(0, len(clip), batch_size):
            yield clip[i:i + batch_size]


def reference_set(real, model=None, cache_dir=None, batch_size: int = 50, limit: int | None = None,
                  kind: str = "images", weights_sha256: str | None = None, name: str | None = None,
                  progress: bool = False) -> ImageSet:
    """Reference statistics, computed once per content and cached by content hash.

    ``real`` may be a statistics npz (``mu``/``sigma``[/``mu_s``/``sigma_s``]) used as-is, an
    ADM reference batch (statistics used as-is, its ``arr_0`` images only for precision/recall,
    as ADM does), an ADM sample npz, or an image folder; with ``kind="video_frames"`` a folder
    of videos whose frames are all used (fid_frame). The cache key holds the content hash, the
    network's SHA-256 (``weights_sha256``; looked up when ``model`` is None), the preprocessing
    version and ``limit``; ``name`` (default fid / fid_frame) prefixes the cache file, so another
    network's statistics (fd_dinov2) never share a file with the Inception's.
    """
    p = Path(real)
    if not p.exists():
        raise FileNotFoundError(f"{real}: reference not found (expected an image folder or .npz)")
    if p.is_file() and is_stats_file(p):
        with np.load(p) as f:
            has_s, has_imgs = "mu_s" in f.files, "arr_0" in f.files
            feats = f["feats"] if "feats" in f.files else None  # saved by `python -m evals fid --save-stats`
        if feats is None and has_imgs and model is not None:  # ADM reference batch: images only for P/R
            feats = image_set(p, model, batch_size, limit, progress=progress, desc="reference features").feats
        return ImageSet(load_stats(p), load_stats(p, spatial=True) if has_s else None, feats,
                        0, source_hash=hash_source(p))
    if model is None:
        model, weights_sha256 = load_inception()
    digest = weights_sha256
    h = hash_source(p)
    key = f"{h[:32]}_v{STATS_VERSION}_{(digest or 'custom')[:12]}_{limit or 'all'}"
    name = name or ('fid_frame' if kind == 'video_frames' else 'fid')
    cached = stats_cache_dir(cache_dir) / f"{name}_ref_{key}.npz"
    if cached.is_file():
        with np.load(cached) as f:
            feats = f["feats"] if "feats" in f.files else None
            has_spatial = "mu_s" in f.files
        return ImageSet(load_stats(cached), load_stats(cached, spatial=True) if has_spatial else None, feats,
                        int(load_stats(cached).n), source_hash=h)
    if kind == "video_frames":
        s = image_set(video_frame_batches(p, limit, batch_size=batch_size), model, batch_size, progress=progress,
                      desc="reference frames")
    else:
        s = image_set(p, model, batch_size, limit, progress=progress, desc="reference features")
    save_stats(cached, s.pool3, s.spatial, feats=s.feats)
    s.source_hash = h
    return s


# ---- metrics ------------------------------------------------------------------------------------

def _kth_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour, excluding itself."""
    out = []
    sq = (feats * feats).sum(1)
    for i in range(0, len(feats), block):
        d = sq[i:i + block, None] + sq[None] - 2 * feats[i:i + block] @ feats.T
        out.append(d.clamp_min(0).kthvalue(k + 1, dim=1).values)  # k+1: self (distance 0) is the 1st
    return torch.cat(out)


def _inside(query: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    sqq, sqm = (query * query).sum(1), (manifold * manifold).sum(1)
    out = []
    for i in range(0, len(query), block):
        d = sqq[i:i + block, None] + sqm[None] - 2 * query[i:i + block] @ manifold.T
        out.append((d.clamp_min(0) <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real_feats, fake_feats, k: int = 3, block: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds), ADM's settings. feats: (N, D)."""
    r = torch.as_tensor(np.asarray(real_feats), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(fake_feats), dtype=torch.float32)
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} real and fake samples")
    rr, rf = _kth_radii(r, k, block), _kth_radii(f, k, block)
    precision = _inside(f, r, rr, block).double().mean().item()
    recall = _inside(r, f, rf, block).double().mean().item()
    return precision, recall


def load_is_logits_weight(path=None) -> tuple[np.ndarray, str]:
    """The 1008x2048 ``fc.weight`` from pytorch-fid's ``pt_inception-2015-12-05-*.pth``."""
    p, digest = weights.resolve("inception_logits", path)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if "fc.weight" not in sd or tuple(sd["fc.weight"].shape) != (1008, 2048):
        raise KeyError(f"{p}: no fc.weight of shape (1008, 2048); not the pytorch-fid Inception file")
    return sd["fc.weight"].double().numpy(), digest


def inception_score(pool3: np.ndarray, fc_weight: np.ndarray, split_size: int = 5000) -> float:
    """ADM's IS: no-bias logits, softmax over 1008, contiguous splits, mean of exp(mean KL)."""
    logits = np.asarray(pool3, np.float64) @ np.asarray(fc_weight, np.float64).T
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i:i + split_size]
        kl = part * (np.log(part + 1e-30) - np.log(part.mean(0, keepdims=True) + 1e-30))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def fid_from_sets(real: ImageSet, fake: ImageSet) -> dict[str, float]:
    """FID, and sFID when both sides have spatial statistics."""
    out = {"fid": frechet_distance(real.pool3, fake.pool3)}
    if real.spatial is not None and fake.spatial is not None:
        out["sfid"] = frechet_distance(real.spatial, fake.spatial)
    return out


def videos_to_frames(videos) -> torch.Tensor:
    """(N, T, 3, H, W) -> (N*T, 3, H, W), for fid_frame."""
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"videos must be (N, T, 3, H, W), got {tuple(videos.shape)}")
    return videos.reshape(-1, *videos.shape[2:])
