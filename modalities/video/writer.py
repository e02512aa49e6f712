"""Video sample writer: a tiled MP4 and GIF of the batch, a frame-strip PNG, and per-clip MP4s."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from core.tokens import SampleWriter
from modalities.video.io import to_uint8, write_mp4


def tile(clips: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """uint8 clips ``(B, T, H, W, 3)`` -> one grid clip ``(T, rows*(H+pad)+pad, cols*(W+pad)+pad, 3)``."""
    B, T, H, W, _ = clips.shape
    rows = math.ceil(B / cols)
    out = np.full((T, rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 255, np.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        out[:, y:y + H, x:x + W] = clips[i]
    return out


def upscale(frames: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour upscale of the two axes before the colour axis (keeps pixels crisp)."""
    return frames if k <= 1 else frames.repeat(k, axis=-3).repeat(k, axis=-2)


class VideoSampleWriter(SampleWriter):
    """Args:
        fps: frame rate of the MP4/GIF.
        max_grid: at most this many clips in the tiled MP4/GIF.
        strip_rows: clips shown in the frame-strip PNG (one row per clip, one column per frame).
        scale: nearest-neighbour upscale for the grid and strip (32x32 clips are tiny on screen).
        per_clip: also write each clip as its own MP4 under ``<out_dir>/<stem>_clips/`` (for
            file-based evaluators and for looking at single samples).
    """

    media = "video"  # what a live logger (core/loggers.py) shows these samples as

    def __init__(self, fps: float = 8.0, max_grid: int = 16, strip_rows: int = 8, scale: int = 4,
                 per_clip: bool = True):
        self.fps, self.max_grid, self.strip_rows, self.scale, self.per_clip = fps, max_grid, strip_rows, scale, per_clip

    def write(self, samples: Tensor, labels: Tensor | None, out_dir: Path, stem: str) -> dict[str, Path]:
        """``samples (B, T, 3, H, W)`` in [-1, 1] -> files; returns kind -> path."""
        if samples.dim() != 5:
            raise ValueError(f"VideoSampleWriter expects (B, T, 3, H, W), got {tuple(samples.shape)}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        clips = np.stack([to_uint8(c) for c in samples])  # (B, T, H, W, 3)
        B = clips.shape[0]
        paths: dict[str, Path] = {}

        n = min(B, self.max_grid)
        grid = upscale(tile(clips[:n], cols=math.ceil(math.sqrt(n))), self.scale)
        paths["video"] = write_mp4(out_dir / f"{stem}.mp4", grid, fps=self.fps)
        gif = out_dir / f"{stem}.gif"
        images = [Image.fromarray(f) for f in grid]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / self.fps), loop=0)
        paths["gif"] = gif

        # Frame strip: rows = clips, columns = frames, so motion reads left to right.
        k = min(B, self.strip_rows)
        T, H, W = clips.shape[1:4]
        strip = tile(clips[:k].reshape(k * T, 1, H, W, 3), cols=T)[0]
        paths["strip"] = out_dir / f"{stem}_strip.png"
        Image.fromarray(upscale(strip, self.scale)).save(paths["strip"])

        if self.per_clip:
            clip_dir = out_dir / f"{stem}_clips"
            for i in range(B):
                tag = f"_c{int(labels[i])}" if labels is not None else ""
                write_mp4(clip_dir / f"{i:04d}{tag}.mp4", clips[i], fps=self.fps)
            paths["clips"] = clip_dir
        return paths
