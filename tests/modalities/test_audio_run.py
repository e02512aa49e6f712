"""End to end: a tiny audio training run through hydra compose and `run.main`."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_audio_training_run(tmp_path, compose):
    import run

    cfg = compose(["modality=audio", "train=smoke", "model=micro", f"run_dir={tmp_path / 'run'}",
                   "eval.enabled=false", "sample.num_samples=4", "sample.num_steps=4",
                   "modality.dataset.clips_per_class=4"])
    out = run.main(cfg)
    run_dir = Path(out["run_dir"])
    assert out["steps"] == 6
    assert (run_dir / "config.yaml").is_file() and (run_dir / "report.md").is_file()
    assert (run_dir / "metrics.jsonl").read_text().strip()
    assert any((run_dir / "checkpoints").iterdir())
    for path in out["assets"].values():
        assert Path(path).exists(), path
    assert {"audio", "spectrogram", "clips"} <= set(out["assets"])
    # The mel statistics fitted before training are saved with the checkpoint.
    from core.checkpoint import load_checkpoint

    ckpt = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    state = load_checkpoint(ckpt)  # weights_only=True
    assert bool(state["tokenizer"]["fitted"])
