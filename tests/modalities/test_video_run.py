"""End to end: a tiny video training run through hydra compose and `run.main`."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_video_training_run(tmp_path, compose):
    import run

    cfg = compose(["modality=video", "train=smoke", "model=micro", f"run_dir={tmp_path / 'run'}",
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
    assert {"video", "gif", "strip", "clips"} <= set(out["assets"])


def test_folder_configs_compose_and_build(tmp_path):
    """modality=video_folder / audio_folder instantiate the folder datasets on a user tree."""
    import numpy as np
    import soundfile as sf
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from modalities.video import write_mp4

    for i in range(2):
        write_mp4(tmp_path / "v" / f"c{i}" / "a.mp4", np.zeros((40, 48, 64, 3), np.uint8))
        (tmp_path / "a" / f"c{i}").mkdir(parents=True)
        sf.write(tmp_path / "a" / f"c{i}" / "a.wav", np.zeros(8000), 8000)
    for modality, root, shape in (("video_folder", "v", (16, 3, 32, 32)), ("audio_folder", "a", (16000,))):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"modality={modality}", f"modality.dataset.root={tmp_path / root}",
                                                           "modality.num_classes=2"])
        ds = instantiate(cfg.modality.dataset)
        tok = instantiate(cfg.modality.tokenizer)
        assert ds.num_classes == cfg.modality.num_classes == 2
        assert ds[0][0].shape == shape
        tok.fit(ds)
        assert tok.encode(ds[0][0][None]).shape[1] == tok.num_tokens == 128


def test_video_motion_metric_hook():
    """The metric named in configs/modality/video.yaml is callable as the eval step would call it."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["modality=video"])
    fn = instantiate(cfg.modality.metrics.motion)
    records = fn(torch.rand(2, 16, 3, 32, 32) * 2 - 1)
    assert [r["metric"] for r in records] == ["motion_tracked_frac", "motion_bounce_fit_px"]
    assert {"bounce_fit_px", "mass_radius_px", "num_fake"} <= set(records[0]["details"])
