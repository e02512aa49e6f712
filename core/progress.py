"""Progress bars for long loops (feature extraction, reference statistics, data set scans, sampling).

tqdm on stderr, like pytorch-fid and torch-fidelity, also when stderr is not a terminal (a log file
still shows that the job moves). Under torchrun only rank 0 draws: the rank is read from the
``RANK`` environment variable that torchrun sets, so this module needs neither torch.distributed
nor the trainer (evals must stay importable on its own).
"""

from __future__ import annotations

import os
import sys


def is_rank_zero() -> bool:
    """True unless ``RANK`` names another process (torchrun / SLURM launches)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "it", enabled: bool = True):
    """``tqdm(iterable)`` on stderr when ``enabled`` and on rank 0; otherwise the iterable untouched.

    ``leave=False``: the bar disappears when done, so logs keep the results, not 100 finished bars.
    """
    if not enabled or not is_rank_zero():
        return iterable if iterable is not None else _NoBar()
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


class _NoBar:
    """Stands in for a manual tqdm bar (``bar(desc=...)`` without an iterable) when disabled."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass
