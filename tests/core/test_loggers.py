"""Live loggers: TensorBoard event files hold the logged scalars and samples; bad names are refused."""

import pytest
import torch

from core.loggers import NullLogger, make_logger, video_montage

pytest.importorskip("tensorboard")


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "audio": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_logger_writes_scalars_images_and_audio(tmp_path):
    logger = make_logger("tensorboard", tmp_path)
    for step, loss in [(1, 0.5), (2, 0.25)]:
        logger.log_scalars(step, {"step": step, "loss": loss, "lr": torch.tensor(1e-3), "note": "text"})
    logger.log_samples(2, torch.rand(5, 3, 8, 8) * 2 - 1, "image")
    logger.log_samples(2, torch.rand(3, 400) * 2 - 1, "audio", sample_rate=8000)
    logger.log_samples(2, torch.rand(2, 4, 3, 8, 8) * 2 - 1, "video")
    logger.close()
    acc = _events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    assert "note" not in acc.Tags()["scalars"]
    assert acc.Images("samples")[0].step == 2 and acc.Images("samples_video_frames")[0].width == 4 * 8
    assert len(acc.Tags()["audio"]) == 3 and acc.Audio("samples_audio/0")[0].sample_rate == 8000


def test_video_montage_puts_one_clip_per_row():
    clips = torch.linspace(-1, 1, 2 * 3 * 3 * 2 * 2).reshape(2, 3, 3, 2, 2)
    m = video_montage(clips)
    assert m.shape == (3, 2 * 2, 3 * 2)
    torch.testing.assert_close(m[:, 2:4, 4:6], (clips[1, 2] + 1) / 2)  # clip 1, frame 2


def test_logger_choice():
    assert isinstance(make_logger("none", "unused"), NullLogger)
    assert isinstance(make_logger("tensorboard", "unused", enabled=False), NullLogger)  # ranks > 0
    with pytest.raises(ValueError, match="train.logger"):
        make_logger("mlflow", "unused")
