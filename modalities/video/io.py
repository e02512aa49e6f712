"""Video file I/O: probe, read frames (decord, PyAV fallback), write H.264 MP4.

torchvision 0.29 has no ``io.read_video``/``write_video`` (docs/environment.md, "Video I/O: decord and PyAV"), so we
read with decord (fast random access) and fall back to PyAV, which reads any container
FFmpeg knows (webm/mkv from some encoders that decord rejects). We write with PyAV.

Every failure is a :class:`MediaError` naming the file, so datasets can skip it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import io_utils
from core.io_utils import atomic_path
from modalities.media_common import MediaError

VIDEO_EXTENSIONS = ("mp4", "avi", "webm", "mkv", "mov", "m4v")
BACKENDS = ("auto", "decord", "pyav")


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    height: int
    width: int
    fps: float


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "video file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "video file is empty (0 bytes)", "re-copy or delete the file")


def probe(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """Frame count, size and rate of a video, without decoding every frame (decord)."""
    path = Path(path)
    _check_file(path)
    errors = []
    for name in _order(backend):
        try:
            return _PROBES[name](path)
        except MediaError:
            raise
        except Exception as e:  # decord/av raise many unrelated types for broken files
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise MediaError(path, "not a readable video (" + "; ".join(errors) + ")",
                     "the file is truncated, corrupt or not a video; re-encode it or remove it")


def read_frames(path: str | os.PathLike, indices: list[int] | np.ndarray, backend: str = "auto") -> np.ndarray:
    """Decode the frames at ``indices`` -> uint8 array ``(len(indices), H, W, 3)`` RGB."""
    path = Path(path)
    _check_file(path)
    indices = [int(i) for i in indices]
    errors = []
    for name in _order(backend):
        try:
            frames = _READERS[name](path, indices)
        except MediaError:
            raise
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if frames.shape[0] != len(indices):
            errors.append(f"{name}: decoded {frames.shape[0]} of {len(indices)} frames")
            continue
        return frames
    raise MediaError(path, "could not decode frames " + f"{indices[:1]}..{indices[-1:]} (" + "; ".join(errors) + ")",
                     "the file is truncated or corrupt; re-encode it or remove it")


def _order(backend: str) -> tuple[str, ...]:
    if backend not in BACKENDS:
        raise ValueError(f"video backend must be one of {BACKENDS}, got {backend!r}")
    return ("decord", "pyav") if backend == "auto" else (backend,)


# --- decord -------------------------------------------------------------------------------

def _decord_reader(path: Path):
    import decord

    # One thread per reader: DataLoader workers provide the parallelism.
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _decord_probe(path: Path) -> VideoInfo:
    vr = _decord_reader(path)
    h, w = vr[0].shape[:2] if len(vr) else (0, 0)
    return VideoInfo(len(vr), int(h), int(w), float(vr.get_avg_fps()))


def _decord_read(path: Path, indices: list[int]) -> np.ndarray:
    vr = _decord_reader(path)
    if indices and max(indices) >= len(vr):
        raise MediaError(path, f"has {len(vr)} frames, frame {max(indices)} requested")
    return vr.get_batch(indices).asnumpy()


# --- PyAV ---------------------------------------------------------------------------------

def _pyav_probe(path: Path) -> VideoInfo:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = stream.frames
        if n <= 0:  # containers without a frame count (webm, some mkv): count by decoding
            n = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        return VideoInfo(int(n), stream.codec_context.height, stream.codec_context.width, rate)


def _pyav_read(path: Path, indices: list[int]) -> np.ndarray:
    import av

    wanted = set(indices)
    last = max(indices) if indices else -1
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    if len(got) < len(wanted):
        raise MediaError(path, f"has {len(got)} of the requested frames (last requested {last})")
    return np.stack([got[i] for i in indices])


_PROBES = {"decord": _decord_probe, "pyav": _pyav_probe}
_READERS = {"decord": _decord_read, "pyav": _pyav_read}


# --- writing ------------------------------------------------------------------------------

def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0, qp: int = 10) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` as H.264 MP4 (yuv420p; odd sizes are padded).

    Generated data sets must be bit-exact across runs. x264 with CRF rate control gave
    different bytes for identical calls here (its macroblock-tree pass); a constant
    quantiser ``qp`` with ``threads=1`` is bit-exact (tested). We convert RGB to YUV
    ourselves so the colour math is fixed too.
    The file is written to a temporary name and renamed when complete.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4 expects uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    # yuv420p needs even sizes: pad by edge replication rather than fail.
    ph, pw = frames.shape[1] % 2, frames.shape[2] % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    with atomic_path(path, keep_suffix=True) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": str(qp), "threads": "1", "preset": "medium"}
        for i, img in enumerate(frames):
            frame = _yuv_frame(av, rgb_to_yuv420p(img))
            frame.pts = i  # explicit timestamps (in 1/fps units): x264's rate control reads them
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _yuv_frame(av, planes: list[np.ndarray]):
    """A yuv420p ``av.VideoFrame`` from three planes, zero-filling each row's alignment padding."""
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, planes):
        buf = np.zeros((data.shape[0], plane.line_size), np.uint8)
        buf[:, : data.shape[1]] = data
        plane.update(buf.tobytes())
    return frame


def rgb_to_yuv420p(img: np.ndarray) -> list[np.ndarray]:
    """uint8 RGB ``(H, W, 3)`` (even H, W) -> [Y (H, W), Cb (H/2, W/2), Cr (H/2, W/2)], BT.601 limited range.

    BT.601 limited range is what decoders assume for streams without colour tags, so
    decord and PyAV both convert back to the same RGB.
    """
    rgb = img.astype(np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    H, W = y.shape

    def half(c: np.ndarray) -> np.ndarray:  # 2x2 average for 4:2:0 chroma
        return c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))

    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, half(cb), half(cr))]


def to_uint8(clip) -> np.ndarray:
    """Float clip ``(T, 3, H, W)`` in [-1, 1] -> uint8 ``(T, H, W, 3)``."""
    import torch

    return io_utils.to_uint8(torch.as_tensor(clip).cpu()).permute(0, 2, 3, 1).numpy()  # the FID protocol's rounding
