"""Joint multi-modal training: the step's modality, per-member objectives/tokenizers, the trainer.

One training step holds ONE modality (the paper's App. D: "each mini-batch holds a single
modality"). Which one is a pure function of ``(seed, step)`` (:class:`ModalitySchedule`): every
process draws the same member, so DDP/FSDP2 stay in lock-step, and a resumed run continues the
same sequence with no extra saved state. Each member keeps its own data order
(``core.data.ResumableBatchSampler`` seeded as a single-modality run) in batches of its own size
(``batch_sizes``, the paper's per-modality batch sizes), advanced only on that member's steps: its
position at step s (in its batches) is the number of its steps before s, recomputed on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .data import data_position, resumable_loader
from .trainer import Trainer

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): a counter-based hash."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def step_uniforms(seed: int, steps: np.ndarray) -> np.ndarray:
    """``u_s in [0, 1)`` for each step ``s``: SplitMix64 of (seed, s), 53-bit mantissa.

    Counter-based (no generator state): O(1) per step, identical on every process, platform and
    torch version, and vectorised so that counting a member's steps up to step 10^6 takes ms.
    """
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        z = key + (np.asarray(steps, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
    return (_splitmix64(z) >> np.uint64(11)).astype(np.float64) * 2.0**-53


class ModalitySchedule:
    """The member of each training step, drawn with probabilities proportional to ``weights``.

    Members with weight 0 never appear (and :attr:`names` leaves them out).
    """

    CHUNK = 1 << 20  # steps counted per vectorised chunk

    def __init__(self, weights: Mapping[str, float], seed: int):
        positive = {k: float(v) for k, v in weights.items() if float(v) > 0}
        if any(float(v) < 0 for v in weights.values()) or not positive:
            raise ValueError(f"modality weights {dict(weights)}: need >= 0 each and at least one > 0")
        self.names = list(positive)
        total = sum(positive.values())
        self.probabilities = {k: v / total for k, v in positive.items()}
        self.cdf = np.cumsum([positive[k] for k in self.names]) / total
        self.cdf[-1] = 1.0  # u < 1 always lands in a member
        self.seed = int(seed)

    def indices(self, start: int, stop: int) -> np.ndarray:
        """Member index of every step in ``[start, stop)``."""
        u = step_uniforms(self.seed, np.arange(start, stop, dtype=np.uint64))
        return np.searchsorted(self.cdf, u, side="right")

    def modality_at(self, step: int) -> str:
        return self.names[int(self.indices(step, step + 1)[0])]

    def counts_before(self, step: int) -> dict[str, int]:
        """Steps of each member in ``[0, step)``: where each member's data order stands at ``step``."""
        return self.counts_between(0, step)

    def counts_between(self, start: int, stop: int) -> dict[str, int]:
        """Steps of each member in ``[start, stop)`` (O(stop - start), vectorised in chunks)."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        for lo in range(max(start, 0), stop, self.CHUNK):
            counts += np.bincount(self.indices(lo, min(stop, lo + self.CHUNK)), minlength=len(self.names))
        return dict(zip(self.names, counts.tolist()))


class JointObjective(nn.Module):
    """One objective per member (its own p(t), mask ratio, heads, REPA encoder), called on its steps.

    ``forward(joint_model, x0, y, coords, teacher, raw, modality=m)`` runs member m's objective on
    the joint model's member m (and the EMA teacher's member m) and multiplies its loss by
    ``loss_weights[m]`` (the per-modality weights of the paper's Table 6). Logs are prefixed ``m/``.
    """

    def __init__(self, members: Mapping[str, nn.Module], loss_weights: Mapping[str, float] | None = None):
        super().__init__()
        self.members = nn.ModuleDict(dict(members))
        self.loss_weights = {m: float((loss_weights or {}).get(m, 1.0)) for m in self.members}
        self.needs_teacher = any(getattr(o, "needs_teacher", False) for o in self.members.values())
        self.frozen_prefixes = tuple(f"members.{m}.{p}" for m, o in self.members.items()
                                     for p in getattr(o, "frozen_prefixes", ()))

    @property
    def rng(self):
        return next(iter(self.members.values())).rng

    @rng.setter
    def rng(self, value) -> None:  # the trainer's rank-sharded random source reaches every member
        for objective in self.members.values():
            objective.rng = value

    def forward(self, model, x0: Tensor, y: Tensor, coords: Tensor, teacher=None, raw=None, *, modality: str):
        objective = self.members[modality]
        out = objective(model.member(modality), x0, y, coords,
                        teacher=teacher.member(modality) if teacher is not None else None, raw=raw)
        w = self.loss_weights[modality]
        logs = {f"{modality}/{k}": v for k, v in out.logs.items()}
        logs[f"{modality}/loss"] = out.loss.detach()
        out.loss = out.loss * w if w != 1.0 else out.loss
        out.logs = logs
        return out

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {f"members.{m}.{k}": v for m, o in self.members.items() for k, v in o.trainable_state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        for m, objective in self.members.items():
            prefix = f"members.{m}."
            objective.load_trainable_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


class JointTokenizer(nn.Module):
    """The members' tokenizers in one module (one ``state_dict`` for the checkpoint)."""

    def __init__(self, members: Mapping[str, nn.Module]):
        super().__init__()
        self.members = nn.ModuleDict(dict(members))

    def coords(self, modality: str | None = None) -> Tensor:
        """Member ``modality``'s coordinates (the first member's when None)."""
        return self.members[modality or next(iter(self.members))].coords()

    def encode(self, raw: Tensor, modality: str) -> Tensor:
        return self.members[modality].encode(raw)

    def decode(self, tokens: Tensor, modality: str) -> Tensor:
        return self.members[modality].decode(tokens)


class JointData(torch.utils.data.Dataset):
    """The members' data sets side by side (each is iterated by its own resumable loader)."""

    def __init__(self, members: Mapping):
        self.members = dict(members)

    def __len__(self) -> int:
        return sum(len(d) for d in self.members.values())

    def __getitem__(self, i):
        raise TypeError("JointData is not indexed directly; each member has its own loader")


@dataclass
class JointTrainer(Trainer):
    """:class:`Trainer` over a :class:`core.multimodal.JointSiT`, :class:`JointObjective`,
    :class:`JointTokenizer` and :class:`JointData`; a step's batch is ``((modality, raw), y)``.

    Extra fields: ``schedule`` (the step -> member rule), ``writers`` and ``sampler_cfgs`` per
    member (each member samples with its own shift and CFG scale), ``batch_sizes`` per member (the
    global batch of its training steps; a member not in it uses ``cfg.batch_size``). Sampling and
    evaluation batches stay ``cfg.batch_size``. ``member_prompts`` per member (text conditioning:
    each member's samples follow its own held-out captions).
    """

    #: train.compile: one static graph per member (its own token count and batch size) instead of
    #: a shape-generic recompile when the second member arrives (slower to build, no faster to run)
    compile_dynamic = False
    schedule: ModalitySchedule | None = None
    writers: dict = field(default_factory=dict)
    sampler_cfgs: dict = field(default_factory=dict)
    batch_sizes: dict = field(default_factory=dict)
    member_prompts: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule is None:
            raise ValueError("JointTrainer needs a ModalitySchedule")
        super().__post_init__()
        self.member_coords = {m: self.tokenizer.coords(m).to(self.device) for m in self.schedule.names}

    def member_batch_size(self, modality: str) -> int:
        return int(self.batch_sizes.get(modality) or self.cfg.batch_size)

    def samples_in_steps(self, start: int, stop: int) -> int:
        """Items trained on in steps ``[start, stop)``: each member's steps times its batch size."""
        counts = self.schedule.counts_between(start, stop)
        return sum(n * self.member_batch_size(m) for m, n in counts.items())

    def _loader(self):
        # A member's sampler position is in its own batches: its step count before self.step.
        counts = self.schedule.counts_before(self.step)
        data = self.dataset.members
        loaders = {m: iter(resumable_loader(data[m], self.member_batch_size(m), self.cfg.seed, counts[m], self.dist.rank,
                                            self.dist.world_size, self.cfg.num_workers,
                                            pin_memory=self.device.type == "cuda"))
                   for m in self.schedule.names}
        step = self.step
        while True:
            modality = self.schedule.modality_at(step)
            raw, y = next(loaders[modality])
            yield (modality, raw), y
            step += 1

    def compute_loss(self, batch, y: Tensor):
        modality, raw = batch
        raw, y = raw.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.no_grad():
            x0 = self.tokenizer.encode(raw, modality)
        teacher = self.ema.model if self.objective.needs_teacher else None
        with self._autocast():
            # _loss_fn: the compiled train module under train.compile (one graph per member: the
            # modality string is a guard), else the train module itself
            return self._loss_fn(x0, y, self.member_coords[modality], teacher=teacher, raw=raw, modality=modality)

    def state_dict(self) -> dict:
        state = super().state_dict()
        counts = self.schedule.counts_before(self.step)  # informational: recomputed from (seed, step) on resume
        state["data_position"] = {m: data_position(counts[m], len(self.dataset.members[m]), self.member_batch_size(m))
                                  for m in self.schedule.names}
        state["modality_probabilities"] = dict(self.schedule.probabilities)
        return state

    def prompts_for(self, modality: str | None = None):
        return self.member_prompts.get(modality)

    def sampling_parts(self, modality: str | None = None):
        if modality not in self.member_coords:
            raise ValueError(f"sample.modality={modality!r}: a joint run samples one member at a time; "
                             f"choose one of {self.schedule.names}")
        return (self.ema.model.member(modality), self.member_coords[modality],
                lambda tokens: self.tokenizer.decode(tokens, modality))

    def write_samples(self, stem: str) -> dict:
        """Every member's samples under ``samples/<member>/``; asset keys ``<member>_<kind>``."""
        assets = {}
        for m in self.schedule.names:
            writer = self.writers.get(m)
            if writer is None:
                continue
            samples, labels, _ = self.generate(self.num_samples, self.sample_seed, sampler_cfg=self.sampler_cfgs.get(m),
                                               modality=m)
            if not self.dist.is_main:
                continue
            out = writer.write(samples, labels, self.run_dir / "samples" / m, stem)
            assets.update({f"{m}_{k}": v for k, v in out.items()})
            self.live.log_samples(self.step, samples, getattr(writer, "media", "none"),
                                  sample_rate=getattr(writer, "sample_rate", None))
        if self.dist.is_main:
            self.sample_assets = assets
        return assets
