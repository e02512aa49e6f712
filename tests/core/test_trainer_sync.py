"""train.finite_check=deferred: the training step without host syncs (the CUDA default), run on CPU."""

import copy

import pytest
import torch

from core.objectives import FlowMatchingObjective
from core.objectives.base import LossOutput, Objective
from core.path import TimeDistribution
from core.trainer import Trainer, TrainConfig, read_metrics
from core.transformer import SiT
from modalities.image import PixelPatchTokenizer


class _Data(torch.utils.data.Dataset):
    num_classes = 2

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.full((3, 8, 8), i / 16.0), i % 2


class _NaNAt(Objective):
    """FM-like loss that is NaN on the given (1-indexed) calls."""

    def __init__(self, nan_calls=()):
        super().__init__(TimeDistribution(), 0.0)
        self.calls, self.nan_calls = 0, set(nan_calls)

    def forward(self, model, x0, y, coords, teacher=None, raw=None):
        self.calls += 1
        loss = (model(x0, torch.full((x0.shape[0],), 0.5), y, coords) - 1).pow(2).mean()
        return LossOutput(loss * float("nan") if self.calls in self.nan_calls else loss, {"aux": loss.detach()})


def _trainer(tmp_path, objective, **cfg):
    torch.manual_seed(0)
    model = SiT(in_channels=12, hidden_size=16, depth=2, num_heads=2, num_classes=2)
    cfg = TrainConfig(**{**dict(steps=6, batch_size=4, log_every=2, ckpt_every=0, progress=False,
                                finite_check="deferred"), **cfg})
    return Trainer(model, objective, PixelPatchTokenizer(8, 3, 2), _Data(), cfg, tmp_path)


def _state(trainer):
    return (copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.ema.model.state_dict()),
            copy.deepcopy(trainer.optimizer.state_dict()["state"]))


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, z) for x, z in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_auto_is_deferred_only_on_cuda(tmp_path):
    assert not _trainer(tmp_path, _NaNAt(), finite_check="auto").deferred_finite  # CPU: per-step check
    assert _trainer(tmp_path, _NaNAt()).deferred_finite
    with pytest.raises(ValueError, match="train.finite_check"):
        TrainConfig.from_dict({"finite_check": "never"})
    with pytest.raises(ValueError, match="train.compile_mode"):
        TrainConfig.from_dict({"compile_mode": "fast"})


def test_deferred_nonfinite_step_changes_no_weight_no_optimizer_state_and_no_ema(tmp_path):
    trainer = _trainer(tmp_path, _NaNAt(nan_calls={2}))
    raw, y = torch.stack([_Data()[i][0] for i in range(4)]), torch.tensor([0, 1, 0, 1])
    trainer.train_step(raw, y)  # a finite step: initialises AdamW's state
    before = _state(trainer)
    logs = trainer.train_step(raw, y)  # NaN loss: skipped on device
    assert float(logs["finite"]) == 0.0
    assert _same(before, _state(trainer))
    logs = trainer.train_step(raw, y)  # finite again: a real update
    assert float(logs["finite"]) == 1.0 and not _same(before[0], _state(trainer)[0])
    trainer.sync_nonfinite()
    assert trainer.nonfinite_total == 1 and trainer.nonfinite_in_row == 0


def test_deferred_fit_counts_skips_and_logs_means_of_finite_steps(tmp_path):
    trainer = _trainer(tmp_path, _NaNAt(nan_calls={2, 3}))
    trainer.fit()
    rec = read_metrics(tmp_path / "metrics.jsonl")
    assert trainer.nonfinite_total == 2 and rec[-1]["nonfinite_total"] == 2
    assert all(r["loss"] == r["loss"] for r in rec)  # no NaN leaks into the logged means
    assert rec[1]["step"] == 4 and rec[1]["loss"] == pytest.approx(rec[1]["aux"])  # only step 4 counted


def test_deferred_abort_after_too_many_nonfinite_in_a_row(tmp_path):
    trainer = _trainer(tmp_path, _NaNAt(nan_calls={2, 3, 4}), max_nonfinite=3, log_every=1)
    with pytest.raises(FloatingPointError, match="train.max_nonfinite=3"):
        trainer.fit()
    assert trainer.step == 4  # noticed at the log step of the third NaN in a row


def test_deferred_training_matches_fused_per_step_training(tmp_path):
    """Without NaNs the deferred step is the same computation as the per-step one (same fused AdamW)."""
    results = []
    for mode in ("deferred", "step"):
        torch.manual_seed(0)
        model = SiT(in_channels=12, hidden_size=16, depth=2, num_heads=2, num_classes=2)
        cfg = TrainConfig(steps=3, batch_size=4, log_every=1, ckpt_every=0, progress=False, finite_check=mode)
        trainer = Trainer(model, FlowMatchingObjective(TimeDistribution()), PixelPatchTokenizer(8, 3, 2), _Data(),
                          cfg, tmp_path / mode)
        if mode == "step":  # same optimiser implementation as the deferred mode uses
            trainer.optimizer = torch.optim.AdamW(trainer.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                                                  weight_decay=cfg.weight_decay, fused=True)
            trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda s: 1.0)
        torch.manual_seed(1)
        trainer.fit()
        results.append(_state(trainer)[:2])
    assert _same(results[0], results[1])


def test_deferred_skips_are_in_the_checkpoint_and_survive_resume(tmp_path):
    trainer = _trainer(tmp_path, _NaNAt(nan_calls={2}))
    raw, y = torch.stack([_Data()[i][0] for i in range(4)]), torch.tensor([0, 1, 0, 1])
    for _ in range(3):
        trainer.train_step(raw, y)
    assert trainer.nonfinite_total == 0  # not read yet: no host sync in the steps
    assert trainer.state_dict()["nonfinite_total"] == 1  # a save reads the device counters first
    trainer.cfg.steps = 3
    trainer.step = 3
    trainer.save()
    resumed = _trainer(tmp_path, _NaNAt(), steps=4, log_every=100, resume=str(tmp_path))
    resumed.fit()
    assert resumed.nonfinite_total == 1 and resumed.step == 4
