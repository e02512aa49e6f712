"""Result records: every number is stored with the protocol that produced it (docs/evaluation_protocols.md).

A result is a plain JSON-able dict::

    {"metric": "fid", "value": 12.3, "available": True, "extractor": "inception_tf2015_adm",
     "weights_sha256": "7ff4...", "n_real": 10000, "n_fake": 10000, "covariance": "unbiased (N-1)",
     "reference_stats_hash": "ab12...", "sampler": "euler", "nfe": 50, "cfg_scale": 1.0, ...}

An unavailable metric (weights missing, extra not installed) is a record with
``available: False``, ``value: None`` and ``reason``, so that a report says why a number is absent
instead of silently dropping it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Fields the training job supplies about how the samples were made; copied into every record.
PROTOCOL_FIELDS = ("sampler", "nfe", "cfg_scale", "checkpoint", "step", "seed", "method")


def subset(items, limit: int | None):
    """At most ``limit`` items, evenly spaced over the whole (sorted) sequence.

    Not the first ``limit``: a class-per-folder tree is sorted by class, so a prefix would be a
    reference set of one or two classes and bias every Frechet distance computed against it.
    """
    if not limit or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)] if isinstance(items, list) else items[
        [int(i * step) for i in range(limit)]]


def _protocol_part(protocol: dict | None) -> dict:
    protocol = dict(protocol or {})
    out = {k: protocol.pop(k, None) for k in PROTOCOL_FIELDS}
    out.update(protocol)  # anything else the caller wants recorded
    return out


def record(metric: str, value: float, *, extractor: str, weights_sha256: str | None, n_real: int,
           n_fake: int, reference_stats_hash: str | None, ddof: int = 1, protocol: dict | None = None,
           **extra) -> dict:
    rec = {"metric": metric, "value": float(value), "available": True, "extractor": extractor,
           "weights_sha256": weights_sha256, "n_real": int(n_real), "n_fake": int(n_fake),
           "covariance": "unbiased (N-1)" if ddof == 1 else "biased (N)",
           "reference_stats_hash": reference_stats_hash}
    rec.update(extra)
    rec.update(_protocol_part(protocol))
    return rec


def unavailable(metric: str, reason: str, protocol: dict | None = None, **extra) -> dict:
    rec = {"metric": metric, "value": None, "available": False, "reason": reason}
    rec.update(extra)
    rec.update(_protocol_part(protocol))
    return rec


def hash_source(path) -> str:
    """Content hash of a file or of every file under a folder (relative names + bytes).

    Used to key cached reference statistics: a changed, added or removed file changes the key.
    """
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    if not files:
        raise FileNotFoundError(f"{p}: nothing to hash (missing or empty)")
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
