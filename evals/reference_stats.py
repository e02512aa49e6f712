"""Write a reference set's statistics once, as an npz that ``--real`` accepts later.

    python -m evals fid --real data/val --save-stats val_stats.npz     # once (minutes on a GPU)
    python -m evals fid --real val_stats.npz --fake samples.npz        # every later evaluation

One file per network: the Inception file serves fid, sfid, precision, recall and is (it holds
pool3 and spatial statistics and the pool3 features that precision/recall need); fd_dinov2,
fvd, fid_frame and each audio metric have their own network, hence their own file. When the
requested metrics need more than one network, the files are named ``<stem>_<group>.npz``.
Every file records its ``extractor``, so passing it to a metric of another network is refused
(evals/api.py, ``check_stats_extractor``) instead of giving a meaningless number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .api import _check
from .frechet import save_stats

INCEPTION_METRICS = ("fid", "sfid", "precision", "recall", "is")


def groups(modality: str, metrics) -> list[str]:
    """The networks ``metrics`` need, as group names (``fid`` = the image Inception)."""
    out = []
    for m in _check(modality, metrics):
        g = "fid" if m in INCEPTION_METRICS else m
        if g not in out:
            out.append(g)
    return out


def save_reference_stats(modality: str, real, metrics, out, *, cache_dir=None, device: str = "cpu",
                         batch_size: int = 50, video_batch_size: int = 8, limit_real: int | None = None,
                         fvd_protocol: str = "fvd2048_16f", progress: bool = True,
                         extractors: dict | None = None) -> list[dict]:
    """Compute the reference statistics of ``real`` for ``metrics`` and write them; returns one dict per
    file written (``group``, ``path``, ``extractor``, ``n_real``, ``dim``)."""
    if not Path(real).exists():
        raise FileNotFoundError(f"{real}: reference set not found (pass a folder of reference media)")
    names = groups(modality, metrics)
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--save-stats {out}: the file name must end in .npz (numpy adds it otherwise)")
    written = []
    for g in names:
        path = out if len(names) == 1 else out.with_name(f"{out.stem}_{g}.npz")
        stats, spatial, extra, extractor, n = _compute(modality, g, real, cache_dir, device, batch_size,
                                                       video_batch_size, limit_real, fvd_protocol, progress,
                                                       extractors or {})
        save_stats(path, stats, spatial, extractor=np.str_(extractor), **extra)
        written.append({"group": g, "path": str(path), "extractor": extractor, "n_real": int(n),
                        "dim": int(stats.mu.shape[0])})
    return written


def _compute(modality, group, real, cache_dir, device, batch_size, video_batch_size, limit, fvd_protocol,
             progress, extractors):
    from . import fid as F

    if group in ("fid", "fid_frame"):
        from .inception import load_inception

        model, sha = load_inception(device=device)
        kind = "video_frames" if group == "fid_frame" else "images"
        s = F.reference_set(real, model, cache_dir, batch_size, limit, kind=kind, weights_sha256=sha,
                            progress=progress)
        feats = s.feats if group == "fid" else None
        return s.pool3, s.spatial, {"feats": feats}, F.EXTRACTOR, s.pool3.n
    if group == "fd_dinov2":
        from .dinov2 import DINOv2Features, load_dinov2

        net, sha = load_dinov2(network="dinov2_l")
        model = DINOv2Features(net).to(device)
        s = F.reference_set(real, model, cache_dir, batch_size, limit, weights_sha256=sha, name="fd_dinov2",
                            progress=progress)
        return s.pool3, None, {}, f"dinov2_d{net.dim}_l{len(net.blocks)}_cls_edm2", s.pool3.n
    if group == "fvd":
        from . import fvd as V

        ex = extractors.get("fvd") or V.I3DExtractor(device=device)
        v = V.video_set(real, ex, fvd_protocol, real=True, batch_size=video_batch_size, limit=limit,
                        progress=progress)
        return v.stats, None, {"fvd_protocol": np.str_(fvd_protocol)}, ex.name, v.n
    from . import fad as A

    if group in extractors:
        ex = A.ExternalFADExtractor(group, model=extractors[group]) if group in A.FAD_EXTERNAL else extractors[group]
    else:
        ex = A.make_extractor(group, device=device) if group in ("fd_aisfx", "fd_crepe") else A.make_extractor(group)
    a = A.reference_audio_set(real, ex, cache_dir, limit, progress=progress)
    return a.stats, None, {"n_clips": np.int64(a.n_clips)}, ex.extractor, a.n_clips
