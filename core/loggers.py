"""Live experiment loggers: TensorBoard or offline Weights & Biases, beside ``metrics.jsonl``.

``metrics.jsonl`` stays the source of truth (reports, the benchmark suite and resume read it);
a live logger is a view for watching a run while it trains. ``train.logger``:

* ``none`` (default): nothing beyond ``metrics.jsonl``.
* ``tensorboard``: ``<run_dir>/tensorboard/`` event files through ``torch.utils.tensorboard``
  (``pip install -e ".[tensorboard]"``); every logged scalar, plus the periodic samples: image
  grids, audio clips, and videos as a frame montage (no moviepy needed).
* ``wandb``: ``wandb.init(mode="offline", dir=<run_dir>)``: nothing leaves the machine; upload
  later with ``wandb sync <run_dir>/wandb/offline-run-*`` if you want.

Only rank 0 creates a logger (the trainer passes ``enabled=False`` elsewhere).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

LOGGERS = ("none", "tensorboard", "wandb")
MAX_MEDIA = 16  # samples per logged grid / montage
MAX_AUDIO = 4   # clips per logging step


class NullLogger:
    """Logs nothing (``train.logger=none`` and every rank but 0)."""

    def log_scalars(self, step: int, scalars: dict) -> None:
        pass

    def log_samples(self, step: int, samples: Tensor, media: str, **info) -> None:
        pass

    def close(self) -> None:
        pass


def _scalars(record: dict) -> dict[str, float]:
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool):
            continue
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _unit(x: Tensor) -> Tensor:
    """Decoded samples in [-1, 1] -> [0, 1] floats on the CPU."""
    return ((x.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)


def video_montage(clips: Tensor, max_frames: int = 16) -> Tensor:
    """``(B, T, 3, H, W)`` in [-1, 1] -> one ``(3, B*H, T*W)`` image in [0, 1]: a row of frames per clip."""
    clips = _unit(clips[:, :max_frames])
    B, T, C, H, W = clips.shape
    return clips.permute(2, 0, 3, 1, 4).reshape(C, B * H, T * W)


class TensorBoardLogger(NullLogger):
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 -- optional extra
        except ImportError as exc:
            raise ImportError("train.logger=tensorboard needs the tensorboard package: "
                              "pip install -e \".[tensorboard]\" (or train.logger=none)") from exc
        self.dir = Path(run_dir) / "tensorboard"
        # purge_step: on resume, TensorBoard hides events at or past the resume step that an
        # interrupted earlier process wrote, as metrics.jsonl drops those lines
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=purge_step)

    def log_scalars(self, step: int, scalars: dict) -> None:
        for key, value in _scalars(scalars).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_samples(self, step: int, samples: Tensor, media: str, **info) -> None:
        samples = samples[:MAX_MEDIA]
        if media == "image" and samples.dim() == 4:
            self.writer.add_images("samples", _unit(samples), step)
        elif media == "video" and samples.dim() == 5:
            self.writer.add_image("samples_video_frames", video_montage(samples[:8]), step)
        elif media == "audio" and samples.dim() == 2:
            for i, clip in enumerate(samples[:MAX_AUDIO]):
                self.writer.add_audio(f"samples_audio/{i}", clip.detach().float().cpu().clamp(-1, 1), step,
                                      sample_rate=int(info.get("sample_rate", 16000)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbOfflineLogger(NullLogger):
    def __init__(self, run_dir: Path, config: dict | None = None, name: str | None = None):
        try:
            import wandb  # noqa: PLC0415 -- optional
        except ImportError as exc:
            raise ImportError("train.logger=wandb needs the wandb package: pip install wandb "
                              "(it runs offline here; or train.logger=tensorboard / none)") from exc
        self.wandb = wandb
        self.run = wandb.init(mode="offline", dir=str(run_dir), config=config or {}, name=name,
                              settings=wandb.Settings(silent=True))

    def log_scalars(self, step: int, scalars: dict) -> None:
        self.run.log(_scalars(scalars), step=step)

    def log_samples(self, step: int, samples: Tensor, media: str, **info) -> None:
        samples = samples[:MAX_MEDIA]
        if media == "image" and samples.dim() == 4:
            items = [self.wandb.Image(_unit(s).permute(1, 2, 0).numpy()) for s in samples]
        elif media == "video" and samples.dim() == 5:
            items = [self.wandb.Image(video_montage(samples[:8]).permute(1, 2, 0).numpy())]
        elif media == "audio" and samples.dim() == 2:
            items = [self.wandb.Audio(c.float().cpu().numpy(), sample_rate=int(info.get("sample_rate", 16000)))
                     for c in samples[:MAX_AUDIO]]
        else:
            return
        self.run.log({"samples": items}, step=step)

    def close(self) -> None:
        self.run.finish()


def make_logger(kind: str, run_dir: Path, enabled: bool = True, config: dict | None = None,
                start_step: int = 0):
    """The live logger named by ``train.logger``; a :class:`NullLogger` when disabled (other ranks).

    ``start_step`` > 0 (a resumed run) purges later events a crashed process left behind.
    """
    if kind not in LOGGERS:
        raise ValueError(f"train.logger={kind!r}: must be one of {LOGGERS}")
    if not enabled or kind == "none":
        return NullLogger()
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir, purge_step=start_step or None)
    return WandbOfflineLogger(run_dir, config=config, name=Path(run_dir).name)
