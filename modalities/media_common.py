"""Shared plumbing for the media modalities (video, audio, image latents).

Three concerns live here so that every dataset behaves the same way:

* **Bad input.** :class:`MediaError` carries one message that names the file and the fix.
  Datasets catch it, record ``(path, reason)`` in a :class:`SkipLog` and go on; an empty
  dataset is an error at construction, before any training starts.
* **Folder layouts.** :func:`scan_labelled_files` finds media files either in a
  folder-per-class tree (``root/<class>/<file>``, UCF-101 style, any depth below the class
  folder) or through an optional label file (modalities/label_files.py: ``path,class`` lines,
  UCF-101 split lists, ESC-50's csv, or a CSV with named columns).
* **Generated data caches.** :func:`generate_once` builds a default data set under
  ``$SELFFLOW_CACHE/data/<name>`` exactly once, in a temporary directory renamed into place
  when complete, so a killed generation never leaves half a data set behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

# Shared with core and evals; re-exported here because every dataset of this package uses them.
from core.io_utils import SkipLog, atomic_write_bytes, cache_root  # noqa: F401

log = logging.getLogger(__name__)


class MediaError(ValueError):
    """A media file that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str = ""):
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.path}: {self.detail}")

    @property
    def detail(self) -> str:
        """The message without the leading path (for skip lists that print the path anyway)."""
        return f"{self.reason} ({self.fix})" if self.fix else self.reason


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-serialisable config (names cache directories)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


MANIFEST = "manifest.json"


def generate_once(name: str, params: dict, build: Callable[[Path], int], root: Path | None = None) -> Path:
    """Return ``<cache>/data/<name>-<hash(params)>``, building it with ``build(tmp_dir)`` if absent.

    ``build`` writes the data set into the temporary directory it is given and returns the
    number of files written. The manifest records that count; a directory whose manifest is
    missing or whose file count disagrees (someone deleted files) is rebuilt. The hash of
    ``params`` in the name means a changed generator setting never reuses old data.
    """
    base = (root or cache_root() / "data")
    target = base / f"{name}-{config_hash(params)}"
    if _verify(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        count = build(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "params": params, "count": count}, indent=1))
        if _verify(target):  # another process (a DDP rank) finished the same data set first: keep theirs
            return target
        if target.exists():  # a stale copy that failed its check: replace it
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _verify(target):  # lost a race to another process; fine if theirs verifies
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _verify(target):
        raise RuntimeError(f"generated data set {target} failed its file-count check; delete it and retry")
    log.info("generated %s", target)
    return target


def _verify(target: Path) -> bool:
    manifest = target / MANIFEST
    if not manifest.is_file():
        return False
    try:
        expected = json.loads(manifest.read_text())["count"]
    except (ValueError, KeyError):
        return False
    actual = sum(1 for p in target.rglob("*") if p.is_file() and p.name != MANIFEST)
    return actual == expected


def scan_labelled_files(
    root: str | os.PathLike,
    extensions: Iterable[str],
    label_file: str | os.PathLike | None = None,
    kind: str = "media",
    **label_options,
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Find ``(path, class_index)`` pairs under ``root``; returns them and the class names.

    Without ``label_file`` the class is the first folder level below ``root`` (files deeper
    in the class folder count too, so UCF-101's ``root/<class>/<clip>.avi`` and nested
    layouts both work); classes are sorted by name. With ``label_file``, the file decides
    (``relative/path,class`` lines, UCF-101 split lists, ESC-50's csv or a CSV with named
    columns); ``label_options`` (label_format, folds, path_column, label_column, fold_column,
    class_index) go to :func:`modalities.label_files.read_label_file`.
    """
    from modalities.label_files import read_label_file

    root = Path(root).expanduser()
    exts = {e.lower().lstrip(".") for e in extensions}
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {kind} folder does not exist (set dataset.root to a folder of {kind} files)")
    label_options = {k: v for k, v in label_options.items() if v is not None}
    if label_file is not None:
        pairs, class_names = read_label_file(root, label_file, **label_options)
    else:
        if label_options.get("folds") is not None or label_options.get("label_format", "auto") != "auto":
            raise ValueError(f"{root}: dataset.folds / label_format need a dataset.label_file")
        pairs, class_names = [], None
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(cls_dir.rglob("*")):
                if f.is_file() and f.suffix.lower().lstrip(".") in exts:
                    pairs.append((f, cls_dir.name))
    if not pairs:
        layout = f"label file {label_file}" if label_file else f"{root}/<class name>/<file>"
        raise ValueError(
            f"{root}: no {kind} files with extensions {sorted(exts)} found in {layout}; "
            f"put files in one folder per class or pass a label file"
        )
    class_names = class_names or sorted({c for _, c in pairs})
    index = {c: i for i, c in enumerate(class_names)}
    return [(p, index[c]) for p, c in pairs], class_names


def load_or_next(index: int, items: list, broken: set, load: Callable[[int], object], skipped: SkipLog,
                 root, kind: str):
    """``load(index)``, or -- when that file breaks only now (it passed the probe) -- the next good
    item, so the batch stays full and training goes on; the bad file is skipped and counted."""
    for k in range(len(items)):
        j = (index + k) % len(items)
        if j in broken:
            continue
        try:
            return load(j)
        except MediaError as e:
            broken.add(j)
            skipped.add(items[j][0], e.detail)
    raise RuntimeError(f"{root}: every {kind} file failed to load.\n{skipped.summary()}")


def require_nonempty(items: list, root: str | os.PathLike, skipped: SkipLog, kind: str) -> None:
    """An empty dataset is an error before training starts, listing why files were dropped."""
    if not items:
        raise ValueError(
            f"{root}: no usable {kind} files; every candidate was rejected.\n{skipped.summary()}"
        )
