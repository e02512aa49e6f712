"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) as an embedded image benchmark: 10 classes, grey.

The raw files are the official IDX files of Debian's ``dataset-fashion-mnist`` package, obtained
offline and verified by ``python -m modalities.data fetch fashion_mnist`` (modalities/data).
Three splits, each written once as PNGs in ImageFolder layout under ``$SELFFLOW_CACHE/data``:

* ``training``: ``per_class`` items per class from the official **train** file;
* ``classifier``: ``classifier_per_class`` other items per class from the official train file
  (the domain classifier's own split: carved from train, never from test);
* ``heldout``: ``heldout_per_class`` items per class from the official **test** file, the
  reference of every metric.

Within the train file each class's 6,000 indices are permuted once with a fixed seed
(:data:`PERMUTATION_SEED`): training takes the permutation from the front, the classifier split
from the back, so the two never share an item for any ``per_class + classifier_per_class <=
6000``. ``seed`` picks *which* training items (a second permutation applied to the front part),
so another data seed is another draw of the data, still disjoint from the classifier split.
Every split folder has ``items.json``: each PNG's source file, index in it and pixel SHA-256,
which the disjointness tests read.

Images are stored at ``image_size``: 28 is native, 32 pads 2 black pixels a side (LeNet's
convention, keeps every pixel), any other size resamples with Lanczos (16 keeps the garment's
silhouette and most of its texture).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.io_utils import cache_dir
from modalities.data import SOURCES, require
from modalities.image import ImageFolderDataset
from modalities.media_common import generate_once

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# folder names: the label first, so ImageFolderDataset's sorted class folders number them as the IDX labels do
FOLDERS = tuple(f"{i}_{c.lower().replace('/', '_').replace(' ', '_')}" for i, c in enumerate(CLASSES))
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
PER_CLASS = {"train": 6000, "test": 1000}
PERMUTATION_SEED = 20171025  # fixed: the train/classifier boundary must not move with the data seed
GENERATOR_VERSION = 1


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (LeCun's MNIST format) as a uint8 array: images ``(N, 28, 28)`` or labels ``(N,)``."""
    raw = gzip.open(path).read()
    if len(raw) < 8 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex()}); re-run "
                         "`python -m modalities.data fetch fashion_mnist`")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values (truncated file)")
    return data.reshape(dims)


def load_split(source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,) uint8)`` of the official ``train`` or ``test`` file."""
    root = require("fashion_mnist")
    images, labels = (read_idx(root / f) for f in FILES[source])
    return images, labels


def split_indices(labels: np.ndarray, part: str, count: int, seed: int, source_per_class: int) -> list[int]:
    """Source indices of ``count`` items per class for split ``part`` (``training`` | ``classifier`` | ``heldout``).

    Returned class by class (label order), so folder order and labels agree.
    """
    rng = np.random.default_rng(PERMUTATION_SEED)
    out = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if len(idx) != source_per_class:
            raise ValueError(f"Fashion-MNIST class {c} has {len(idx)} items, expected {source_per_class}")
        idx = idx[rng.permutation(len(idx))]
        if part == "classifier":
            out += idx[len(idx) - count:].tolist()
        else:  # training (from the front of train) or heldout (test): the data seed draws which items
            front = idx[:source_per_class - (0 if part == "heldout" else MAX_CLASSIFIER_PER_CLASS)]
            pick = np.random.default_rng([seed, c]).permutation(len(front))[:count]
            out += sorted(front[pick].tolist())
    return out


MAX_CLASSIFIER_PER_CLASS = 2000  # the classifier split's share of each class of train (the back of the permutation)


def _resize(img: np.ndarray, size: int) -> Image.Image:
    if size == 32:
        img = np.pad(img, 2)
    pil = Image.fromarray(img, mode="L")
    return pil if pil.size[0] == size else pil.resize((size, size), Image.LANCZOS)


def _build(out: Path, part: str, count: int, seed: int, image_size: int) -> int:
    images, labels = load_split("test" if part == "heldout" else "train")
    indices = split_indices(labels, part, count, seed, PER_CLASS["test" if part == "heldout" else "train"])
    for name in FOLDERS:
        (out / name).mkdir()
    items = []
    for k, i in enumerate(indices):
        label = int(labels[i])
        path = out / FOLDERS[label] / f"{FOLDERS[label]}_{k % count:05d}.png"
        _resize(images[i], image_size).save(path, format="PNG")
        items.append({"file": path.relative_to(out).as_posix(), "source": FILES["test" if part == "heldout"
                                                                                    else "train"][0],
                      "index": int(i), "label": label, "pixels_sha256": hashlib.sha256(images[i].tobytes()).hexdigest()})
    (out / "items.json").write_text(json.dumps(items))
    return len(indices) + 1  # the PNGs and items.json


class FashionMNISTDataset(ImageFolderDataset):
    """Fashion-MNIST items as ``(channels, S, S)`` in [-1, 1] (``channels=1``: grey; 3: grey replicated).

    ``part``: which split this object serves (``training`` by default; the others come from
    :meth:`split` and :meth:`reference_dataset`).
    """

    def __init__(self, root: str | Path | None = None, image_size: int = 16, per_class: int = 1000, seed: int = 0,
                 heldout_per_class: int = 100, classifier_per_class: int = 2000, channels: int = 1,
                 part: str = "training"):
        limits = {"training": PER_CLASS["train"] - MAX_CLASSIFIER_PER_CLASS, "classifier": MAX_CLASSIFIER_PER_CLASS,
                  "heldout": PER_CLASS["test"]}
        if part not in limits:
            raise ValueError(f"part must be one of {sorted(limits)}, got {part!r}")
        for key, value, limit in (("per_class", per_class, limits[part]),
                                  ("heldout_per_class", heldout_per_class, PER_CLASS["test"]),
                                  ("classifier_per_class", classifier_per_class, MAX_CLASSIFIER_PER_CLASS)):
            if not 0 <= int(value) <= limit or (key == "per_class" and int(value) == 0):
                raise ValueError(f"modality.dataset.{key}={value}: must be in [1, {limit}] for Fashion-MNIST's "
                                 f"{part} split" if key == "per_class" else
                                 f"modality.dataset.{key}={value}: must be in [0, {limit}]")
        if channels not in (1, 3):
            raise ValueError(f"modality.dataset.channels={channels}: must be 1 (grey) or 3 (grey replicated to RGB)")
        data_root = Path(root).expanduser() if root else cache_dir("data")
        params = {"version": GENERATOR_VERSION, "part": part, "per_class": int(per_class), "seed": int(seed),
                  "image_size": int(image_size), "source": SOURCES["fashion_mnist"].tree_sha256}
        folder = generate_once(f"fashion_mnist{image_size}-{part}",
                               params, lambda out: _build(out, part, int(per_class), int(seed), int(image_size)),
                               root=data_root)
        self.data_root, self.seed, self.part = data_root, int(seed), part
        self.per_class, self.heldout_per_class = int(per_class), int(heldout_per_class)
        self.classifier_per_class, self.channels = int(classifier_per_class), int(channels)
        super().__init__(folder, image_size, verify=False, channels=channels)
        self.display_names = list(CLASSES)

    def items(self) -> list[dict]:
        """Each PNG's source file, source index, label and pixel hash (``items.json``)."""
        return json.loads((self.root / "items.json").read_text())

    def split(self, name: str, per_class: int) -> "FashionMNISTDataset":
        """The ``classifier`` (carved from train) or ``heldout`` (from test) split with ``per_class`` items."""
        return FashionMNISTDataset(self.data_root, self.image_size, per_class, self.seed, heldout_per_class=0,
                                   classifier_per_class=min(per_class, MAX_CLASSIFIER_PER_CLASS),
                                   channels=self.channels, part=name)

    def reference_dataset(self) -> "FashionMNISTDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root
