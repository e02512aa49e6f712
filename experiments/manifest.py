"""Where a suite's numbers come from: ``suite.json`` (every invocation) and per-cell provenance.

A suite directory is usually filled by several invocations of ``python -m experiments``: one
worker per core split by ``--seeds`` or ``--variants``, a resumed session, a later session that
adds the missing cells. ``suite.json`` therefore *accumulates*: each invocation appends its own
entry (commit, start, finish, cells, thread count) under a file lock, and the union of the cells
is kept, so two workers writing at once cannot drop each other's record.

The report does not trust a single commit from ``suite.json`` for its tables: every cell records
the commit(s) it ran on in its own ``suite_cell.json`` (a cell resumed on newer code lists both),
and :func:`provenance` summarises those records for the cells that are actually aggregated.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
from collections import Counter
from pathlib import Path

from core.io_utils import atomic_write_json

MANIFEST = "suite.json"
UNRECORDED = "not recorded"


@contextlib.contextmanager
def _locked(suite_dir: Path):
    """An exclusive lock on ``<suite_dir>/.suite.lock`` (POSIX advisory; workers on one machine)."""
    with open(Path(suite_dir) / ".suite.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it was not overwritten. Move it aside to start "
                         "a fresh manifest; the run directories keep their own records") from exc


def read_manifest(suite_dir: Path) -> dict:
    """``<suite_dir>/suite.json``, or ``{}`` where there is none (e.g. a plain hydra multirun)."""
    return _read(Path(suite_dir) / MANIFEST)


def update_manifest(suite_dir: Path, budget: dict, cell_keys: list[str], invocation: dict) -> dict:
    """Merge this invocation into ``suite.json`` and return the merged manifest.

    ``invocation`` must carry a unique ``id``; calling again with the same id (e.g. at the end of
    the invocation, with ``finished`` and ``failed`` set) replaces that entry. A directory that
    already holds another budget is refused: its report would mix two grids.
    """
    suite_dir = Path(suite_dir)
    suite_dir.mkdir(parents=True, exist_ok=True)
    path = suite_dir / MANIFEST
    with _locked(suite_dir):
        manifest = _read(path)
        old = (manifest.get("budget") or {}).get("name")
        if old is not None and old != budget.get("name"):
            raise ValueError(f"{path} belongs to budget {old!r}, not {budget.get('name')!r}: give this budget "
                             "its own --out directory (the report aggregates everything below one directory)")
        runs = [r for r in manifest.get("invocations", []) if r.get("id") != invocation["id"]]
        if manifest and "invocations" not in manifest and manifest.get("commit"):
            # a manifest written before invocations were kept: its one record becomes the first entry
            runs = [{"id": "legacy", **{k: manifest.get(k) for k in ("commit", "started", "finished", "cells",
                                                                   "failed", "torch_threads")}}]
        runs.append(invocation)
        known = list(manifest.get("cells", []))
        cells = known + [k for k in cell_keys if k not in known]
        merged = {"budget": budget, "cells": cells, "invocations": runs,
                  "commits": sorted({r["commit"] for r in runs if r.get("commit")})}
        atomic_write_json(path, merged)
    return merged


def new_invocation(commit: str | None, cell_keys: list[str]) -> dict:
    """The record of one ``python -m experiments`` call as it starts."""
    now = _dt.datetime.now()
    return {"id": f"{now:%Y%m%dT%H%M%S}-{os.getpid()}", "commit": commit,
            "started": now.isoformat(timespec="seconds"), "cells": list(cell_keys),
            "torch_threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None}


def cell_commits(previous: dict, commit: str | None) -> list[str]:
    """The commits a cell has run on: the earlier record's (if it was interrupted) plus this one."""
    seen = list(previous.get("commits") or ([previous["commit"]] if previous.get("commit") else []))
    return seen + ([commit] if commit and commit not in seen else [])


def provenance(run_dirs: list[Path]) -> dict:
    """Commits and dates of the given (finished) cells, from their ``suite_cell.json`` records.

    Returns ``{"cells": n, "commits": {commit or "not recorded": n_cells}, "first_start": iso|None,
    "last_finish": iso|None}``; a cell resumed across commits counts under the joined name
    ``"a+b"`` so that a table's commit line can say exactly which cells mixed code.
    """
    commits, starts, finishes = Counter(), [], []
    for d in run_dirs:
        rec = _read(Path(d) / "suite_cell.json")
        seen = cell_commits(rec, None)
        commits["+".join(seen) if seen else UNRECORDED] += 1
        start = rec.get("first_started") or rec.get("started")  # a resumed cell began at its first attempt
        if start:
            starts.append(start)
        if rec.get("finished"):
            finishes.append(rec["finished"])
    return {"cells": len(run_dirs), "commits": dict(commits), "first_start": min(starts, default=None),
            "last_finish": max(finishes, default=None)}


def failed_cells(suite_dir: Path) -> list[str]:
    """Run directories (relative to ``suite_dir``) whose record says the cell failed and was not redone."""
    out = []
    for rec_path in sorted(Path(suite_dir).rglob("suite_cell.json")):
        if _read(rec_path).get("status") == "failed":
            out.append(os.path.relpath(rec_path.parent, suite_dir))
    return out
