"""Image sources for FID: tensors, ADM sample npz files and image folders, as uint8 NHWC batches.

Everything is converted to uint8 first because that is what the reference evaluator scores:
ADM's evaluator reads ``arr_0`` (uint8, NHWC) and DiT/SiT/REPA write their samples that way.
Quantisation of model outputs in [-1, 1] follows DiT's ``sample_ddp.py``:
``clamp(127.5 * x + 128, 0, 255).to(uint8)`` = ``clamp((x + 1) * 127.5 + 0.5, 0, 255)`` truncated,
i.e. rounding to nearest. (REPA's ``generate.py`` and Self-Flow's ``sample.py`` truncate without
the +0.5; the difference is at most one grey level.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.io_utils import SkipLog, atomic_path, to_uint8  # noqa: F401 -- SkipLog: used by fid/fvd/fad

from .provenance import subset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def quantize(x) -> np.ndarray:
    """Model output (N, 3 or 1, H, W) float in [-1, 1] -> uint8 NHWC numpy with 3 channels. uint8 passes through."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    # Grey images (one channel) are replicated to RGB: what PIL's convert("RGB") does to a grey
    # reference file, so samples and references of a grey data set meet the network the same way.
    if x.dtype == torch.uint8:
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x.expand(-1, -1, -1, 3)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be NHWC with 3 (or 1) channels, got {tuple(x.shape)}")
        return x.cpu().contiguous().numpy()
    if x.ndim == 4 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float images must be (N, 3, H, W) (or (N, 1, H, W) grey) in [-1, 1], got {tuple(x.shape)}")
    q = to_uint8(x.detach().cpu())  # the FID protocol's rounding (core/io_utils.py)
    return q.permute(0, 2, 3, 1).contiguous().numpy()


def save_adm_npz(path, images) -> Path:
    """Write samples as ADM's evaluator expects: key ``arr_0``, uint8 (N, H, W, 3); atomic."""
    arr = quantize(images)
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, arr_0=arr)
    return path


def list_image_files(root) -> list[Path]:
    """All image files under root (ImageFolder layout or flat), sorted for a stable order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))}) found")
    return files


def read_image(path) -> np.ndarray:
    """One image file -> uint8 (H, W, 3). Greyscale / RGBA are converted to RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def iter_images(source, batch_size: int = 50, limit: int | None = None,
                skips: SkipLog | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 NHWC batches from a tensor/array, an ADM npz (``arr_0``), an image folder, or
    an iterator that already yields uint8 NHWC batches (video frames).

    A folder batch is a list of HWC arrays, which may differ in size: the Inception wrapper
    resizes each image to 299 itself.
    """
    if hasattr(source, "__next__"):
        yield from source
        return
    if isinstance(source, (torch.Tensor, np.ndarray)):
        arr = subset(quantize(source), limit)
        for i in range(0, len(arr), batch_size):
            yield arr[i:i + batch_size]
        return
    p = Path(source)
    if p.is_dir():
        files = subset(list_image_files(p), limit)
        batch = []
        for f in files:
            try:
                batch.append(read_image(f))
            except Exception as e:  # corrupt file: skip, count, report
                if skips is None:
                    raise ValueError(f"{f}: unreadable image ({e})") from e
                skips.add(f, e)
                continue
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    if p.suffix == ".npz":
        with np.load(p) as f:
            if "arr_0" not in f.files:
                raise KeyError(f"{p}: no 'arr_0' array (keys: {f.files}); expected an ADM sample batch "
                               "(uint8 N,H,W,3) or a statistics file with 'mu'/'sigma'")
            arr = f["arr_0"]
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"{p}: arr_0 must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        arr = subset(arr, limit)
        for i in range(0, len(arr), batch_size):
            yield arr[i:i + batch_size]
        return
    raise FileNotFoundError(f"{source}: not an image folder or .npz file")


def to_nchw(batch) -> list[torch.Tensor] | torch.Tensor:
    """uint8 NHWC array (or list of HWC arrays of mixed sizes) -> NCHW uint8 tensor(s)."""
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    shapes = {b.shape for b in batch}
    if len(shapes) == 1:
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return [torch.from_numpy(b).permute(2, 0, 1)[None] for b in batch]
