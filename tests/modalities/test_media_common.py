import numpy as np
import pytest
import soundfile as sf

from modalities.audio import AudioFolderDataset


def test_a_file_that_breaks_after_the_scan_is_skipped_and_the_next_item_returned(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        t = np.arange(1600) / 16000
        sf.write(tmp_path / cls / "x.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    ds = AudioFolderDataset(tmp_path, sample_rate=16000, num_samples=1600)
    assert len(ds) == 2 and len(ds.skipped) == 0
    (tmp_path / "a" / "x.wav").write_bytes(b"")  # breaks after the dataset scanned it
    x, label = ds[0]
    assert label == 1 and x.shape == (1600,)  # the next good item, so the batch stays full
    assert len(ds.skipped) == 1
    (tmp_path / "b" / "x.wav").write_bytes(b"")
    with pytest.raises(RuntimeError, match="every audio file failed to load"):
        ds[1]
