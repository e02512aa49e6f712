"""Images: a procedural shapes dataset, an image-folder dataset, pixel patches, PNG grids.

The default data is generated on first use: 32x32 RGB scenes of one coloured shape on a
coloured background, class = shape. It is written as PNG files in ImageFolder layout under the
cache directory, so the same folder dataset class that serves users' data reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from core.io_utils import cache_dir, to_uint8  # to_uint8: the FID protocol's rounding, also for PNGs
from core.tokens import SampleWriter, Tokenizer
from modalities.splits import align_classes, carve_heldout, check_eval_root, split_seed

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SHAPES = ("circle", "square", "triangle", "cross")


#################################################################################
#                               Image-folder dataset                            #
#################################################################################


def load_image(path: Path, image_size: int, channels: int = 3) -> Tensor:
    """Read an image file as ``(channels, S, S)`` float in [-1, 1]: RGB (3) or grey (1), shorter side to S,
    centre crop."""
    with Image.open(path) as img:
        img = img.convert({3: "RGB", 1: "L"}[channels])
        scale = image_size / min(img.size)
        if scale != 1.0:
            img = img.resize((max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))),
                             Image.BICUBIC)
        left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
        arr = np.asarray(img, dtype=np.float32).reshape(img.height, img.width, channels)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


class ImageFolderDataset(Dataset):
    """Class-per-subfolder images (``root/<class>/<file>.png``), e.g. an ImageNet-style tree.

    ``eval_root`` (a folder of held-out images in the same layout) or ``eval_fraction`` (that
    fraction of the files, by a hash of their paths, kept out of training) is the reference of
    every metric (modalities/splits.py).

    Every file is opened once at construction; unreadable or truncated files are skipped,
    counted in ``skipped`` as ``(path, reason)`` and reported, not fatal. A folder with no
    readable image is an error before training starts.
    """

    def __init__(self, root: str | Path, image_size: int = 32, verify: bool = True, eval_root: str | Path | None = None,
                 eval_fraction: float = 0.0, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError(f"modality.dataset.channels={channels}: must be 3 (RGB) or 1 (grey)")
        self.root = Path(root).expanduser()
        self.image_size, self.channels = image_size, int(channels)
        self.verify = verify
        self.eval_root = check_eval_root(eval_root, self.root)  # held-out reference folder, or None
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (set modality.dataset.root)")
        self.class_names = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.class_names:
            raise ValueError(f"image folder {self.root} has no class subfolders; expected root/<class>/<image>.png")
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[tuple[str, str]] = []
        for label, name in enumerate(self.class_names):
            for path in sorted((self.root / name).rglob("*")):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                    continue
                reason = _check_image(path) if verify else None
                if reason:
                    self.skipped.append((str(path), reason))
                else:
                    self.samples.append((path, label))
        if self.skipped:
            log.warning("skipped %d unreadable image(s) in %s, first: %s (%s)", len(self.skipped), self.root,
                        *self.skipped[0])
        if not self.samples:
            raise ValueError(f"image folder {self.root} contains no readable images ({len(self.skipped)} skipped)")
        if eval_fraction:  # a deterministic part of the files becomes the held-out reference
            self.samples, self.eval_root = carve_heldout(self.root, self.samples, self.class_names, eval_fraction,
                                                         eval_root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.image_size, self.channels), label

    def reference_dataset(self) -> "ImageFolderDataset | None":
        """The held-out items (``eval_root``) as a data set, or None when none was given."""
        if self.eval_root is None:
            return None
        return align_classes(ImageFolderDataset(self.eval_root, self.image_size, self.verify,
                                                channels=self.channels), self.class_names, attr="samples")

    def reference_root(self) -> Path | None:
        """Folder every metric compares samples with (see modalities/splits.py)."""
        return self.eval_root


def _check_image(path: Path) -> str | None:
    """``None`` if the file decodes fully, else the reason it does not."""
    try:
        with Image.open(path) as img:
            img.load()  # decodes every byte: catches truncation that verify() lets through
        return None
    except Exception as exc:  # PIL raises many types for bad files
        return f"{type(exc).__name__}: {exc}"


#################################################################################
#                         The embedded procedural dataset                        #
#################################################################################


def shape_params(rng: np.random.Generator, shape: str, size: int,
                 radius: tuple[float, float] = (0.2, 0.32)) -> dict:
    """The random draws of one scene, in the generator's order (drawing space: 4x ``size``).

    ``bg``/``fg`` RGB 0-255, ``r`` radius and ``cx``/``cy`` centre in drawing pixels, ``angle``
    (square, triangle). Captions (modalities/captions.py) are derived from these values.
    """
    s = 4 * size
    bg = tuple(int(c) for c in rng.integers(0, 96, 3))
    fg = tuple(int(c) for c in rng.integers(128, 256, 3))
    r = rng.uniform(*radius) * s
    cx, cy = rng.uniform(r + 2, s - r - 2, 2)
    angle = None
    if shape == "square":
        angle = rng.uniform(0, math.pi / 2)
    elif shape == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
    return {"shape": shape, "size": size, "bg": bg, "fg": fg, "r": float(r), "cx": float(cx), "cy": float(cy),
            "angle": angle, "radius_range": tuple(radius)}


def render_shape(p: dict) -> Image.Image:
    """Draw the scene of :func:`shape_params` at 4x and downsample for anti-aliased edges."""
    shape, size, fg, r, cx, cy, angle = p["shape"], p["size"], p["fg"], p["r"], p["cx"], p["cy"], p["angle"]
    s = 4 * size
    img = Image.new("RGB", (s, s), p["bg"])
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "square":
        pts = [(cx + r * math.cos(angle + k * math.pi / 2), cy + r * math.sin(angle + k * math.pi / 2)) for k in range(4)]
        draw.polygon(pts, fill=fg)
    elif shape == "triangle":
        pts = [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
        draw.polygon(pts, fill=fg)
    elif shape == "cross":
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img.resize((size, size), Image.LANCZOS)


def shapes_item_params(seed: int, per_class: int, image_size: int, radius=None) -> list[dict]:
    """Generator parameters of every item of :func:`generate_shapes`, in folder order (class, index).

    The one definition of the draw order: the generator renders these, captions describe them.
    """
    radius = DEFAULT_RADIUS if radius is None else tuple(radius)
    out = []
    for label, shape in enumerate(SHAPES):
        rng = np.random.default_rng([seed, label])
        out += [shape_params(rng, shape, image_size, radius) for _ in range(per_class)]
    return out


DEFAULT_RADIUS = (0.2, 0.32)


def _check_radius(radius) -> tuple[float, float]:
    lo, hi = (float(v) for v in radius)
    if not 0.0 < lo <= hi <= 0.45:
        raise ValueError(f"modality.dataset.radius={list(radius)}: need 0 < low <= high <= 0.45 (fractions of the side)")
    return lo, hi


def generate_shapes(root: Path, per_class: int, image_size: int, seed: int,
                    radius: tuple[float, float] = DEFAULT_RADIUS) -> None:
    """Write the dataset into ``root`` atomically (temp folder + rename) with a manifest of hashes."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        digest = hashlib.sha256()
        for shape in SHAPES:
            (tmp / shape).mkdir()
        for k, params in enumerate(shapes_item_params(seed, per_class, image_size, radius)):
            path = tmp / params["shape"] / f"{params['shape']}_{k % per_class:05d}.png"
            render_shape(params).save(path, format="PNG")
            digest.update(path.read_bytes())
        manifest = {"per_class": per_class, "image_size": image_size, "seed": seed, "classes": list(SHAPES),
                    "count": per_class * len(SHAPES), "sha256": digest.hexdigest()}
        if tuple(radius) != DEFAULT_RADIUS:  # absent for the default, so existing caches stay valid
            manifest["radius"] = list(radius)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if root.exists():  # a stale or damaged copy: keep nothing half-written
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify_shapes(root: Path, per_class: int, image_size: int, seed: int,
                  radius: tuple[float, float] = DEFAULT_RADIUS) -> str | None:
    """``None`` if ``root`` holds exactly the expected generated files, else what is wrong."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest"
    manifest = json.loads(manifest_path.read_text())
    expected = {"per_class": per_class, "image_size": image_size, "seed": seed, "classes": list(SHAPES),
                "radius": None if tuple(radius) == DEFAULT_RADIUS else list(radius)}
    if any(manifest.get(k) != v for k, v in expected.items()):
        return f"generated with other settings {manifest}"
    files = [root / s / f"{s}_{i:05d}.png" for s in SHAPES for i in range(per_class)]
    present = sum(1 for _ in root.glob("*/*.png"))
    if present != manifest["count"] or not all(f.is_file() for f in files):
        return f"{present} files on disk, manifest says {manifest['count']}"
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    if digest.hexdigest() != manifest["sha256"]:
        return "file contents do not match the manifest hash"
    return None


class ShapesDataset(ImageFolderDataset):
    """The embedded default: coloured circles, squares, triangles and crosses (class = shape).

    Generated deterministically from ``seed`` into ``root`` (default: the cache directory) on first
    use, verified (file count and content hash) on every later use, regenerated if damaged.
    The held-out reference (``heldout_per_class`` per shape) and the classifier's split are
    drawn the same way with their own seeds (:func:`modalities.splits.split_seed`).
    ``radius`` is the range of the shape's radius as a fraction of the image side; larger shapes
    cover more pixels, so a small model learns their outlines in fewer steps (docs/recipes.md).
    """

    def __init__(self, root: str | Path | None = None, image_size: int = 32, per_class: int = 500, seed: int = 0,
                 heldout_per_class: int = 100, radius: tuple[float, float] | list[float] = DEFAULT_RADIUS):
        radius = _check_radius(radius)
        root = Path(root).expanduser() if root else cache_dir("data")
        tag = "" if radius == DEFAULT_RADIUS else f"-r{radius[0]:g}-{radius[1]:g}"
        folder = root / f"shapes{image_size}-n{per_class}-s{seed}{tag}"
        problem = verify_shapes(folder, per_class, image_size, seed, radius) if folder.exists() else "missing"
        if problem:
            if problem != "missing":
                log.warning("regenerating %s: %s", folder, problem)
            generate_shapes(folder, per_class, image_size, seed, radius)
        self.data_root, self.seed, self.heldout_per_class = root, int(seed), int(heldout_per_class)
        self.per_class, self.radius = int(per_class), radius
        super().__init__(folder, image_size, verify=False)  # content hash already checked

    def split(self, name: str, per_class: int) -> "ShapesDataset":
        """Another split of the same generator (``heldout`` | ``classifier``), in its own folder."""
        return ShapesDataset(self.data_root, self.image_size, per_class, split_seed(self.seed, name),
                             heldout_per_class=0, radius=self.radius)

    def reference_dataset(self) -> "ShapesDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root


#################################################################################
#                              Tokenizer and writer                              #
#################################################################################


class PixelPatchTokenizer(Tokenizer):
    """Non-overlapping ``p x p`` pixel patches, flattened in (c, p1, p2) order, row-major tokens.

    The (c, p1, p2) order matches the released Self-Flow model's pre-patchified input.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, patch_size: int = 4):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size, self.channels, self.patch_size = image_size, channels, patch_size
        self.grid = image_size // patch_size
        self.token_dim = channels * patch_size * patch_size

    def encode(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"expected images (B, {self.channels}, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        p = self.patch_size
        return rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)

    def decode(self, tokens: Tensor) -> Tensor:
        p = self.patch_size
        return rearrange(tokens, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=self.grid, p1=p, p2=p)

    def coords(self) -> Tensor:
        h, w = torch.meshgrid(torch.arange(self.grid), torch.arange(self.grid), indexing="ij")
        return torch.stack([torch.zeros_like(h), h, w], dim=-1).reshape(-1, 3)


class ImageGridWriter(SampleWriter):
    """Writes one PNG grid of all samples (rows ordered as given)."""

    media = "image"  # what a live logger (core/loggers.py) shows these samples as

    def __init__(self, nrow: int | None = None, padding: int = 2):
        self.nrow, self.padding = nrow, padding

    def write(self, samples: Tensor, labels: Tensor | None, out_dir: Path, stem: str) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        nrow = self.nrow or max(1, int(math.ceil(math.sqrt(samples.shape[0]))))
        grid = make_grid(to_uint8(samples), nrow=nrow, padding=self.padding)  # (3, H, W) uint8
        path = out_dir / f"{stem}_grid.png"
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
        return {"grid": path}
