"""Which real items a metric compares generated samples with.

Scoring samples against the items the model trained on rewards memorisation: on a small set
trained for many epochs a copy of the training set has the best possible Frechet distance.
So every data set offers a *held-out reference*, items the model never saw:

* the embedded generated sets (shapes, moving digits, instruments) draw three independent
  splits from the same generator, each with its own seed and cache folder:
  ``training`` (the configured ``seed``), ``heldout`` (``seed + HELDOUT_SEED_OFFSET``, the
  reference of every metric) and ``classifier`` (``seed + CLASSIFIER_SEED_OFFSET``, only used
  to train the domain classifiers of :mod:`modalities.classifier`);
* folder data sets take ``eval_root`` (``modality.dataset.eval_root``), a second folder in
  the same layout, or ``eval_fraction``: that fraction of the files (chosen by a hash of each
  file's relative path, so deterministic) leaves training and becomes the reference. Without
  either the metrics fall back to the training items, with a warning and a ``reference`` field
  that says so.

The generator seeds each item by ``(seed, class, index)``, so the splits share no item.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1000
CLASSIFIER_SEED_OFFSET = 2000
NO_HELDOUT = "training items (no held-out set given)"


def split_seed(seed: int, split: str) -> int:
    """The generator seed of ``split`` (training | heldout | classifier) for a data set seeded ``seed``."""
    offsets = {"training": 0, "heldout": HELDOUT_SEED_OFFSET, "classifier": CLASSIFIER_SEED_OFFSET}
    if split not in offsets:
        raise ValueError(f"split must be one of {sorted(offsets)}, got {split!r}")
    return int(seed) + offsets[split]


def reference_for(dataset) -> tuple[Path | None, str]:
    """``(reference folder, description)`` for scoring samples of a model trained on ``dataset``.

    Uses ``dataset.reference_root()`` (the held-out split) when the data set has one, else the
    training folder ``dataset.root`` with a warning. The description goes into eval.json.
    """
    ref = dataset.reference_root() if hasattr(dataset, "reference_root") else None
    if ref is not None:
        return Path(ref), f"held-out split {ref}"
    root = getattr(dataset, "root", None)
    log.warning("no held-out reference for %s: metrics compare samples with the TRAINING items, which rewards "
                "memorisation; set modality.dataset.eval_root to a folder of held-out items",
                type(dataset).__name__)
    return (Path(root) if root is not None else None), NO_HELDOUT


def check_eval_root(eval_root, root) -> Path | None:
    """Validate ``modality.dataset.eval_root``: an existing folder other than the training root."""
    if eval_root in (None, ""):
        return None
    path = Path(eval_root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"modality.dataset.eval_root={path} is not a folder; give a folder of held-out "
                                "items in the same layout as the training root, or null")
    if root is not None and path.resolve() == Path(root).expanduser().resolve():
        raise ValueError(f"modality.dataset.eval_root={path} is the training root; a held-out reference must "
                         "hold other items")
    return path


def align_classes(reference, class_names: list[str], attr: str = "items"):
    """Number ``reference``'s classes as the training set does (``class_names``), in place; return it.

    A reference folder lists its classes by folder name, sorted, and only those that have files:
    a label-file training set (ESC-50 orders classes by ``target``) or a reference missing a
    class would otherwise number the same class differently. A class the training set does not
    know is an error naming the reference folder.
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(reference.class_names) - set(index))
    if unknown:
        raise ValueError(f"{reference.root}: held-out classes {unknown} are not among the training classes; "
                         "the reference folder must use the training set's class names")
    items = getattr(reference, attr)
    setattr(reference, attr, [(item[0], index[reference.class_names[item[1]]], *item[2:]) for item in items])
    reference.class_names = list(class_names)
    if "num_classes" in vars(reference):  # a plain attribute (a property derives it from class_names)
        reference.num_classes = len(class_names)
    return reference


def in_heldout(relative_path: str, fraction: float) -> bool:
    """Whether a file belongs to the held-out part of a folder split with ``eval_fraction``.

    Decided by the SHA-256 of the file's path relative to the data root alone: the same file
    is always on the same side, whatever else the folder holds or the order of listing.
    """
    h = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big")
    return h < fraction * 2 ** 64


def _link_folder(root: Path, paths: list, classes: list[str], class_names: list[str], key: dict) -> Path:
    """A cached folder ``<class>/<file>`` of symlinks to ``paths`` (held-out files of a folder data set).

    Every class gets a folder, even an empty one, so the reference numbers its classes exactly as
    the training set does. The cache entry is keyed by the root, the files and ``key``.
    """
    from modalities.media_common import cache_root, generate_once

    rel = [Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else Path(p).as_posix()
           for p in paths]

    def build(out: Path) -> int:
        for name in class_names:
            (out / name).mkdir(parents=True, exist_ok=True)
        for path, r, cls in zip(paths, rel, classes):
            os.symlink(Path(path).resolve(), out / cls / r.strip("/").replace("/", "__"))
        return len(paths)

    params = {"root": str(Path(root).resolve()), **key, "held": rel, "classes": list(classes)}
    return generate_once(f"{Path(root).name}-heldout", params, build, root=cache_root() / "heldout")


def heldout_from_folds(root: Path, items: list, class_names: list[str], eval_folds, eval_root, eval_fraction, *,
                       extensions, kind: str, label_file, **label_options) -> tuple[list, Path]:
    """Split a folder data set by its label file's folds (``modality.dataset.eval_folds``).

    The rows of ``eval_folds`` (read from the same ``label_file`` with ``label_options``) leave the
    training ``items`` (so ``folds`` may stay null: training then uses every other fold) and become
    the reference folder of links. Errors name ``modality.dataset.eval_folds``.
    """
    from modalities.media_common import scan_labelled_files

    if eval_root not in (None, "") or eval_fraction:
        raise ValueError("set one of modality.dataset.eval_root, eval_fraction or eval_folds, not several")
    if isinstance(eval_folds, (int, str)):  # eval_folds=5 on the command line
        eval_folds = [eval_folds]
    held, names = scan_labelled_files(root, extensions, label_file, kind=kind, folds=list(eval_folds), **label_options)
    held_pairs = [(path, names[label]) for path, label in held]  # class names come from every row
    held_paths = {Path(p).resolve() for p, _ in held_pairs}
    train = [item for item in items if Path(item[0]).resolve() not in held_paths]
    if not held_pairs or not train:
        raise ValueError(f"modality.dataset.eval_folds={list(eval_folds)} leaves {len(train)} training and "
                         f"{len(held_pairs)} held-out files in {root}; choose evaluation folds that leave both non-empty")
    folder = _link_folder(root, [p for p, _ in held_pairs], [c for _, c in held_pairs], class_names,
                          {"folds": [str(f) for f in eval_folds]})
    log.info("eval_folds=%s: %d files held out (%d removed from training) -> %s", list(eval_folds), len(held_pairs),
             len(items) - len(train), folder)
    return train, folder


def carve_heldout(root: Path, items: list, class_names: list[str], fraction: float, eval_root) -> tuple[list, Path]:
    """Split a folder data set's ``items`` (tuples starting ``(path, label, ...)``) by ``eval_fraction``.

    Returns the training items and a folder of links to the held-out files,
    ``$SELFFLOW_CACHE/heldout/<root name>-<hash>/<class>/<file>``, which the metrics read
    like any reference folder. Errors name ``modality.dataset.eval_fraction``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"modality.dataset.eval_fraction={fraction} must be in (0, 1), or 0 for no split")
    if eval_root not in (None, ""):
        raise ValueError("set modality.dataset.eval_root or modality.dataset.eval_fraction, not both")
    rel = [item[0].relative_to(root).as_posix() for item in items]
    held = [i for i, r in enumerate(rel) if in_heldout(r, fraction)]
    held_set = set(held)
    train = [item for i, item in enumerate(items) if i not in held_set]
    if not held or not train:
        raise ValueError(f"modality.dataset.eval_fraction={fraction} leaves {len(train)} training and {len(held)} "
                         f"held-out files of {len(items)} in {root}; choose a fraction that leaves both non-empty")

    folder = _link_folder(root, [items[i][0] for i in held], [class_names[items[i][1]] for i in held], class_names,
                          {"fraction": fraction})
    log.info("eval_fraction=%s: %d of %d files held out of training -> %s", fraction, len(held), len(items), folder)
    return train, folder
