"""Spoken digits: deterministic renders, splits disjoint by voice and by content, its classifier, a short run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from modalities.audio import spoken_digits as SD
from modalities.data import MissingDataError, require


def _sources_or_skip():
    try:
        return require("espeak_ng"), require("flite")
    except MissingDataError as e:  # CI fetches them (.ci/run); a developer without them sees why
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """Small training / held-out / classifier splits (3 clips per digit each)."""
    _sources_or_skip()
    root = tmp_path_factory.mktemp("digits")
    train = SD.SpokenDigitsDataset(root=str(root), clips_per_class=3, heldout_per_class=3)
    return train, train.reference_dataset(), train.split("classifier", 3)


def test_finish_trims_normalises_and_centres():
    sr, n = 16000, 16000
    word = (0.3 * np.sin(np.arange(4000) / 5.0) * 32767).astype("<i2")
    pcm = np.concatenate([np.zeros(3000, "<i2"), word, np.zeros(5000, "<i2")]).tobytes()
    clip = SD.finish(pcm, sr, sr, n)
    active = np.flatnonzero(np.abs(clip) > 1e-9)
    assert clip.shape == (n,) and abs((active[0] + active[-1]) / 2 - n / 2) < 100  # centred
    assert active[-1] - active[0] < 4200  # silence trimmed
    assert np.sqrt((clip[active[0]:active[-1] + 1] ** 2).mean()) == pytest.approx(0.1, rel=0.05)
    assert SD.finish(np.ones(20000, "<i2").tobytes(), sr, sr, n) is None  # longer than the clip: re-drawn
    assert SD.finish(np.zeros(800, "<i2").tobytes(), sr, sr, n) is None  # silent
    assert SD.finish(word.tobytes(), 22050, sr, n).shape == (n,)  # espeak's rate is resampled


def test_voice_lists_are_disjoint_and_cross_engines():
    for a in SD.VARIANTS:
        for b in SD.VARIANTS:
            if a < b:
                assert not set(SD.VARIANTS[a]) & set(SD.VARIANTS[b]), (a, b)
                assert not set(SD.FLITE[a]) & set(SD.FLITE[b]), (a, b)
                assert not set(SD.voices(a)) & set(SD.voices(b)), (a, b)
    assert len(SD.FLITE["heldout"]) == 2
    assert sorted(sum(SD.FLITE.values(), ())) == sorted(("kal", "kal16", "awb", "rms", "slt"))


def test_renders_are_byte_identical_whatever_the_order(tmp_path):
    espeak_dir, flite_dir = _sources_or_skip()
    from modalities.audio.speech_engines import render_espeak, render_flite

    jobs = [SD.draw_job("training", c, np.random.default_rng([7, c])) for c in range(4)]
    jobs = [dict(j, engine="espeak", voice=v, rate=170, pitch=50, range=50, seed=1)
            for j, v in zip(jobs, ("en-us+f4", "en+klatt", "en-gb-x-rp+m1", "en-029+Alex"))]
    once = render_espeak(jobs + jobs, espeak_dir)  # the library keeps state: a second pass must not differ
    again = render_espeak(jobs[::-1], espeak_dir)[::-1]
    assert [p for p, _ in once[:4]] == [p for p, _ in once[4:]] == [p for p, _ in again]
    assert all(rate == 22050 and len(p) > 2000 for p, rate in once)
    job = {"engine": "flite", "voice": "slt", "text": "seven", "stretch": 1.1, "f0": 160}
    assert render_flite(job, flite_dir) == render_flite(job, flite_dir)
    # A whole split, built twice, gives the same files.
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        SD.generate_digits(out, "heldout", 16000, 16000, 1, seed=5)
    digest = lambda root: {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
                           for p in sorted(root.rglob("*.wav"))}
    assert digest(a) == digest(b) and len(digest(a)) == 10
    assert (a / "voices.csv").read_text() == (b / "voices.csv").read_text()


def test_splits_are_disjoint_by_voice_and_content(splits):
    from modalities.audio.io import probe

    hashes, voices = {}, {}
    for ds in splits:
        assert ds.class_names == list(SD.DIGITS) and ds.num_classes == 10 and len(ds) == 30
        assert all(Path(p).parent.name == SD.DIGITS[label] for p, label in ds.items)  # index = digit value
        rows = SD.read_voices(ds.root)
        assert len(rows) == len(ds)
        voices[ds.voice_split] = {f"{r['engine']}:{r['voice']}" for r in rows}
        assert voices[ds.voice_split] <= set(SD.voices(ds.voice_split))
        for p, _ in ds.items:
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            assert digest not in hashes, f"{p} repeats {hashes.get(digest)}"
            hashes[digest] = p
        info = probe(ds.items[0][0])
        assert info.sample_rate == 16000 and info.num_samples == 16000
        wave, _ = ds[0]
        assert wave.shape == (16000,) and 0.05 < float(wave.abs().max()) <= 0.96
    assert not voices["training"] & voices["heldout"] and not voices["training"] & voices["classifier"]
    assert not voices["heldout"] & voices["classifier"]
    assert splits[0].reference_root() == splits[1].root


def test_missing_source_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError, match="python -m modalities.data fetch espeak_ng"):
        SD.SpokenDigitsDataset(root=str(tmp_path / "data"), clips_per_class=2)
    assert not list((tmp_path / "data").glob("spoken_digits*"))  # nothing half-built


@pytest.mark.slow
def test_classifier_reads_digits_of_heldout_voices():
    """SpeechNet, trained on the classifier voices, on the held-out voices (0.972 when written)."""
    _sources_or_skip()
    from modalities.audio.speechnet import SPEECHNET
    from modalities.classifier import get_classifier

    ds = SD.SpokenDigitsDataset(clips_per_class=4)  # the training split does not matter here: keep it small
    clf, (hx, hy) = get_classifier(SPEECHNET, ds)
    assert len(hx) == 320 and sorted(set(hy.tolist())) == list(range(10))
    assert clf.provenance["heldout_accuracy"] >= 0.95, clf.provenance


@pytest.mark.slow
def test_spoken_digits_training_run(tmp_path, compose):
    """``run.py modality=spoken_digits`` end to end: train, sample, domain metrics, report."""
    _sources_or_skip()
    import json

    import run

    cfg = compose(["modality=spoken_digits", "train=smoke", "model=micro", f"run_dir={tmp_path / 'run'}",
                   "eval.metrics=[]", "eval.num_samples=10", "sample.num_samples=4", "sample.num_steps=4",
                   "modality.dataset.clips_per_class=4"])  # the same splits as the classifier test: its cache
    out = run.main(cfg)
    run_dir = Path(out["run_dir"])
    assert out["steps"] == 6 and (run_dir / "report.md").is_file()
    assert {"audio", "spectrogram", "clips"} <= set(out["assets"])
    records = {r["metric"]: r for r in json.loads((run_dir / "eval.json").read_text())}
    acc = records["class_acc_speechnet"]
    assert acc.get("value") is not None and acc["real_value"] >= 0.9, acc
    assert "held-out split" in acc["reference"]
