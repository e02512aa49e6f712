"""Label files: which media file belongs to which class, for folder data sets.

Four formats (``dataset.label_format``; ``auto`` picks one from the file):

* ``pairs``: ``relative/path,class`` per line (comma or tab; ``#`` starts a comment). Classes sorted.
* ``ucf101``: UCF-101's own split lists. ``trainlist0N.txt`` lines are ``Class/v_x.avi <index>``
  (1-based index into ``classInd.txt``), ``testlist0N.txt`` lines are ``Class/v_x.avi`` and take the
  class from the path's folder. ``classInd.txt`` (``<index> <Class>`` lines) sits next to the list
  or is named by ``class_index``; it fixes the class order, so train and test agree on indices.
* ``esc50``: ESC-50's ``meta/esc50.csv`` (header ``filename,fold,target,category,...``); files are
  ``<root>/audio/<filename>`` (or ``<root>/<filename>``), class index = ``target``, class name =
  ``category``; ``folds`` keeps only those folds (e.g. ``[1,2,3,4]`` to train, ``[5]`` to evaluate).
* ``csv``: any CSV/TSV with a header and named ``path_column`` / ``label_column`` (optional
  ``fold_column`` with ``folds``). Classes are sorted (numerically when every label is an integer).

Classes are always taken from *every* row, before fold selection, so a training fold set and an
evaluation fold set number their classes identically. Each mistake (missing column, unknown class,
a listed file that does not exist) is one :class:`LabelFileError` naming the file, line and fix.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

FORMATS = ("auto", "pairs", "ucf101", "esc50", "csv")
ESC50_COLUMNS = ("filename", "fold", "target", "category")
_UCF_LIST = re.compile(r"^(train|test)list\d*\.txt$", re.IGNORECASE)


class LabelFileError(ValueError):
    """A label file that cannot be used; the message is ``file:line: problem (fix)``."""

    def __init__(self, path, line: int | None, reason: str, fix: str = ""):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {reason}" + (f" ({fix})" if fix else ""))


def resolve_label_file(label_file: str | os.PathLike, root: Path) -> Path:
    """``label_file`` as given (absolute or relative to the working directory), else relative to ``root``."""
    p = Path(label_file).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    return root / p if (root / p).is_file() else p


def read_label_file(root: Path, label_file: str | os.PathLike, label_format: str = "auto",
                    folds: Iterable | None = None, path_column: str | None = None,
                    label_column: str | None = None, fold_column: str | None = None,
                    class_index: str | os.PathLike | None = None) -> tuple[list[tuple[Path, str]], list[str]]:
    """Parse a label file into ``([(absolute path, class name), ...], class names in index order)``.

    Raises FileNotFoundError for a missing label / class-index file and :class:`LabelFileError` for
    bad content or a listed media file that does not exist.
    """
    root = Path(root)
    path = resolve_label_file(label_file, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file does not exist (set dataset.label_file to an existing file; "
                                f"a relative path is looked up in the working directory, then under {root})")
    if label_format not in FORMATS:
        raise ValueError(f"dataset.label_format={label_format!r}: must be one of {FORMATS}")
    fmt = detect_format(path, path_column, label_column) if label_format == "auto" else label_format
    if isinstance(folds, (int, str)):  # folds=5 on the command line
        folds = [folds]
    folds = None if folds is None else [str(f).strip() for f in folds]
    if fmt == "ucf101":
        if folds is not None:
            raise LabelFileError(path, None, "dataset.folds does not apply to UCF-101 split lists",
                                 "choose the split with the list file (trainlist01.txt, testlist02.txt, ...) "
                                 "and set dataset.folds=null")
        pairs, names = _ucf101(path, root, class_index)
    elif fmt == "esc50":
        pairs, names = _table(path, root, "filename", "category", "fold", folds, esc50=True)
    elif fmt == "csv":
        pairs, names = _table(path, root, path_column or "path", label_column or "label", fold_column or "fold",
                              folds, esc50=False)
    else:
        if folds is not None:
            raise LabelFileError(path, None, "dataset.folds needs a label file with a fold column",
                                 "use label_format=csv with fold_column, or set dataset.folds=null")
        pairs, names = _pairs(path, root), None
    _require_files(path, pairs)
    if names is None:  # pairs: plain name order, as the folder-per-class layout
        names = sorted({c for _, c, _ in pairs})
    return [(p, c) for p, c, _ in pairs], names


def detect_format(path: Path, path_column=None, label_column=None) -> str:
    """``csv`` when columns are named, ``ucf101`` for ``train/testlistNN.txt``, ``esc50`` for its
    header, else ``pairs``."""
    if path_column or label_column:
        return "csv"
    if _UCF_LIST.match(path.name):
        return "ucf101"
    first = _first_line(path)
    cols = [c.strip().lower() for c in first.split(",")]
    if all(c in cols for c in ESC50_COLUMNS):
        return "esc50"
    return "pairs"


def _first_line(path: Path) -> str:
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if line.strip():
            return line
    return ""


# ---- formats: each returns [(path, class, line number)] ---------------------------------------------

def _pairs(label_file: Path, root: Path) -> list[tuple[Path, str, int]]:
    pairs = []
    for n, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [s.strip() for s in line.replace("\t", ",").split(",")]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{label_file}:{n}: expected 'relative/path,class', got {line!r} (fix the line, or "
                             f"set dataset.label_format to ucf101, esc50 or csv for those formats)")
        pairs.append((root / parts[0], parts[1], n))
    return pairs


def _read_class_index(path: Path) -> list[str]:
    """classInd.txt: ``<1-based index> <Class>`` lines -> class names in index order."""
    by_index: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise LabelFileError(path, n, f"expected '<index> <ClassName>', got {line.strip()!r}", "fix the line")
        idx = int(parts[0])
        if idx in by_index:
            raise LabelFileError(path, n, f"index {idx} is listed twice", "give every class its own index")
        by_index[idx] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise LabelFileError(path, None, f"class indices must run 1..{len(by_index)} without gaps",
                             "renumber the classes")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def _ucf101(label_file: Path, root: Path, class_index) -> tuple[list[tuple[Path, str, int]], list[str]]:
    ci = Path(class_index).expanduser() if class_index else label_file.parent / "classInd.txt"
    if class_index and not ci.is_absolute() and not ci.is_file():
        ci = root / ci
    if not ci.is_file():
        raise FileNotFoundError(f"{ci}: UCF-101 class index does not exist (needed by {label_file}; put classInd.txt "
                                f"next to the list or set dataset.class_index)")
    names = _read_class_index(ci)
    known = set(names)
    pairs = []
    for n, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0]
        folder = rel.replace("\\", "/").split("/")[0] if "/" in rel.replace("\\", "/") else None
        if len(parts) == 2:  # trainlist: the index decides
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(names):
                raise LabelFileError(label_file, n, f"class index {parts[1]!r} is not in 1..{len(names)} of {ci}",
                                     "fix the index or use the classInd.txt of the same release")
            cls = names[int(parts[1]) - 1]
            if folder in known and folder != cls:
                raise LabelFileError(label_file, n, f"index {parts[1]} means {cls!r} in {ci}, but the path's folder "
                                     f"is {folder!r}", "use the classInd.txt that belongs to this list")
        elif len(parts) == 1:  # testlist: the folder decides
            if folder is None:
                raise LabelFileError(label_file, n, f"{rel!r} has no class folder and no index",
                                     "write 'Class/file.avi' or 'Class/file.avi <index>'")
            if folder not in known:
                raise LabelFileError(label_file, n, f"unknown class {folder!r} (not in {ci})",
                                     "add it to classInd.txt or fix the path")
            cls = folder
        else:
            raise LabelFileError(label_file, n, f"expected 'Class/file.avi [index]', got {line.strip()!r}",
                                 "fix the line")
        pairs.append((root / rel, cls, n))
    return pairs, names


def _sniff_delimiter(header: str) -> str:
    if "\t" in header:
        return "\t"
    if ";" in header and "," not in header:
        return ";"
    return ","


def _table(label_file: Path, root: Path, path_col: str, label_col: str, fold_col: str, folds, *, esc50: bool):
    text = label_file.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter=_sniff_delimiter(_first_line(label_file)))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    needed = list(ESC50_COLUMNS) if esc50 else [path_col, label_col] + ([fold_col] if folds is not None else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        fix = ("this is not ESC-50's meta/esc50.csv; set dataset.label_format=csv with path_column/label_column"
               if esc50 else "set dataset.path_column / label_column / fold_column to columns the file has")
        raise LabelFileError(label_file, 1, f"missing column(s) {missing}; the header has {columns}", fix)
    audio_dir = root / "audio" if esc50 and (root / "audio").is_dir() else root
    rows, targets = [], {}
    for row in reader:
        n = reader.line_num  # the physical line (DictReader skips blank lines silently)
        rel, cls = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
        if not rel and not any((v or "").strip() for v in row.values()):
            continue  # blank line
        if not rel or not cls:
            empty = path_col if not rel else label_col
            raise LabelFileError(label_file, n, f"empty {empty!r}", "fill it in or delete the row")
        if esc50:
            t = (row.get("target") or "").strip()
            if not t.isdigit():
                raise LabelFileError(label_file, n, f"target {t!r} is not a non-negative integer", "fix the row")
            if targets.setdefault(int(t), cls) != cls:
                raise LabelFileError(label_file, n, f"target {t} is {cls!r} here but {targets[int(t)]!r} earlier",
                                     "one category per target")
        fold = (row.get(fold_col) or "").strip() if (esc50 or folds is not None) else None
        rows.append((audio_dir / rel, cls, n, fold))
    names = [targets[t] for t in sorted(targets)] if esc50 else _sorted_classes({c for _, c, _, _ in rows})
    if folds is not None:
        have = sorted({f for *_, f in rows}, key=_num_key)
        rows = [r for r in rows if r[3] in folds]
        if not rows:
            raise LabelFileError(label_file, None, f"no rows with {fold_col} in {folds}; the file has folds {have}",
                                 "set dataset.folds to folds that exist")
    return [(p, c, n) for p, c, n, _ in rows], names


def _num_key(s: str):
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def _sorted_classes(classes: set[str]) -> list[str]:
    """Names sorted; numerically when every name is an integer (so '10' comes after '9')."""
    if all(c.lstrip("-").isdigit() for c in classes):
        return sorted(classes, key=int)
    return sorted(classes)


def _require_files(label_file: Path, pairs: list[tuple[Path, str, int]]) -> None:
    """Every listed file must exist: a wrong ``root`` would otherwise silently skip the whole set."""
    missing = [(p, n) for p, _, n in pairs if not p.is_file()]
    if missing:
        p, n = missing[0]
        more = f" and {len(missing) - 1} more listed file(s)" if len(missing) > 1 else ""
        raise LabelFileError(label_file, n, f"lists {p}, which does not exist{more}",
                             "set dataset.root to the folder the listed paths are relative to, "
                             "or delete the lines of files you do not have")
