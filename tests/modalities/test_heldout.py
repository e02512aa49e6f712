"""Held-out reference splits: disjoint from training, verified, and what the eval hook uses."""

from __future__ import annotations

import logging

import pytest
import torch

from modalities.audio.synth import SynthInstrumentsDataset, generate_instruments
from modalities.image import ImageFolderDataset, ShapesDataset
from modalities.media_common import file_sha256
from modalities.splits import NO_HELDOUT, reference_for, split_seed
from modalities.video.sprites import MovingDigitsDataset, bounce_fit_error, motion_report


def _hashes(root, pattern):
    return {file_sha256(p) for p in root.rglob(pattern)}


@pytest.mark.parametrize("make,pattern", [
    (lambda r: ShapesDataset(root=r, per_class=6, heldout_per_class=5), "*.png"),
    (lambda r: MovingDigitsDataset(clips_per_class=1, heldout_per_class=1, root=str(r)), "*.mp4"),
    (lambda r: SynthInstrumentsDataset(clips_per_class=3, heldout_per_class=3, root=str(r)), "*.wav"),
])
def test_heldout_split_is_disjoint_from_training(tmp_path, make, pattern):
    ds = make(tmp_path)
    ref = ds.reference_dataset()
    assert ref.root != ds.root and ds.reference_root() == ref.root
    assert ref.seed == split_seed(ds.seed, "heldout") == ds.seed + 1000
    assert ref.class_names == ds.class_names and len(ref) > 0
    train, held = _hashes(ds.root, pattern), _hashes(ref.root, pattern)
    assert len(train) == len(ds) and len(held) == len(ref)  # every file distinct within a split, too
    assert not train & held
    path, desc = reference_for(ds)
    assert path == ref.root and desc == f"held-out split {ref.root}"


def test_instrument_split_redraws_clips_that_repeat_the_excluded_split(tmp_path):
    """Single notes render identically whatever the seed: the same seed twice is the worst case."""
    generate_instruments(tmp_path / "a", 16000, 4000, 2, seed=0)
    taken = frozenset(_hashes(tmp_path / "a", "*.wav"))
    generate_instruments(tmp_path / "b", 16000, 4000, 2, seed=0, exclude=taken)
    assert len(_hashes(tmp_path / "b", "*.wav")) == 12 and not taken & _hashes(tmp_path / "b", "*.wav")


def test_folder_dataset_reference_falls_back_to_training_with_a_warning(tmp_path, caplog):
    train = ShapesDataset(root=tmp_path, per_class=2, heldout_per_class=0)
    assert train.reference_dataset() is None
    folder = ImageFolderDataset(train.root)
    with caplog.at_level(logging.WARNING):
        path, desc = reference_for(folder)
    assert path == train.root and desc == NO_HELDOUT and "TRAINING items" in caplog.text
    other = ShapesDataset(root=tmp_path, per_class=2, seed=7, heldout_per_class=0)
    with_ref = ImageFolderDataset(train.root, eval_root=other.root)
    assert reference_for(with_ref) == (other.root, f"held-out split {other.root}")
    assert len(with_ref.reference_dataset()) == 8
    with pytest.raises(ValueError, match="eval_root.*is the training root"):
        ImageFolderDataset(train.root, eval_root=train.root)
    with pytest.raises(FileNotFoundError, match="modality.dataset.eval_root"):
        ImageFolderDataset(train.root, eval_root=tmp_path / "nope")


def test_motion_metric_does_not_call_empty_clips_perfect(tmp_path):
    dark = -torch.ones(3, 16, 3, 32, 32)
    m = bounce_fit_error(dark)
    assert m["tracked_frac"] == 0.0 and m["track_rms_px"] is None and m["per_clip"] == [None] * 3
    rep = motion_report(dark)
    assert rep["bounce_fit_px"] is None and rep["tracked_frac"] == 0.0 and "tracked_frac = 0" in rep["reason"]
    ds = MovingDigitsDataset(clips_per_class=1, heldout_per_class=1, root=str(tmp_path))
    real = ds[0][0][None]
    alone = bounce_fit_error(real)
    mixed = bounce_fit_error(torch.cat([real, dark[:1]]))
    assert mixed["tracked_frac"] == 0.5 and mixed["track_rms_px"] == pytest.approx(alone["track_rms_px"])
    with_real = motion_report(real, ds, num_real=4)
    assert with_real["tracked_frac_real"] == 1.0 and with_real["num_real"] == 4  # from the held-out split


def test_eval_fraction_holds_out_a_deterministic_part_of_a_folder(tmp_path):
    from modalities.audio.folder import AudioFolderDataset

    src = ShapesDataset(root=tmp_path, per_class=10, heldout_per_class=0)
    a = ImageFolderDataset(src.root, eval_fraction=0.3)
    held = a.reference_dataset()
    train_files = {p.name for p, _ in a.samples}
    held_files = {p.name for p, _ in held.samples}
    assert len(train_files) + len(held_files) == 40 and not train_files & held_files
    assert 4 <= len(held_files) <= 22 and held.class_names == a.class_names
    assert all(a.class_names[label] in p.name for p, label in held.samples)  # labels survive the links
    b = ImageFolderDataset(src.root, eval_fraction=0.3)
    assert b.eval_root == a.eval_root and [p for p, _ in b.samples] == [p for p, _ in a.samples]
    assert reference_for(a) == (a.eval_root, f"held-out split {a.eval_root}")
    with pytest.raises(ValueError, match="not both"):
        ImageFolderDataset(src.root, eval_root=tmp_path, eval_fraction=0.3)
    with pytest.raises(ValueError, match="eval_fraction=1.5"):
        ImageFolderDataset(src.root, eval_fraction=1.5)
    wav_root = SynthInstrumentsDataset(clips_per_class=4, heldout_per_class=0, root=str(tmp_path)).root
    audio = AudioFolderDataset(wav_root, eval_fraction=0.5)
    assert len(audio) + len(audio.reference_dataset()) == 24
    assert {p.name for p, _ in audio.items}.isdisjoint(p.name.split("__")[-1] for p, _ in audio.reference_dataset().items)


def test_motion_metrics_reports_tracked_fraction_beside_the_error(tmp_path):
    """The eval hook's records: tracked fraction and error side by side, real values attached."""
    from modalities.video import motion_metrics

    ds = MovingDigitsDataset(root=tmp_path, num_frames=8, size=16, sprite_size=8, clips_per_class=1,
                             heldout_per_class=1, cache_frames=True)
    real = torch.stack([ds[i][0] for i in range(4)])
    dark = -torch.ones_like(real[:2])
    recs = {r["metric"]: r for r in motion_metrics(torch.cat([real, dark]), ds, num_real=4)}
    assert set(recs) == {"motion_tracked_frac", "motion_bounce_fit_px"}
    assert recs["motion_tracked_frac"]["value"] == pytest.approx(4 / 6)
    assert recs["motion_tracked_frac"]["real_value"] == 1.0
    alone = bounce_fit_error(real)["track_rms_px"]  # the error is over the 4 tracked clips only
    assert recs["motion_bounce_fit_px"]["value"] == pytest.approx(alone)
    none = {r["metric"]: r for r in motion_metrics(dark, None)}
    assert none["motion_tracked_frac"]["value"] == 0.0
    assert none["motion_bounce_fit_px"]["value"] is None and none["motion_bounce_fit_px"]["available"] is False
