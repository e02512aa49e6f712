"""What every benchmark script shares: the repository on ``sys.path``, one timer, synthetic data,
an environment header for the JSON, and a training step timed through ``Trainer.train_step`` itself.

Import it first (``import _common`` works because a script's own folder is on ``sys.path``)::

    import _common  # noqa: F401 -- puts the repository on sys.path
    from _common import timed, environment, SyntheticImages, trainer_step
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from core.io_utils import git_commit  # noqa: E402


def sync(device: str | torch.device | None = None) -> None:
    """Wait for queued GPU work (no-op on CPU) so a wall-clock interval covers the kernels."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], steps: int, warmup: int = 0, device=None) -> list[float]:
    """Seconds per call of ``fn`` for ``steps`` calls after ``warmup`` untimed ones, synchronised."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """The facts a timing depends on, for the top of every result file."""
    env = {"commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return env


class SyntheticImages(torch.utils.data.Dataset):
    """Deterministic random tensors of ``shape`` in [-1, 1] (item i seeded by i) with labels ``i % num_classes``.

    Images ``(3, H, W)``, or "SD-VAE latents" ``(4, 32, 32)``: only their cost matters here.
    """

    def __init__(self, shape=(3, 32, 32), num_classes: int = 1000, length: int = 1024, normal: bool = False):
        self.shape, self.num_classes, self.length, self.normal = tuple(shape), num_classes, length, normal

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(self.shape, generator=g) if self.normal else torch.rand(self.shape, generator=g) * 2 - 1
        return x, i % self.num_classes

    def batch(self, batch_size: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        raw = torch.stack([self[i][0] for i in range(batch_size)]).to(device)
        return raw, torch.tensor([self[i][1] for i in range(batch_size)], device=device)


def make_trainer(model, objective, tokenizer, dataset, run_dir: Path | None = None, **train_kw):
    """A ``Trainer`` for timing (no checkpoints, no progress bar); ``train_kw`` go to ``TrainConfig``."""
    from core.trainer import Trainer, TrainConfig

    cfg = TrainConfig(**{"steps": 10**6, "progress": False, "ckpt_every": 0, **train_kw})
    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="bench-"))
    return Trainer(model, objective, tokenizer, dataset, cfg, run_dir)


def trainer_step(trainer, raw: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step exactly as training runs it (``Trainer.train_step``); a non-finite loss raises."""

    def step():
        if trainer.train_step(raw, y) is None:
            raise FloatingPointError("non-finite loss in a timed training step")

    return step


def best_time(fn: Callable[[], object], repeat: int = 1, device=None) -> tuple[object, float]:
    """``(fn()'s last result, fastest of repeat calls in seconds)``, for calls too slow to warm up."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best
