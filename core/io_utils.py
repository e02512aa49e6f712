"""Small file and provenance helpers every package may use (core imports nothing outside core).

* atomic writes: a reader never sees a half-written file (temp file in the same directory, then
  ``os.replace``); :func:`atomic_write` takes a callback, the others are shorthands.
* :func:`git_commit`: the short commit of this checkout, recorded with every result.
* :func:`cache_root`: ``$SELFFLOW_CACHE`` (default ``~/.cache/selfflow-lab``), the one root of
  generated data sets, latent caches and reference statistics.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit(short: int | None = None, cwd: str | os.PathLike | None = None) -> str:
    """``git rev-parse --short HEAD`` of ``cwd`` (default: this repository), or ``"unknown"``."""
    flag = "--short" if short is None else f"--short={int(short)}"
    try:
        return subprocess.run(["git", "rev-parse", flag, "HEAD"], capture_output=True, text=True,
                              cwd=str(cwd or REPO), timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"
