"""Captions for every data set: generated from the embedded generators' own parameters, read from
sidecar files or a CSV for folder data sets.

Embedded data sets (deterministic: the same seed gives the same captions, derived from the very
values the item was rendered from):

* shapes: ``"a small red triangle in the upper left on a dark blue background"`` -- size (the
  radius' third of its range), foreground colour, shape, position (the centre's third of its
  allowed range, per axis), background colour. The draws are replayed with the generator's own
  :func:`modalities.image.shape_params`.
* moving digits: ``"a green digit 7 moving up and left slowly"`` -- colour (hue), digit, initial
  direction of motion (8 compass directions, image y pointing down), speed; from the stored
  ``trajectories.json``.
* instruments: ``"a high flute melody of three notes"`` / ``"a single low organ note"`` --
  timbre, pitch register (the mean note's third of the instrument's two-octave range), single note
  or melody with its note count; replayed with :func:`modalities.audio.synth.render`. Loudness is
  not captioned: the generator peak-normalises every clip.

Each embedded caption comes with its attributes (``{"shape": "triangle", "colour": "red", ...}``),
which the prompt-adherence metric (app/prompt_metrics.py) checks samples against.

Folder data sets: ``<file>.txt`` beside each item (its whole text is the caption), or a CSV
(``conditioning.captions_csv``) with a path column (relative to the data root) and a caption column.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
_HUE_EDGES = (15, 45, 70, 165, 200, 255, 290, 345)  # degrees: upper edge of each hue (red wraps)
SHAPE_COLOURS = (*HUES, "white")
SIZES = ("small", "medium", "large")
ROWS, COLS = ("upper", "middle", "lower"), ("left", "centre", "right")
DIRECTIONS = ("right", "down and right", "down", "down and left", "left", "up and left", "up", "up and right")
REGISTERS = ("low", "middle", "high")
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


def hue_name(h: float) -> str:
    """Hue in [0, 1) -> one of :data:`HUES`."""
    deg = (h * 360.0) % 360.0
    if deg >= _HUE_EDGES[-1]:
        return "red"
    return HUES[next(i for i, edge in enumerate(_HUE_EDGES) if deg < edge)]


def colour_name(rgb, background: bool = False) -> str:
    """RGB (0-255) -> a colour word. Unsaturated colours are ``white`` (foreground) or ``grey`` /
    ``black`` (background); backgrounds (all channels < 96) get ``dark``."""
    r, g, b = (float(c) / 255.0 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if background:
        if v < 0.12:
            return "black"
        return "grey" if s < 0.35 else f"dark {hue_name(h)}"
    return "white" if s < 0.2 else hue_name(h)


def _third(u: float) -> int:
    return min(2, max(0, int(u * 3)))


def position_phrase(row: int, col: int) -> str:
    if (row, col) == (1, 1):
        return "in the centre"
    if row == 1:
        return f"on the {COLS[col]}"
    if col == 1:
        return "at the top" if row == 0 else "at the bottom"
    return f"in the {ROWS[row]} {COLS[col]}"


# --------------------------------------------------------------------------- shapes

def shape_attributes(p: dict) -> dict:
    """Attributes of one scene from :func:`modalities.image.shape_params`."""
    s = 4 * p["size"]
    lo, hi = p["radius_range"]
    size_u = (p["r"] / s - lo) / max(hi - lo, 1e-9)
    span = max(s - 2 * p["r"] - 4, 1e-9)  # the centre is drawn in [r + 2, s - r - 2]
    col, row = (_third((c - p["r"] - 2) / span) for c in (p["cx"], p["cy"]))
    return {"shape": p["shape"], "colour": colour_name(p["fg"]), "size": SIZES[_third(size_u)],
            "row": ROWS[row], "column": COLS[col], "background": colour_name(p["bg"], background=True)}


def shape_caption(a: dict) -> str:
    pos = position_phrase(ROWS.index(a["row"]), COLS.index(a["column"]))
    return f"a {a['size']} {a['colour']} {a['shape']} {pos} on a {a['background']} background"


def _shapes_items(dataset) -> list[dict]:
    from modalities.image import SHAPES, shapes_item_params  # noqa: PLC0415

    params = shapes_item_params(dataset.seed, dataset.per_class, dataset.image_size, dataset.radius)
    out = []
    for path, _ in dataset.samples:  # files are <shape>/<shape>_<i>.png, the i-th draw of that class
        shape, index = path.parent.name, int(path.stem.rsplit("_", 1)[1])
        out.append(shape_attributes(params[SHAPES.index(shape) * dataset.per_class + index]))
    return out


# --------------------------------------------------------------------------- moving digits

def digit_attributes(digit: int, meta: dict) -> dict:
    colour = meta["colour"]
    h, _, _ = colorsys.rgb_to_hsv(*colour)
    vx, vy = meta["vel"]
    angle = math.atan2(vy, vx) % (2 * math.pi)  # image y points down: positive vy moves down
    direction = DIRECTIONS[int(round(angle / (math.pi / 4))) % 8]
    speed = "slowly" if math.hypot(vx, vy) < 1.75 else "quickly"
    return {"digit": str(digit), "colour": hue_name(h), "direction": direction, "speed": speed}


def digit_caption(a: dict) -> str:
    return f"a {a['colour']} digit {a['digit']} moving {a['direction']} {a['speed']}"


def _digit_items(dataset) -> list[dict]:
    meta = json.loads((Path(dataset.root) / "trajectories.json").read_text())
    out = []
    for path, label, _ in dataset.items:
        rel = f"{path.parent.name}/{path.name}"
        out.append(digit_attributes(int(path.parent.name), meta[rel]))
    return out


# --------------------------------------------------------------------------- instruments

def instrument_attributes(inst: str, steps: list[int]) -> dict:
    register = REGISTERS[_third(float(np.mean(steps)) / 22.0)]  # steps span 0..21 above the base
    return {"instrument": inst, "register": register, "notes": len(steps)}


def instrument_caption(a: dict) -> str:
    if a["notes"] == 1:
        return f"a single {a['register']} {a['instrument']} note"
    return f"a {a['register']} {a['instrument']} melody of {COUNT_WORDS[a['notes']]} notes"


def _instrument_items(dataset) -> list[dict]:
    """Replays each clip's draws; a split that re-drew a clip (see ``generate_instruments``) is
    matched by rendering attempts until the file's hash agrees."""
    from modalities.audio.io import write_wav  # noqa: PLC0415
    from modalities.audio.synth import INSTRUMENTS, render  # noqa: PLC0415
    from modalities.media_common import file_sha256  # noqa: PLC0415

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.wav"
        for path, _ in dataset.items:
            inst, i = path.parent.name, int(path.stem.rsplit("_", 1)[1])
            c, target = INSTRUMENTS.index(inst), file_sha256(path)
            for attempt in range(100):
                key = [dataset.seed, c, i] if attempt == 0 else [dataset.seed, c, i, attempt]
                steps: list[int] = []
                write_wav(probe, render(inst, np.random.default_rng(key), dataset.sample_rate, dataset.num_samples,
                                        steps), dataset.sample_rate)
                if file_sha256(probe) == target:
                    break
            else:
                raise ValueError(f"{path}: no generator draw reproduces this file; regenerate the data set")
            out.append(instrument_attributes(inst, steps))
    return out


# --------------------------------------------------------------------------- dispatch

def embedded_attributes(dataset) -> list[dict] | None:
    """Per-item attributes of an embedded data set, or None for any other data set."""
    from modalities.audio.synth import SynthInstrumentsDataset  # noqa: PLC0415
    from modalities.image import ShapesDataset  # noqa: PLC0415
    from modalities.video.sprites import MovingDigitsDataset  # noqa: PLC0415

    if isinstance(dataset, ShapesDataset):
        return _shapes_items(dataset)
    if isinstance(dataset, MovingDigitsDataset):
        return _digit_items(dataset)
    if isinstance(dataset, SynthInstrumentsDataset):
        return _instrument_items(dataset)
    return None


def caption_from_attributes(a: dict) -> str:
    if "shape" in a:
        return shape_caption(a)
    if "digit" in a:
        return digit_caption(a)
    return instrument_caption(a)


def item_paths(dataset) -> list[Path]:
    """Source file of every item of a folder data set (image, video or audio)."""
    rows = getattr(dataset, "samples", None) or getattr(dataset, "items", None)
    if rows is None:
        raise ValueError(f"{type(dataset).__name__} has no list of files (samples/items); give captions another way")
    return [Path(r[0]) for r in rows]


def folder_captions(dataset, csv_path: str | None = None, path_column: str = "path",
                    caption_column: str = "caption") -> list[str]:
    """Captions of a folder data set: a CSV when given, else ``<file>.txt`` beside each item."""
    paths = item_paths(dataset)
    root = Path(dataset.root)
    if csv_path:
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise FileNotFoundError(f"conditioning.captions_csv={csv_path} does not exist")
        with csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (path_column, caption_column) if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{csv_path} has no column {missing[0]!r} (columns: {reader.fieldnames}); set "
                                 f"conditioning.path_column / conditioning.caption_column")
            table = {str(Path(row[path_column])): row[caption_column].strip() for row in reader}
        out = []
        for p in paths:
            rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
            if rel not in table:
                raise ValueError(f"{csv_path} has no caption for {rel}; add a row '{rel},<caption>'")
            out.append(table[rel])
        return out
    out = []
    for p in paths:
        side = p.with_suffix(".txt")
        if not side.is_file() and p.is_symlink():  # a held-out folder links the media files only
            side = p.resolve().with_suffix(".txt")
        if not side.is_file():
            raise FileNotFoundError(f"no caption for {p}: write {side} (one caption) or give "
                                    f"conditioning.captions_csv=<csv with {path_column},{caption_column} columns>")
        out.append(" ".join(side.read_text().split()))
    return out


def dataset_captions(dataset, csv_path: str | None = None, path_column: str = "path",
                     caption_column: str = "caption") -> tuple[list[str], list[dict] | None]:
    """``(captions, attributes or None)`` for every item of ``dataset``, in item order."""
    if csv_path is None:
        attrs = embedded_attributes(dataset)
        if attrs is not None:
            return [caption_from_attributes(a) for a in attrs], attrs
    return folder_captions(dataset, csv_path, path_column, caption_column), None


class CaptionedDataset(Dataset):
    """``(raw, caption tensor)`` items: the base data set with each label replaced by its encoded
    caption (``encode(list[str]) -> (B, ...)``, done once). Other attributes read through to the
    base (``num_classes``, ``root``, ``reference_dataset``, ``skipped``...)."""

    def __init__(self, base, captions: list[str], encoded: Tensor, attributes: list[dict] | None = None):
        if len(captions) != len(base) or encoded.shape[0] != len(base):
            raise ValueError(f"{len(captions)} captions / {encoded.shape[0]} encodings for {len(base)} items")
        self.base, self.captions, self.encoded, self.attributes = base, captions, encoded, attributes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        raw, _ = self.base[index]
        return raw, self.encoded[index]

    def __getattr__(self, name):
        if name in ("base", "captions", "encoded", "attributes") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)


def class_labels_of(dataset) -> Tensor:
    """Class label of every item (no decoding): from the file lists of the folder data sets."""
    rows = getattr(dataset, "samples", None) or getattr(dataset, "items", None)
    return torch.tensor([int(r[1]) for r in rows], dtype=torch.long)
