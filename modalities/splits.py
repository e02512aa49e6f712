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


def in_heldout(relative_path: str, fraction: float) -> bool:
    """Whether a file belongs to the held-out part of a folder split with ``eval_fraction``.

    Decided by the SHA-256 of the file's path relative to the data root alone: the same file
    is always on the same side, whatever else the folder holds or the order of listing.
    """
    h = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big")
    return h < fraction * 2 ** 64


def carve_heldout(root: Path, items: list, class_names: list[str], fraction: float, eval_root) -> tuple[list, Path]:
    """Split a folder data set's ``items`` (tuples starting ``(path, label, ...)``) by ``eval_fraction``.

    Returns the training items and a folder of links to the held-out files,
    ``$SELFFLOW_CACHE/heldout/<root name>-<hash>/<class>/<file>``, which the metrics read
    like any reference folder. Errors name ``modality.dataset.eval_fraction``.
    """
    from modalities.media_common import cache_root, generate_once

    if not 0 < fraction < 1:
        raise ValueError(f"modality.dataset.eval_fraction={fraction} must be in (0, 1), or 0 for no split")
    if eval_root not in (None, ""):
        raise ValueError("set modality.dataset.eval_root or modality.dataset.eval_fraction, not both")
    rel = [item[0].relative_to(root).as_posix() for item in items]
    held = [i for i, r in enumerate(rel) if in_heldout(r, fraction)]
    train = [item for i, item in enumerate(items) if i not in set(held)]
    if not held or not train:
        raise ValueError(f"modality.dataset.eval_fraction={fraction} leaves {len(train)} training and {len(held)} "
                         f"held-out files of {len(items)} in {root}; choose a fraction that leaves both non-empty")

    def build(out: Path) -> int:
        for name in class_names:  # every class, so labels of the reference match the training ones
            (out / name).mkdir(parents=True, exist_ok=True)
        for i in held:
            link = out / class_names[items[i][1]] / rel[i].replace("/", "__")
            os.symlink(Path(items[i][0]).resolve(), link)
        return len(held)

    params = {"root": str(Path(root).resolve()), "fraction": fraction, "held": [rel[i] for i in held],
              "classes": [class_names[items[i][1]] for i in held]}
    folder = generate_once(f"{Path(root).name}-heldout", params, build, root=cache_root() / "heldout")
    log.info("eval_fraction=%s: %d of %d files held out of training -> %s", fraction, len(held), len(items), folder)
    return train, folder
