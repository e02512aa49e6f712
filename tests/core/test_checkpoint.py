import os
import signal

import pytest
import torch

from core import checkpoint as ckpt
from core.objectives.base import LossOutput, Objective
from core.path import TimeDistribution
from core.trainer import Trainer, TrainConfig
from core.transformer import SiT
from modalities.image import PixelPatchTokenizer


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch):
    first = ckpt.save_checkpoint({"w": torch.ones(3)}, tmp_path, step=1)

    def exploding_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"w": torch.zeros(3)}, tmp_path, step=2)
    monkeypatch.undo()
    assert ckpt.resolve_checkpoint(tmp_path) == first
    assert torch.equal(ckpt.load_checkpoint(tmp_path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt", "latest"]  # no temp file left


def test_keep_last_and_latest_pointer(tmp_path):
    for step in range(1, 6):
        ckpt.save_checkpoint({"step": step}, tmp_path, step=step, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_00000004.pt", "ckpt_00000005.pt"]
    assert ckpt.load_checkpoint(tmp_path)["step"] == 5
    assert ckpt.load_checkpoint(tmp_path.parent / tmp_path.name)["step"] == 5


def test_corrupt_or_missing_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="bad.pt") as info:
        ckpt.load_checkpoint(bad)
    assert len(str(info.value).splitlines()) == 1 and "truncated, corrupt" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nothing_here")


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ckpt.CheckpointError, match="evil.pt") as info:
        ckpt.load_checkpoint(path)
    assert len(str(info.value).splitlines()) == 1 and "weights_only" in str(info.value)


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


# ---------------------------------------------------------------- trainer failure modes


class _Data(torch.utils.data.Dataset):
    num_classes = 2

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.full((3, 8, 8), i / 16.0), i % 2


class _ScriptedObjective(Objective):
    """FM-like loss that can return NaN at given steps or signal the process."""

    def __init__(self, nan_steps=(), sigterm_at=None):
        super().__init__(TimeDistribution(), 0.0)
        self.calls, self.nan_steps, self.sigterm_at = 0, set(nan_steps), sigterm_at

    def forward(self, model, x0, y, coords, teacher=None, raw=None):
        self.calls += 1
        loss = (model(x0, torch.full((x0.shape[0],), 0.5), y, coords) - 1).pow(2).mean()
        if self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.calls in self.nan_steps:
            loss = loss * float("nan")
        return LossOutput(loss, {})


def _trainer(tmp_path, objective, **cfg):
    torch.manual_seed(0)
    model = SiT(in_channels=12, hidden_size=16, depth=2, num_heads=2, num_classes=2)
    train_cfg = TrainConfig(steps=6, batch_size=4, log_every=1, ckpt_every=0, progress=False, **cfg)
    return Trainer(model, objective, PixelPatchTokenizer(8, 3, 2), _Data(), train_cfg, tmp_path)


def test_nonfinite_steps_are_skipped_counted_and_logged(tmp_path):
    trainer = _trainer(tmp_path, _ScriptedObjective(nan_steps={2, 3}))
    before = [p.clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.nonfinite_total == 2 and trainer.step == 6
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    from core.trainer import read_metrics
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["nonfinite_total"] == 2


def test_too_many_nonfinite_in_a_row_abort_with_a_clear_message(tmp_path):
    trainer = _trainer(tmp_path, _ScriptedObjective(nan_steps={2, 3, 4}), max_nonfinite=3)
    with pytest.raises(FloatingPointError, match="train.max_nonfinite=3"):
        trainer.fit()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    trainer = _trainer(tmp_path, _ScriptedObjective(sigterm_at=3))
    with pytest.raises(SystemExit) as exc:
        trainer.fit()
    assert exc.value.code == 0
    assert ckpt.load_checkpoint(tmp_path / "checkpoints")["step"] == 3


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig.from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="unknown train"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="train.ema_decay"):
        TrainConfig.from_dict({"ema_decay": 1.5})


class _DataBreakingInWorkers(_Data):
    """Item 5 "fails to load" when fetched: recorded in the fetching process's SkipLog copy."""

    def __init__(self):
        from modalities.media_common import SkipLog

        self.skipped = SkipLog()

    def __getitem__(self, i):
        if i == 5:
            self.skipped.add("/data/item5.png", "truncated")
            i = 6
        return super().__getitem__(i)


def test_skips_in_dataloader_workers_are_spooled_to_the_run_dir(tmp_path):
    torch.manual_seed(0)
    model = SiT(in_channels=12, hidden_size=16, depth=2, num_heads=2, num_classes=2)
    data = _DataBreakingInWorkers()
    cfg = TrainConfig(steps=4, batch_size=4, log_every=1, ckpt_every=0, progress=False, num_workers=1)
    Trainer(model, _ScriptedObjective(), PixelPatchTokenizer(8, 3, 2), data, cfg, tmp_path).fit()
    spool = tmp_path / "skipped_in_workers_rank0.jsonl"
    assert len(data.skipped) == 0 and spool.is_file()  # only the worker saw the failure
    assert data.skipped.merge_spools([spool]) == 1 and data.skipped.entries == [("/data/item5.png", "truncated")]
