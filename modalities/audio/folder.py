"""Audio-folder dataset for user data: one folder per class (or a label file), any of
wav/flac/ogg/mp3, mixed to mono, resampled to the target rate, cropped or zero-padded to a
fixed length. Files are probed at construction, so broken ones are skipped, counted and
reported before training, in the main process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from core.progress import bar
from modalities.audio.io import AUDIO_EXTENSIONS, probe, read_audio
from modalities.splits import align_classes, carve_heldout, check_eval_root, heldout_from_folds
from modalities.media_common import MediaError, SkipLog, load_or_next, require_nonempty, scan_labelled_files

log = logging.getLogger(__name__)
CROPS = ("random", "center", "start")


def crop_or_pad(wave: Tensor, num_samples: int, crop: str) -> Tensor:
    """Fix the length of ``(L,)``: crop (random/center/start) or zero-pad at the end."""
    L = wave.shape[-1]
    if L < num_samples:
        return F.pad(wave, (0, num_samples - L))
    if L == num_samples:
        return wave
    if crop == "random":
        s = int(torch.randint(0, L - num_samples + 1, ()).item())
    elif crop == "center":
        s = (L - num_samples) // 2
    else:
        s = 0
    return wave[s:s + num_samples]


class AudioFolderDataset(Dataset):
    """Mono waveforms ``(num_samples,)`` in [-1, 1] with an integer class label.

    Args:
        root: folder with one sub-folder per class, or the base of ``label_file`` paths.
        sample_rate: target rate; other rates are resampled (or skipped if ``resample=False``).
        num_samples: output length (e.g. 16000 = 1 s at 16 kHz); shorter files are zero-padded.
        crop: ``random`` (training), ``center`` or ``start`` for longer files.
        label_file: optional label file instead of class folders (``path,class`` lines, UCF-101
            split lists, ESC-50 csv or a CSV; see modalities/label_files.py).
        label_format, folds, path_column, label_column, fold_column, class_index: how to read
            ``label_file`` (``auto`` detects the format; ``folds`` keeps only those folds).
        resample: if False, a file at another rate is skipped with a message instead.
        min_seconds: skip files shorter than this (0 = keep all, pad short ones).
        extensions: accepted file extensions.
        probe: check every file's header at construction (cheap; recommended).
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int = 16000, num_samples: int = 16000,
                 crop: str = "random", label_file: str | None = None, resample: bool = True,
                 min_seconds: float = 0.0, extensions: tuple[str, ...] = AUDIO_EXTENSIONS, probe: bool = True,
                 eval_root: str | os.PathLike | None = None,
                 eval_fraction: float = 0.0, eval_folds: list | None = None,
                 label_format: str = "auto", folds: list | None = None, path_column: str | None = None,
                 label_column: str | None = None, fold_column: str | None = None,
                 class_index: str | None = None, progress: bool = True):
        if crop not in CROPS:
            raise ValueError(f"dataset.crop must be one of {CROPS}, got {crop!r}")
        if num_samples < 1 or sample_rate < 1:
            raise ValueError(f"dataset.num_samples and sample_rate must be >= 1, got {num_samples}, {sample_rate}")
        self.root = Path(root).expanduser()
        self.sample_rate, self.num_samples, self.crop = int(sample_rate), int(num_samples), crop
        self.eval_root = check_eval_root(eval_root, self.root)  # held-out reference folder, or None
        if eval_folds is not None and label_file is None:
            raise ValueError(f"{self.root}: modality.dataset.eval_folds needs a dataset.label_file with a fold "
                             "column (ESC-50's esc50.csv, or a CSV with fold_column)")
        self._kwargs = dict(sample_rate=sample_rate, num_samples=num_samples,
                            crop="center" if crop == "random" else crop, label_file=None, resample=resample,
                            min_seconds=min_seconds, extensions=extensions, probe=probe)
        self.resample, self.min_seconds = resample, float(min_seconds)
        self.skipped = SkipLog()
        self._broken: set[int] = set()
        files, self.class_names = scan_labelled_files(
            self.root, extensions, label_file, kind="audio", label_format=label_format, folds=folds,
            path_column=path_column, label_column=label_column, fold_column=fold_column, class_index=class_index)
        self.num_classes = len(self.class_names)
        self.items: list[tuple[Path, int]] = []
        for path, label in bar(files, desc=f"scanning {self.root.name}", unit="file", enabled=progress and probe):
            if probe:
                try:
                    self._check(path, _probe(path))
                except MediaError as e:
                    self.skipped.add(path, e.detail)
                    continue
            self.items.append((path, label))
        require_nonempty(self.items, self.root, self.skipped, "audio")
        if eval_folds is not None:  # the label file's evaluation folds become the held-out reference
            self.items, self.eval_root = heldout_from_folds(
                self.root, self.items, self.class_names, eval_folds, eval_root, eval_fraction, extensions=extensions,
                kind="audio", label_file=label_file, label_format=label_format, path_column=path_column,
                label_column=label_column, fold_column=fold_column, class_index=class_index)
        elif eval_fraction:  # a deterministic part of the files becomes the held-out reference
            self.items, self.eval_root = carve_heldout(self.root, self.items, self.class_names, eval_fraction,
                                                       eval_root)
        if len(self.skipped):
            log.warning("%s: %s", self.root, self.skipped.summary())

    def _check(self, path: Path, info) -> None:
        if info.sample_rate != self.sample_rate and not self.resample:
            raise MediaError(path, f"sample rate is {info.sample_rate} Hz, expected {self.sample_rate} Hz",
                             "resample the file or set dataset.resample=true")
        if info.seconds < self.min_seconds:
            raise MediaError(path, f"is {info.seconds:.3f} s long, shorter than dataset.min_seconds={self.min_seconds}",
                             "lower dataset.min_seconds or remove the file")

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[Tensor, int]:
        """Read item ``index``; raises :class:`MediaError` for a broken file."""
        path, label = self.items[index]
        wave, sr = read_audio(path, self.sample_rate if self.resample else None)
        if sr != self.sample_rate and not self.resample:
            raise MediaError(path, f"sample rate is {sr} Hz, expected {self.sample_rate} Hz",
                             "resample the file or set dataset.resample=true")
        peak = float(wave.abs().max()) if wave.numel() else 0.0
        if peak > 1.0:  # resampling can overshoot slightly; keep the documented [-1, 1] range
            wave = wave / peak
        return crop_or_pad(wave, self.num_samples, self.crop).contiguous(), label

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return load_or_next(index, self.items, self._broken, self.load, self.skipped, self.root, "audio")

    def reference_dataset(self) -> "AudioFolderDataset | None":
        """The held-out items (``eval_root``, same settings, deterministic crop), or None."""
        if self.eval_root is None:
            return None
        return align_classes(AudioFolderDataset(self.eval_root, **self._kwargs), self.class_names)

    def reference_root(self) -> Path | None:
        """Folder every metric compares samples with (see modalities/splits.py)."""
        return self.eval_root


def _probe(path: Path):
    return probe(path)
