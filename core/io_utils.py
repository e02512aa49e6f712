"""Small file and provenance helpers every package may use (core imports nothing outside core).

* Atomic writes: a reader (or a resumed run) never sees a half-written file. The data goes to a
  temporary file in the target's directory (``.<name>.<random>.tmp``; with ``keep_suffix`` it
  ends in ``.tmp<suffix>`` so a writer's format detection by extension still works), is fsynced,
  and is renamed into place.
  :func:`atomic_path` yields that temporary path for writers that need a file name (soundfile,
  PyAV, ``np.savez``); :func:`atomic_write` takes a ``write_fn(file)`` callback; the
  ``atomic_write_bytes/text/json`` and :func:`atomic_torch_save` shorthands build on it.
* :func:`to_uint8`: the one [-1, 1] -> uint8 rule of the FID protocol.
* :class:`SkipLog`: files a dataset or an evaluator skipped, reported instead of fatal.
* :func:`git_commit`: the short commit of this checkout, recorded with every result.
* :func:`cache_root` / :func:`cache_dir`: ``$SELFFLOW_CACHE`` (default ``~/.cache/selfflow-lab``),
  the one root of generated data sets, latent caches and reference statistics; evaluator weights
  have their own :func:`weights_dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = "~/.cache/selfflow-lab"
TEMP_GLOB = ".*.tmp"  # what atomic writers leave behind when killed mid-write


# ---- atomic writes -----------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write_fn: Callable, fsync: bool = True) -> Path:
    """Call ``write_fn(binary file object)`` on a temporary file and rename it onto ``path``."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        write_fn(f)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, **json_kw) -> Path:
    return atomic_write_text(path, json.dumps(obj, **{"indent": 1, **json_kw}))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


# ---- quantisation ------------------------------------------------------------------------------

QUANTIZE_MODES = ("round", "floor")


def to_uint8(x: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """[-1, 1] floats -> uint8, same layout (any shape).

    ``round`` (the FID protocol here, as DiT/SiT's ``sample_ddp.py``: ``clamp(127.5 x + 128)``
    truncated): ``clamp((x + 1) * 127.5 + 0.5, 0, 255)`` then truncation = round half up.
    ``floor``: ``clamp(255 (x + 1) / 2, 0, 255)`` truncated, as the ADM, REPA and Self-Flow
    releases write their sample files; at most one grey level apart.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize mode {mode!r}: must be one of {QUANTIZE_MODES}")
    x = x.detach().float()
    q = (x + 1) * 127.5 + 0.5 if mode == "round" else 255 * (x + 1) / 2
    return q.clamp(0, 255).to(torch.uint8)  # the cast truncates (values are >= 0)


# ---- skipped files -----------------------------------------------------------------------------

@dataclass
class SkipLog:
    """Records files a dataset (or an evaluator) skipped, so the run can report them instead of dying.

    Files found bad while the dataset is built (probing) are recorded in the main process.
    A file that only fails later, inside a DataLoader worker, is recorded in that worker's copy
    of the log, which the main process never sees; so the trainer points ``spool`` at a file in
    the run directory before starting workers, every ``add`` also appends one JSON line there
    (one short ``O_APPEND`` write per line, safe across processes), and the report reads them
    back with :meth:`merge_spools`.
    """

    entries: list[tuple[str, str]] = field(default_factory=list)
    spool: str | None = None

    def add(self, path: str | os.PathLike, reason) -> None:
        reason = str(reason)
        self.entries.append((str(path), reason))
        log.warning("skipping %s: %s", path, reason)
        if self.spool:
            line = json.dumps({"path": str(path), "reason": reason, "pid": os.getpid()}) + "\n"
            with open(self.spool, "a", encoding="utf-8") as f:
                f.write(line)

    def merge_spools(self, paths) -> int:
        """Add the entries other processes spooled (files in ``paths``) that this log lacks;
        returns how many were new. Unparseable lines (a process killed mid-write) are ignored."""
        known, new = set(self.entries), 0
        for p in paths:
            for raw in Path(p).read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(raw)
                    entry = (str(rec["path"]), str(rec["reason"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if entry not in known:
                    known.add(entry)
                    self.entries.append(entry)
                    new += 1
        return new

    def lines(self) -> tuple[str, ...]:
        """``"path: reason"`` per entry (what evaluation records list)."""
        return tuple(f"{p}: {r}" for p, r in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, index):
        return self.entries[index]

    def summary(self, limit: int = 10) -> str:
        """One paragraph for the end-of-epoch report."""
        if not self.entries:
            return "no files skipped"
        lines = [f"{len(self.entries)} file(s) skipped:"]
        lines += [f"  {p}: {r}" for p, r in self.entries[:limit]]
        if len(self.entries) > limit:
            lines.append(f"  ... and {len(self.entries) - limit} more")
        return "\n".join(lines)


# ---- provenance and cache directories ----------------------------------------------------------

def git_commit(short: int | None = None, cwd: str | os.PathLike | None = None) -> str:
    """``git rev-parse --short HEAD`` of ``cwd`` (default: this repository), or ``"unknown"``."""
    flag = "--short" if short is None else f"--short={int(short)}"
    try:
        return subprocess.run(["git", "rev-parse", flag, "HEAD"], capture_output=True, text=True,
                              cwd=str(cwd or REPO), timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def cache_root() -> Path:
    """``$SELFFLOW_CACHE``, else ``~/.cache/selfflow-lab`` (``cache_dir`` in configs/config.yaml)."""
    return Path(os.path.expanduser(os.environ.get("SELFFLOW_CACHE", DEFAULT_CACHE)))


def cache_dir(kind: str, root: str | os.PathLike | None = None) -> Path:
    """``<root or cache_root()>/<kind>``: ``data`` (generated sets, latents), ``stats`` (reference statistics)."""
    return (Path(root).expanduser() if root else cache_root()) / kind


def weights_dir() -> Path:
    """Evaluator weights: ``$SELFFLOW_WEIGHTS_DIR``, else ``~/.cache/selfflow-lab/weights``.

    Deliberately not below ``$SELFFLOW_CACHE``: tests and runs that isolate their data cache still
    find the (verified, read-only) networks.
    """
    return Path(os.environ.get("SELFFLOW_WEIGHTS_DIR") or Path(os.path.expanduser(DEFAULT_CACHE)) / "weights")


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, so a file is hashed once per process


def sha256_file(path) -> str:
    """SHA-256 of a file's bytes (hex), hashed once per process per (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]
