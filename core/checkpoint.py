"""Checkpoint files: atomic writes, a `latest` pointer, retention, RNG capture and safe loading.

A checkpoint is written to a temporary file in the same directory, fsynced, then renamed over
its final name; the `latest` pointer (a one-line text file) is replaced the same way only after
the checkpoint is complete. A crash at any point leaves the previous checkpoint loadable.
Everything is loaded with ``weights_only=True``: nothing a user hands us is unpickled as code.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .io_utils import TEMP_GLOB, atomic_write

LATEST = "latest"


def save_checkpoint(state: dict, ckpt_dir: Path, step: int, keep_last: int = 3) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, then point `latest` at it, then prune old ones."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"ckpt_{step:08d}.pt"
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(ckpt_dir / LATEST, lambda f: f.write((path.name + "\n").encode()))
    if keep_last > 0:
        for old in sorted(ckpt_dir.glob("ckpt_*.pt"))[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def remove_stale_temp_files(ckpt_dir: Path) -> list[Path]:
    """Delete temp files left by a writer that was killed mid-write (only the writer calls this)."""
    ckpt_dir = Path(ckpt_dir)
    stale = sorted(ckpt_dir.glob(TEMP_GLOB)) if ckpt_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a checkpoints directory, or a run directory -> the checkpoint file."""
    path = Path(path).expanduser()
    for directory in (path, path / "checkpoints"):
        pointer = directory / LATEST
        if directory.is_dir() and pointer.is_file():
            target = directory / pointer.read_text().strip()
            if not target.is_file():
                raise FileNotFoundError(f"{pointer} names {target.name}, which does not exist")
            return target
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a .pt file, a run directory, or its checkpoints/ directory "
        f"(they hold a '{LATEST}' pointer once a checkpoint was written)"
    )


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``) with an error that names the file."""
    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt, or containing arbitrary objects
        raise CheckpointError(path, exc) from exc


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely; one line naming the file, the cause and the fix."""

    def __init__(self, path, cause: BaseException):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if "GLOBAL" in str(cause) or "global" in str(cause):  # a pickled class or function, not tensors
            fix = ("it holds Python objects that safe loading (weights_only=True) refuses; re-save only its "
                   "tensors, e.g. torch.save({'model': model.state_dict()}, path)")
        else:
            fix = "the file is truncated, corrupt or not a torch checkpoint; use another checkpoint"
        super().__init__(f"cannot load checkpoint {path}: {first[:300]} ({fix})")
        self.path = str(path)


def capture_rng_state() -> dict:
    """Every RNG the training step may touch, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.random.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]
