"""Video-folder dataset for user data (UCF-101-style trees or a label file).

Clips are sampled uniformly: ``num_frames`` frames ``frame_stride`` apart, starting at a
random, centre or first position; frames are resized (short side) and centre-cropped to
``size``. Every file is probed once at construction (decord, ~ms per file) so that broken
files and files too short for the clip are skipped, counted and reported before training,
in the main process, where the report can see them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from modalities.splits import align_classes, carve_heldout, check_eval_root, heldout_from_folds
from core.progress import bar
from modalities.media_common import MediaError, SkipLog, load_or_next, require_nonempty, scan_labelled_files
from modalities.video.io import VIDEO_EXTENSIONS, probe, read_frames

log = logging.getLogger(__name__)
STARTS = ("random", "center", "first")


def resize_crop(clip: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``(T, 3, h, w)`` so it covers ``size`` (short side), then centre-crop to ``size``."""
    h, w = clip.shape[-2:]
    th, tw = size
    if (h, w) != (th, tw):
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        if (nh, nw) != (h, w):
            clip = F.interpolate(clip, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - th) // 2, (nw - tw) // 2
        clip = clip[..., top:top + th, left:left + tw].contiguous()
    return clip


class VideoFolderDataset(Dataset):
    """Clips ``(num_frames, 3, H, W)`` in [-1, 1] with an integer class label.

    Args:
        root: folder with one sub-folder per class (files at any depth below it), or the
            folder that the paths in ``label_file`` are relative to.
        num_frames: frames per clip.
        frame_stride: step between sampled frames (2 = every other frame).
        size: output side (int) or ``(height, width)``.
        start: ``random`` (training), ``center`` or ``first`` clip start.
        label_file: optional label file instead of class folders (``path,class`` lines, UCF-101
            split lists, ESC-50 csv or a CSV; see modalities/label_files.py).
        label_format, folds, path_column, label_column, fold_column, class_index: how to read
            ``label_file`` (``auto`` detects the format; ``folds`` keeps only those folds).
        backend: ``auto`` (decord, PyAV fallback), ``decord`` or ``pyav``.
        extensions: accepted file extensions.
        probe: check every file at construction (recommended; skips broken/short files early).
        cache_frames: keep decoded uint8 frames in memory (per process / DataLoader worker), so
            later epochs skip decoding. Only with a deterministic ``start`` (``center``/``first``);
            meant for small sets such as the generated moving digits (640 clips = 31 MB).
    """

    def __init__(self, root: str | os.PathLike, num_frames: int = 16, frame_stride: int = 1,
                 size: int | tuple[int, int] = 32, start: str = "random", label_file: str | None = None,
                 backend: str = "auto", extensions: tuple[str, ...] = VIDEO_EXTENSIONS, probe: bool = True,
                 cache_frames: bool = False, eval_root: str | os.PathLike | None = None,
                 eval_fraction: float = 0.0, eval_folds: list | None = None,
                 label_format: str = "auto", folds: list | None = None, path_column: str | None = None,
                 label_column: str | None = None, fold_column: str | None = None,
                 class_index: str | None = None, progress: bool = True):
        if start not in STARTS:
            raise ValueError(f"dataset.start must be one of {STARTS}, got {start!r}")
        if num_frames < 1 or frame_stride < 1:
            raise ValueError(f"num_frames and frame_stride must be >= 1, got {num_frames}, {frame_stride}")
        self.root = Path(root).expanduser()
        self.num_frames, self.frame_stride, self.start, self.backend = num_frames, frame_stride, start, backend
        self.eval_root = check_eval_root(eval_root, self.root)  # held-out reference folder, or None
        if eval_folds is not None and label_file is None:
            raise ValueError(f"{self.root}: modality.dataset.eval_folds needs a dataset.label_file with a fold "
                             "column (ESC-50's esc50.csv, or a CSV with fold_column)")
        self._kwargs = dict(num_frames=num_frames, frame_stride=frame_stride, size=size,
                            start="center" if start == "random" else start, label_file=None, backend=backend,
                            extensions=extensions, probe=probe)
        if cache_frames and start == "random":
            raise ValueError("dataset.cache_frames needs a deterministic dataset.start (center or first), not random")
        self._frame_cache: dict[int, np.ndarray] | None = {} if cache_frames else None
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.span = (num_frames - 1) * frame_stride + 1  # frames a clip covers in the source
        self.skipped = SkipLog()
        self._broken: set[int] = set()  # items that failed after probing; never retried
        files, self.class_names = scan_labelled_files(
            self.root, extensions, label_file, kind="video", label_format=label_format, folds=folds,
            path_column=path_column, label_column=label_column, fold_column=fold_column, class_index=class_index)
        self.num_classes = len(self.class_names)
        # items: (path, label, frames in file or -1 when not probed)
        self.items: list[tuple[Path, int, int]] = []
        for path, label in bar(files, desc=f"scanning {self.root.name}", unit="file", enabled=progress and probe):
            if not probe:
                self.items.append((path, label, -1))
                continue
            try:
                n = self._check_length(path, self._probe(path).num_frames)
            except MediaError as e:
                self.skipped.add(path, e.detail if e.path == str(path) else str(e))
                continue
            self.items.append((path, label, n))
        require_nonempty(self.items, self.root, self.skipped, "video")
        if eval_folds is not None:  # the label file's evaluation folds become the held-out reference
            self.items, self.eval_root = heldout_from_folds(
                self.root, self.items, self.class_names, eval_folds, eval_root, eval_fraction, extensions=extensions,
                kind="video", label_file=label_file, label_format=label_format, path_column=path_column,
                label_column=label_column, fold_column=fold_column, class_index=class_index)
        elif eval_fraction:  # a deterministic part of the files becomes the held-out reference
            self.items, self.eval_root = carve_heldout(self.root, self.items, self.class_names, eval_fraction,
                                                       eval_root)
        if len(self.skipped):
            log.warning("%s: %s", self.root, self.skipped.summary())

    def _probe(self, path: Path):
        return probe(path, self.backend)

    def _check_length(self, path: Path, n: int) -> int:
        if n < self.span:
            raise MediaError(path, f"clip has {n} frames, needs {self.span} "
                                   f"(num_frames={self.num_frames} x frame_stride={self.frame_stride})",
                             "lower dataset.num_frames/frame_stride or remove the file")
        return n

    @property
    def labels(self) -> list[int]:
        return [label for _, label, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def frame_indices(self, n: int) -> np.ndarray:
        """Source frame indices of one clip from a video of ``n`` frames."""
        last_start = n - self.span
        if self.start == "random":
            s = int(torch.randint(0, last_start + 1, ()).item())
        elif self.start == "center":
            s = last_start // 2
        else:
            s = 0
        return s + self.frame_stride * np.arange(self.num_frames)

    def load(self, index: int) -> tuple[Tensor, int]:
        """Decode item ``index``; raises :class:`MediaError` for a broken file."""
        path, label, n = self.items[index]
        frames = self._frame_cache.get(index) if self._frame_cache is not None else None
        if frames is None:
            if n < 0:
                n = self._check_length(path, self._probe(path).num_frames)
            frames = read_frames(path, self.frame_indices(n), self.backend)   # (T, h, w, 3) uint8
            if self._frame_cache is not None:
                self._frame_cache[index] = frames
        # numpy for the per-clip conversion: tiny torch ops in the main process (num_workers=0)
        # pay intra-op threading overhead that was 10x the decode time on a busy 2-core machine.
        clip = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
        clip = torch.from_numpy(clip / np.float32(127.5) - np.float32(1))    # (T, 3, h, w) in [-1, 1]
        return resize_crop(clip, self.size), label

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return load_or_next(index, self.items, self._broken, self.load, self.skipped, self.root, "video")

    def reference_dataset(self) -> "VideoFolderDataset | None":
        """The held-out items (``eval_root``, same settings, deterministic crop), or None."""
        if self.eval_root is None:
            return None
        return align_classes(VideoFolderDataset(self.eval_root, **self._kwargs), self.class_names)

    def reference_root(self) -> Path | None:
        """Folder every metric compares samples with (see modalities/splits.py)."""
        return self.eval_root
