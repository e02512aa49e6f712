"""Audio sample writer: one WAV of all clips in a row, a spectrogram PNG grid, per-clip WAVs."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from core.tokens import SampleWriter
from modalities.audio.io import write_wav


class AudioSampleWriter(SampleWriter):
    """Args:
        sample_rate: rate of the waveforms the tokenizer decodes to.
        gap_s: silence between clips in the combined WAV.
        max_plot: at most this many spectrograms in the PNG.
        n_fft, hop_length, n_mels: the display spectrogram (independent of the tokenizer).
        per_clip: also write ``<out_dir>/<stem>_clips/<i>_c<label>.wav`` (file-based evaluators).
    """

    media = "audio"  # what a live logger (core/loggers.py) shows these samples as

    def __init__(self, sample_rate: int = 16000, gap_s: float = 0.25, max_plot: int = 8, n_fft: int = 1024,
                 hop_length: int = 128, n_mels: int = 64, per_clip: bool = True):
        self.sample_rate, self.gap_s, self.max_plot, self.per_clip = int(sample_rate), gap_s, max_plot, per_clip
        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels

    def write(self, samples: Tensor, labels: Tensor | None, out_dir: Path, stem: str) -> dict[str, Path]:
        """``samples (B, L)`` waveforms in [-1, 1] -> files; returns kind -> path."""
        if samples.dim() != 2:
            raise ValueError(f"AudioSampleWriter expects waveforms (B, L), got {tuple(samples.shape)}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        samples = samples.detach().float().cpu()
        gap = torch.zeros(int(self.gap_s * self.sample_rate))
        joined = torch.cat([torch.cat([s, gap]) for s in samples])
        paths = {"audio": write_wav(out_dir / f"{stem}.wav", joined, self.sample_rate)}
        paths["spectrogram"] = self._plot(samples[: self.max_plot], labels, out_dir / f"{stem}_spec.png")
        if self.per_clip:
            clip_dir = out_dir / f"{stem}_clips"
            for i, s in enumerate(samples):
                tag = f"_c{int(labels[i])}" if labels is not None else ""
                write_wav(clip_dir / f"{i:04d}{tag}.wav", s, self.sample_rate)
            paths["clips"] = clip_dir
        return paths

    def _plot(self, samples: Tensor, labels: Tensor | None, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torchaudio.transforms as AT

        mel = AT.MelSpectrogram(self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels)
        db = 10 * torch.log10(mel(samples) + 1e-10)                      # (B, M, F)
        n = samples.shape[0]
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
        top = float(db.max())
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(db[i].numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top)
                ax.set_title(f"#{i}" + (f" class {int(labels[i])}" if labels is not None else ""), fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path
