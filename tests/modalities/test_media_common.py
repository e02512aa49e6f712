import numpy as np
import pytest
import soundfile as sf
import torch

from modalities.audio import AudioFolderDataset
from modalities.media_common import SkipLog


def _two_tone_folder(root, n_per_class=1):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        t = np.arange(1600) / 16000
        for i in range(n_per_class):
            sf.write(root / cls / f"x{i}.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)


def test_a_file_that_breaks_after_the_scan_is_skipped_and_the_next_item_returned(tmp_path):
    _two_tone_folder(tmp_path)
    ds = AudioFolderDataset(tmp_path, sample_rate=16000, num_samples=1600)
    assert len(ds) == 2 and len(ds.skipped) == 0
    (tmp_path / "a" / "x0.wav").write_bytes(b"")  # breaks after the dataset scanned it
    x, label = ds[0]
    assert label == 1 and x.shape == (1600,)  # the next good item, so the batch stays full
    assert len(ds.skipped) == 1
    (tmp_path / "b" / "x0.wav").write_bytes(b"")
    with pytest.raises(RuntimeError, match="every audio file failed to load"):
        ds[1]


def test_skips_inside_dataloader_workers_reach_the_main_process(tmp_path):
    """A file that breaks only when a worker loads it is spooled to a file the report reads back."""
    _two_tone_folder(tmp_path / "data", n_per_class=2)
    ds = AudioFolderDataset(tmp_path / "data", sample_rate=16000, num_samples=1600)
    bad = tmp_path / "data" / "a" / "x1.wav"
    bad.write_bytes(b"")  # passed the scan, fails in the worker
    ds.skipped.spool = str(tmp_path / "run" / "skipped_in_workers_rank0.jsonl")
    (tmp_path / "run").mkdir()
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    assert sum(len(b[1]) for b in batches) == 4  # the batch stayed full (next good item)
    assert len(ds.skipped) == 0  # the workers' copies saw it, this process did not
    assert ds.skipped.merge_spools([ds.skipped.spool]) == 1
    assert ds.skipped.entries[0][0] == str(bad)
    assert ds.skipped.merge_spools([ds.skipped.spool]) == 0  # idempotent


def test_merge_spools_ignores_torn_lines(tmp_path):
    spool = tmp_path / "s.jsonl"
    spool.write_text('{"path": "/d/a.wav", "reason": "empty"}\n{"path": "/d/b.w')  # killed mid-write
    log = SkipLog(entries=[("/d/c.wav", "short")])
    assert log.merge_spools([spool]) == 1 and log.entries[-1] == ("/d/a.wav", "empty") and len(log) == 2


def test_dataset_scan_shows_a_progress_bar_on_rank_zero_only(tmp_path, capsys, monkeypatch):
    _two_tone_folder(tmp_path, n_per_class=2)
    monkeypatch.delenv("RANK", raising=False)
    AudioFolderDataset(tmp_path, sample_rate=16000, num_samples=1600, progress=True)
    assert f"scanning {tmp_path.name}" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    AudioFolderDataset(tmp_path, sample_rate=16000, num_samples=1600, progress=True)
    assert "scanning" not in capsys.readouterr().err
