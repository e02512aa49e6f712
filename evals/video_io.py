"""Video sources for FVD / fid_frame: (N, T, 3, H, W) tensors and folders of video files.

Files are decoded with PyAV (torchvision 0.29 has no read_video; docs/environment.md). Everything becomes
uint8 (T, H, W, 3) clips, quantised from [-1, 1] like images (evals/images.py) and like
StyleGAN-V's generator wrapper (``x * 127.5 + 128``, clamped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.io_utils import to_uint8

from .provenance import subset

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"}


def quantize_videos(x) -> np.ndarray:
    """(N, T, 3, H, W) float in [-1, 1] or uint8 (N, T, H, W, 3) -> uint8 (N, T, H, W, 3)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if x.dtype == torch.uint8:
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be (N, T, H, W, 3), got {tuple(x.shape)}")
        return x.cpu().numpy()
    if x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"float videos must be (N, T, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
    q = to_uint8(x.detach().cpu())  # the FID protocol's rounding (core/io_utils.py)
    return q.permute(0, 1, 3, 4, 2).contiguous().numpy()


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file -> uint8 (T, H, W, 3)."""
    import av

    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)


def write_video(path, frames: np.ndarray, fps: int = 8) -> None:
    """uint8 (T, H, W, 3) -> lossless-ish H.264 mp4 (crf 0), used by tests and the CLI round trip."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        s.options = {"crf": "0"}
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def iter_videos(source, limit: int | None = None, skips=None, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 (T, H, W, 3) clips from a tensor/array or a folder of video files."""
    if isinstance(source, (torch.Tensor, np.ndarray)):
        arr = quantize_videos(source)
        yield from subset(arr, limit)
        return
    root = Path(source)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no video files ({', '.join(sorted(VIDEO_EXTS))}) found")
    n = 0
    for f in subset(files, limit):
        if limit and n >= limit:
            return
        try:
            clip = read_video(f, max_frames)
        except Exception as e:  # corrupt file: skip, count, report
            if skips is None:
                raise ValueError(f"{f}: unreadable video ({e})") from e
            skips.add(f, e)
            continue
        n += 1
        yield clip
