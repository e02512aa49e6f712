"""The training loop: AdamW + EMA, JSONL metrics, periodic samples/evals, exact resume.

Resume discipline (after EDM2): everything a step depends on is either saved (model, EMA,
objective heads, optimizer, LR schedule, step, every RNG state) or a pure function of the step
(the data order: epoch permutations seeded by ``(seed, epoch)``, position = step). A resumed run
therefore produces bit-identical parameters to an uninterrupted one on CPU.
"""

from __future__ import annotations

import atexit
import json
import logging
import resource
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist_utils
from .checkpoint import (capture_rng_state, load_checkpoint, remove_stale_temp_files, restore_rng_state,
                         save_checkpoint)
from .data import data_position, resumable_loader
from .distributed import BatchRandom
from .ema import EMA
from .loggers import NullLogger, make_logger
from .sample_job import class_labels, generate_tokens
from .samplers import SamplerConfig

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
FINITE_CHECKS = ("auto", "step", "deferred")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Training hyperparameters; defaults follow REPA's setup (the paper's "REPA setup", App. A.3)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    lr_warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 3
    sample_every: int = 0
    eval_every: int = 0
    seed: int = 0
    num_workers: int = 0
    max_nonfinite: int = 20
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead adds CUDA graphs (static shapes)
    finite_check: str = "auto"  # step | deferred | auto (= deferred on CUDA): see Trainer.train_step
    tf32: bool = True
    device: str = "auto"
    dist_backend: str = "auto"
    fsdp: bool = False
    resume: str | None = None
    progress: bool = True
    logger: str = "none"        # none | tensorboard | wandb (offline): live view beside metrics.jsonl

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown train.* keys {unknown}; valid keys: {sorted(known)}")
        defaults = cls()
        for key, value in d.items():  # a string where a number belongs fails here, not deep inside a step
            want = type(getattr(defaults, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if want in (int, float, bool) and (not isinstance(value, want) or (want is not bool and isinstance(value, bool))):
                raise ValueError(f"train.{key}={value!r}: must be {'a number' if want is float else 'an integer' if want is int else 'true or false'}")
        cfg = cls(**{k: (tuple(v) if k == "betas" else v) for k, v in d.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, "train.steps", "must be >= 1"),
            (self.batch_size >= 1, "train.batch_size", "must be >= 1"),
            (self.lr > 0, "train.lr", "must be > 0"),
            (all(0 <= b < 1 for b in self.betas), "train.betas", "each must be in [0, 1)"),
            (0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)"),
            (self.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}"),
            (self.finite_check in FINITE_CHECKS, "train.finite_check", f"must be one of {FINITE_CHECKS}"),
            (self.compile_mode in COMPILE_MODES, "train.compile_mode", f"must be one of {COMPILE_MODES}"),
            (self.log_every >= 1, "train.log_every", "must be >= 1"),
            (self.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ValueError(f"{key}={getattr(self, key.split('.')[1])!r}: {why}")


class TrainModule(nn.Module):
    """Model + objective as one module, so that DDP wraps (and synchronises) both the backbone and
    the objective's trainable heads, and sees every training forward."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x0, y, coords, teacher=None, raw=None, **kwargs):  # kwargs: e.g. a joint run's modality
        out = self.objective(self.model, x0, y, coords, teacher=teacher, raw=raw, **kwargs)
        return out.loss, out.logs


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is available; use train.device=auto or cpu")
    return device


@dataclass
class Trainer:
    """Runs training for one (model, objective, tokenizer, dataset) and writes into ``run_dir``.

    ``hooks`` are called as ``hook(trainer, step)`` every ``eval_every`` steps and once at the end;
    they may return a dict of metrics that is logged to ``metrics.jsonl``.
    """

    model: nn.Module
    objective: nn.Module
    tokenizer: nn.Module
    dataset: torch.utils.data.Dataset
    cfg: TrainConfig
    run_dir: Path
    sampler_cfg: SamplerConfig = field(default_factory=SamplerConfig)
    writer: object | None = None
    num_samples: int = 16
    sample_seed: int = 0
    hooks: list[Callable] = field(default_factory=list)
    config_fingerprint: dict = field(default_factory=dict)
    device: torch.device | None = None  # None: pick_device(cfg.device, local rank)
    # Text conditioning: an object with take(n) -> (conditions (n, ...), class labels (n,)) that
    # conditions generate()'s samples when no labels are given (app/text_build.py PromptSet).
    prompts: object | None = None
    #: torch.compile's ``dynamic``: None lets it decide (one shape per run here); a joint run sets False
    compile_dynamic = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.dist = dist_utils.current()
        self.device = torch.device(self.device) if self.device is not None else pick_device(self.cfg.device, self.dist.local_rank)
        if self.cfg.tf32 and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cfg.precision == "bf16" and self.device.type == "cpu":
            log.warning("train.precision=bf16 on CPU: autocast works but is usually slower than fp32 here")
        self.model.to(self.device)
        self.objective.to(self.device)
        self.tokenizer.to(self.device)
        self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_warmup)
        self.train_module: nn.Module = TrainModule(self.model, self.objective)
        self.fsdp = self.cfg.fsdp and self.dist.enabled
        if self.cfg.fsdp and not self.dist.enabled:
            log.warning("train.fsdp=true needs torch.distributed (launch with torchrun); training unsharded")
        if self.dist.enabled:  # same noise as one process would draw over the global batch
            self.objective.rng = BatchRandom(self.dist.rank, self.dist.world_size)
        if self.fsdp:
            # The EMA copy is sharded the same way: its update stays shard-local, and as the teacher
            # it gathers one block at a time like the student.
            dist_utils.shard_fsdp2(self.train_module, self.model.blocks)
            dist_utils.shard_fsdp2(self.ema.model, self.ema.model.blocks)
        self.params = [p for p in self.train_module.parameters() if p.requires_grad]  # after sharding: DTensors
        if self.dist.enabled and not self.fsdp:  # DDP broadcasts rank 0's parameters
            # A joint model (core/multimodal.py) leaves the other members' projections unused on a step.
            self.train_module = torch.nn.parallel.DistributedDataParallel(
                self.train_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.model, "has_unused_parameters", False)))
        # deferred: no host sync per step (see train_step); needs the fused AdamW, whose kernel skips
        # the update on device when ``found_inf`` is set. On CPU the per-step check costs nothing.
        check = self.cfg.finite_check
        self.deferred_finite = check == "deferred" or (check == "auto" and self.device.type == "cuda")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay,
            eps=self.cfg.adam_eps, fused=self.device.type == "cuda" or self.deferred_finite,
        )
        # deferred mode's device counters: skipped since the last sync, in a row, max in a row since then
        self._nonfinite = torch.zeros(3, device=self.device)
        warm = self.cfg.lr_warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0
        )
        if self.cfg.compile:
            # The whole loss computation: objective (noise, DTS, labels), student forward, the EMA
            # teacher's truncated forward, heads and losses; backward through AOTAutograd. The
            # optimiser (fused AdamW) and the EMA update (a foreach lerp) are multi-tensor kernels
            # already. The modules are untouched, so state dicts and checkpoints are unaffected.
            self._loss_fn = torch.compile(self.train_module, mode=self.cfg.compile_mode, dynamic=self.compile_dynamic)
        else:
            self._loss_fn = self.train_module
        self._ema_update = self.ema.update
        self.coords = self.tokenizer.coords().to(self.device)
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self._stop_signal: int | None = None
        self._saved_step: int | None = None
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.sample_assets: dict[str, Path] = {}
        self.live = NullLogger()  # train.logger, opened by fit() once the start step is known

    # ------------------------------------------------------------------ state

    def _weights_state(self) -> tuple[dict, dict, dict, dict]:
        """(model, ema, objective heads, optimizer) states; under FSDP2 gathered to full tensors."""
        if not self.fsdp:
            return (self.model.state_dict(), self.ema.state_dict(), self.objective.trainable_state_dict(),
                    self.optimizer.state_dict())
        return dist_utils.gather_train_state(self.train_module, self.ema, self.objective, self.optimizer)

    def _load_weights_state(self, state: dict) -> None:
        if state.get("optimizer_format", "torch") != ("fsdp_full" if self.fsdp else "torch"):
            raise ValueError(f"checkpoint optimizer state is {state.get('optimizer_format', 'torch')!r}; resume with "
                             f"the same train.fsdp setting it was written with")
        if not self.fsdp:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.objective.load_trainable_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            return
        dist_utils.load_train_state(self.train_module, self.ema, self.objective, self.optimizer, state)

    def state_dict(self) -> dict:
        self.sync_nonfinite(check=False)  # deferred mode: the saved count includes the latest skips
        model, ema, objective, optimizer = self._weights_state()
        return {
            "model": model,
            "ema": ema,
            "objective": objective,
            "tokenizer": self.tokenizer.state_dict(),
            "model_config": self.model.arch_config(),  # what the shapes cannot tell (prediction, heads, ...)
            "optimizer": optimizer,
            "optimizer_format": "fsdp_full" if self.fsdp else "torch",
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "data_position": data_position(self.step, len(self.dataset), self.cfg.batch_size),  # (epoch, batch)
            "nonfinite_total": self.nonfinite_total,
            "rng": capture_rng_state(),
            "config": self.config_fingerprint,
        }

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint; every rank waits for it to be complete."""
        state = self.state_dict() if (self.fsdp or self.dist.is_main) else None  # FSDP: a collective gather
        path = save_checkpoint(state, self.ckpt_dir, self.step, self.cfg.keep_last) if self.dist.is_main else None
        dist_utils.barrier()
        self._saved_step = self.step
        return path

    def load(self, path) -> None:
        state = load_checkpoint(path)
        theirs = state.get("config", {})
        mismatched = sorted(k for k in set(theirs) | set(self.config_fingerprint)
                            if theirs.get(k) != self.config_fingerprint.get(k))
        if mismatched:
            detail = ", ".join(f"{k}: checkpoint={theirs.get(k)!r} vs run={self.config_fingerprint.get(k)!r}" for k in mismatched)
            raise ValueError(f"checkpoint {path} was written by a different configuration ({detail}); "
                             f"resume with the same model/method/modality settings")
        self._load_weights_state(state)
        self.tokenizer.load_state_dict(state["tokenizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self._nonfinite = torch.zeros(3, device=self.device)
        restore_rng_state(state["rng"])
        self._truncate_metrics(self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (written before a crash) so the log has no duplicates."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ loop

    def _loader(self) -> DataLoader:
        return resumable_loader(self.dataset, self.cfg.batch_size, self.cfg.seed, self.step, self.dist.rank,
                                self.dist.world_size, self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                                spool_dir=self.run_dir)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def compute_loss(self, raw, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training forward of one batch: ``(loss, detached logs)`` (core.joint overrides it)."""
        raw, y = raw.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.no_grad():
            x0 = self.tokenizer.encode(raw)
        teacher = self.ema.model if self.objective.needs_teacher else None
        with self._autocast():
            return self._loss_fn(x0, y, self.coords, teacher=teacher, raw=raw)

    def train_step(self, raw: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """One optimisation step. Returns the detached logs, or None if the loss was not finite."""
        loss, logs = self.compute_loss(raw, y)
        finite = torch.isfinite(loss.detach()).float()
        if self.dist.enabled:  # every rank must take the same skip decision, or DDP deadlocks
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if self.deferred_finite:
            return self._deferred_step(loss, logs, finite)
        if not bool(finite):
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_in_row += 1
            log.warning("non-finite loss at step %d (skipped; %d in a row)", self.step, self.nonfinite_in_row)
            self._check_nonfinite_in_row(self.nonfinite_in_row)
            return None
        self.nonfinite_in_row = 0
        loss.backward()
        grad_norm = self._clip()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._ema_update(self.model)
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **logs}

    def _clip(self) -> torch.Tensor:
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip) if self.cfg.grad_clip > 0
                     else torch.zeros((), device=self.device))
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        return grad_norm

    def _check_nonfinite_in_row(self, in_row: int) -> None:
        if in_row >= self.cfg.max_nonfinite:
            raise FloatingPointError(
                f"{in_row} non-finite losses in a row at step {self.step} "
                f"(train.max_nonfinite={self.cfg.max_nonfinite}); lower train.lr or use train.precision=fp32"
            )

    def _deferred_step(self, loss: torch.Tensor, logs: dict, finite: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step without a host sync: the skip decision stays on the device.

        Backward always runs; with a non-finite loss the fused AdamW skips its update and its step
        count on device (``found_inf``, the mechanism GradScaler uses), the EMA update has weight 0
        and the gradients are dropped, so the parameters, the optimiser state and the EMA are exactly
        those of a skipped step. The LR schedule still advances (it is host-side, per step). The
        counters live on device and are read by ``sync_nonfinite`` at log steps, so
        ``train.max_nonfinite`` aborts there (up to ``log_every`` steps late) instead of at once.
        """
        bad = 1.0 - finite  # (,) 0 or 1
        loss.backward()
        grad_norm = self._clip()
        self.optimizer.found_inf = bad  # 0-dim float, as GradScaler passes it
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._ema_update(self.model, skip=bad)
        c = self._nonfinite
        in_row = (c[1] + 1) * bad
        self._nonfinite = torch.stack([c[0] + bad, in_row, torch.maximum(c[2], in_row)])
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **logs, "finite": finite}

    def sync_nonfinite(self, check: bool = True) -> None:
        """Deferred mode: fold the device counters into the host ones (one host sync), warn, and
        (``check``) abort past ``train.max_nonfinite``. Called at log steps and before a save."""
        if not self.deferred_finite:
            return
        skipped, in_row, max_in_row = (int(v) for v in self._nonfinite.tolist())
        if skipped:
            log.warning("%d non-finite losses skipped since the last log (up to step %d)", skipped, self.step)
        self.nonfinite_total += skipped
        self.nonfinite_in_row = in_row
        self._nonfinite = torch.stack([torch.zeros_like(self._nonfinite[0]), self._nonfinite[1],
                                       torch.zeros_like(self._nonfinite[2])])
        if check:
            self._check_nonfinite_in_row(max_in_row)

    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def fit(self) -> dict:
        """Train to ``cfg.steps``; returns a summary (steps, wall time, samples/s, peak memory)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            for path in remove_stale_temp_files(self.ckpt_dir):
                log.warning("removed %s, left by a checkpoint write that was interrupted", path)
        if self.cfg.resume:
            self.load(self.cfg.resume)
        if isinstance(self.live, NullLogger):  # stays open for the final samples/eval after fit()
            self.live = make_logger(self.cfg.logger, self.run_dir, enabled=self.dist.is_main, start_step=self.step)
            atexit.register(self.live.close)
        previous = signal.signal(signal.SIGTERM, self._on_signal) if _main_thread() else None
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)  # per key: a joint run logs a member's losses on its steps only
        count, t_log, t_start, steps_done = 0, time.perf_counter(), time.perf_counter(), 0
        hook_s = eval_total = 0.0  # time in sampling/eval hooks: not training time
        self.model.train()
        self.objective.train()
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not (self.cfg.progress and self.dist.is_main), mininterval=2.0,
                   dynamic_ncols=True, desc="train")
        try:
            batches = iter(self._loader())
            while self.step < self.cfg.steps:
                raw, y = next(batches)
                logs = self.train_step(raw, y)
                self.step += 1
                steps_done += 1
                bar.update(1)
                if logs is not None:  # summed on device: a float() here would be a host sync per step
                    w = logs.pop("finite", None)  # deferred mode: a skipped step counts 0
                    for k, v in logs.items():
                        v = v.detach().double()  # float64 like the Python floats summed before: same means
                        sums[k] = sums[k] + (v if w is None else torch.where(w > 0, v, 0.0))
                        counts[k] = counts[k] + (1 if w is None else w)
                    count = count + (1 if w is None else w)
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    self.sync_nonfinite()
                    now = time.perf_counter()
                    record = dist_utils.all_reduce_mean({k: float(v) / max(float(counts[k]), 1.0) for k, v in sums.items()},
                                                        self.device)
                    elapsed = max(now - t_log - hook_s, 1e-9)  # training time only: evals excluded
                    n_steps = self.cfg.log_every if self.step % self.cfg.log_every == 0 else self.step % self.cfg.log_every
                    record.update(step=self.step, lr=self.scheduler.get_last_lr()[0], world_size=self.dist.world_size,
                                  steps_per_s=n_steps / elapsed,
                                  samples_per_s=self.samples_in_steps(self.step - n_steps, self.step) / elapsed,
                                  nonfinite_total=self.nonfinite_total, time_s=now - t_start)
                    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
                    if self.device.type == "cuda":
                        record["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    self.log_metrics(record)
                    bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}")
                    sums.clear()
                    counts.clear()
                    count, t_log, hook_s = 0, now, 0.0
                if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0:
                    self.save()
                t_hook = time.perf_counter()
                if self.cfg.sample_every and self.step % self.cfg.sample_every == 0:
                    self.write_samples(f"step_{self.step:08d}")
                if self.cfg.eval_every and self.step % self.cfg.eval_every == 0 and self.step < self.cfg.steps:
                    self.run_hooks()
                hook_s += time.perf_counter() - t_hook
                eval_total += time.perf_counter() - t_hook
                if self._stop_requested():
                    path = self.save()
                    log.warning("signal %d received: saved %s at step %d and stopped", self._stop_signal, path, self.step)
                    raise SystemExit(0)
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if self._saved_step != self.step:  # rank-independent: never ask the filesystem
            self.save()
        wall = time.perf_counter() - t_start
        train_s = wall - eval_total
        return {"steps": self.step, "steps_this_run": steps_done, "wall_s": wall, "eval_s": eval_total,
                "samples_per_s": (self.samples_in_steps(self.step - steps_done, self.step) / train_s if train_s > 0
                                  else float("nan"))}

    def samples_in_steps(self, start: int, stop: int) -> int:
        """Training items (global batch rows) in steps ``[start, stop)`` (a joint run's batch varies by member)."""
        return (stop - start) * self.cfg.batch_size

    def _stop_requested(self) -> bool:
        """A SIGTERM seen by any rank stops all of them at the same step."""
        flag = self._stop_signal is not None
        # The all-reduce + .item() is a host sync: without host syncs per step (deferred mode) the
        # ranks agree at log steps only, so a SIGTERM stops the run up to log_every steps later.
        at_log_step = self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps
        if self.dist.enabled and self.deferred_finite and not at_log_step:
            return False  # never stop one rank alone: it would leave the others waiting in a collective
        if self.dist.enabled:
            t = torch.tensor([float(flag)], device=self.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
            if flag and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
        return flag

    def log_metrics(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        record = {k: (float(v) if isinstance(v, (torch.Tensor, float)) else v) for k, v in record.items()}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        self.live.log_scalars(int(record.get("step", self.step)), record)

    def run_hooks(self) -> dict:
        results = {}
        for hook in self.hooks:
            out = hook(self, self.step)
            if out:
                results.update(out)
        if results:
            self.log_metrics({"step": self.step, **{k: v for k, v in results.items() if isinstance(v, (int, float))}})
        return results

    # ------------------------------------------------------------------ sampling

    def sampling_parts(self, modality: str | None = None):
        """``(EMA model, coordinates, decode)`` to sample with; a joint trainer picks the member."""
        if modality is not None:
            raise ValueError(f"modality={modality!r}: this run trains a single modality")
        return self.ema.model, self.coords, self.tokenizer.decode

    def prompts_for(self, modality: str | None = None):
        """The prompt set that conditions ``generate``'s samples (None: class labels); per member in joint runs."""
        return self.prompts

    @torch.no_grad()
    def generate(self, num_samples: int, seed: int, sampler_cfg: SamplerConfig | None = None,
                 batch_size: int | None = None, labels: torch.Tensor | None = None, modality: str | None = None):
        """Sample with the EMA model; returns ``(decoded samples, labels, nfe per batch)`` on every rank.

        Batch i is seeded by ``(seed, i)`` and generated by rank ``i % world_size``; the shards are
        gathered in batch order, so any number of processes returns exactly the 1-process samples.
        """
        cfg = sampler_cfg or self.sampler_cfg
        model, coords, decode = self.sampling_parts(modality)
        conditions, prompts = None, self.prompts_for(modality)
        if labels is None and prompts is not None:  # captions; labels = their items' classes
            conditions, labels = prompts.take(num_samples)
        if labels is None:  # balanced classes, in order, so grids read row by row
            labels = class_labels(num_samples, model.num_classes, "balanced")
        batch_size = batch_size or max(self.cfg.batch_size, 1)
        mine, nfe = {}, 0
        # FSDP2 forwards are collectives: every rank must run every batch (no sharding).
        ranks, rank = (1, 0) if self.fsdp else (self.dist.world_size, self.dist.rank)
        for i, start in enumerate(range(0, num_samples, batch_size)):
            if i % ranks != rank:
                continue
            y = (labels if conditions is None else conditions)[start:start + batch_size]
            with self._autocast():
                x, nfe = generate_tokens(model, coords, y, cfg, seed, i)
            mine[i] = decode(x.float()).cpu()
        parts = [mine] if self.fsdp else dist_utils.gather_objects(mine)
        shards = {i: out for part in parts for i, out in part.items()}
        nfe = nfe if self.fsdp else max(dist_utils.gather_objects(nfe))
        return torch.cat([shards[i] for i in sorted(shards)]), labels, nfe

    def write_samples(self, stem: str) -> dict[str, Path]:
        if self.writer is None:
            return {}
        samples, labels, _ = self.generate(self.num_samples, self.sample_seed)
        if not self.dist.is_main:
            return {}
        assets = self.writer.write(samples, labels, self.run_dir / "samples", stem)
        self.sample_assets = assets
        self.live.log_samples(self.step, samples, getattr(self.writer, "media", "none"),
                              sample_rate=getattr(self.writer, "sample_rate", None))
        return assets


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
