"""Audio modality: generated data, folder dataset, bad input, mel tokens and their round trip, writer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modalities.audio import (AudioFolderDataset, AudioSampleWriter, MelTokenizer, SynthInstrumentsDataset,
                              probe, read_audio)
from modalities.media_common import MediaError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return SynthInstrumentsDataset(clips_per_class=4, root=str(tmp_path_factory.mktemp("synth")))


@pytest.fixture(scope="module")
def fitted(synth):
    tok = MelTokenizer()
    tok.fit(synth)
    return tok


def _tone(sr: int, seconds: float, f: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * f * t)
    return np.stack([x] * channels, 1) if channels > 1 else x


# --- generated data -----------------------------------------------------------------------

def test_synth_instruments_deterministic(synth, tmp_path):
    again = SynthInstrumentsDataset(clips_per_class=4, root=str(tmp_path / "again"))
    digest = lambda root: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}
    assert digest(synth.root) == digest(again.root) and len(digest(synth.root)) == 24
    assert synth.num_classes == 6 and synth.class_names == ["bell", "clarinet", "flute", "organ", "plucked", "strings"]
    x, y = synth[0]
    assert x.shape == (16000,) and x.dtype == torch.float32 and x.abs().max() <= 1 and x.abs().max() > 0.5
    assert len(synth.skipped) == 0 and sorted(set(synth.labels)) == list(range(6))


# --- folder dataset -----------------------------------------------------------------------

def test_audio_folder_formats_mono_resample_crop_pad(tmp_path):
    root = tmp_path / "audio"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sf.write(root / "a" / "stereo.wav", _tone(16000, 2.0, channels=2), 16000)
    sf.write(root / "a" / "x.flac", _tone(16000, 0.5), 16000)
    sf.write(root / "b" / "y.ogg", _tone(16000, 1.2), 16000, format="OGG", subtype="VORBIS")
    sf.write(root / "b" / "rate44k.wav", _tone(44100, 1.0), 44100)
    ds = AudioFolderDataset(root, sample_rate=16000, num_samples=8000, crop="center")
    assert ds.class_names == ["a", "b"] and len(ds) == 4 and len(ds.skipped) == 0
    for i in range(4):
        x, _ = ds[i]
        assert x.shape == (8000,) and x.abs().max() <= 1
    # 44.1 kHz file resampled: 1 s -> 16000 samples, 440 Hz stays 440 Hz.
    wave, sr = read_audio(root / "b" / "rate44k.wav", 16000)
    assert sr == 44100 and abs(wave.shape[0] - 16000) <= 1
    spec = torch.fft.rfft(wave[:16000]).abs()
    assert abs(int(spec.argmax()) - 440) <= 1
    # Short file zero-padded at the end; min_seconds skips it instead.
    short = AudioFolderDataset(root, num_samples=16000, crop="start")
    x = short[short.items.index((root / "a" / "x.flac", 0))][0]
    assert x[:8000].abs().max() > 0.4 and x[8000:].abs().max() == 0
    strict = AudioFolderDataset(root, num_samples=16000, min_seconds=1.0, resample=False)
    reasons = dict(strict.skipped)
    assert "shorter than dataset.min_seconds" in reasons[str(root / "a" / "x.flac")]
    assert "sample rate is 44100 Hz, expected 16000 Hz" in reasons[str(root / "b" / "rate44k.wav")]
    assert len(strict) == 2


def test_bad_audio_skipped_counted_named(tmp_path):
    root = tmp_path / "audio"
    (root / "c").mkdir(parents=True)
    sf.write(root / "c" / "good.wav", _tone(16000, 1.0), 16000)
    (root / "c" / "zero.wav").write_bytes(b"")
    (root / "c" / "text.mp3").write_text("not audio at all\n" * 20)
    good = (root / "c" / "good.wav").read_bytes()
    (root / "c" / "header_only.wav").write_bytes(good[:44])
    ds = AudioFolderDataset(root)
    assert len(ds) == 1 and len(ds.skipped) == 3
    reasons = dict(ds.skipped)
    assert "0 bytes" in reasons[str(root / "c" / "zero.wav")]
    assert "not a readable audio file" in reasons[str(root / "c" / "text.mp3")]
    assert "no samples" in reasons[str(root / "c" / "header_only.wav")]
    with pytest.raises(MediaError, match="zero.wav"):
        read_audio(root / "c" / "zero.wav")
    with pytest.raises(MediaError, match="text.mp3"):
        probe(root / "c" / "text.mp3")
    (tmp_path / "empty" / "k").mkdir(parents=True)
    with pytest.raises(ValueError, match="no audio files"):
        AudioFolderDataset(tmp_path / "empty")
    (tmp_path / "allbad" / "k").mkdir(parents=True)
    (tmp_path / "allbad" / "k" / "z.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no usable audio files[\s\S]*z.wav"):
        AudioFolderDataset(tmp_path / "allbad")


# --- tokenizer ----------------------------------------------------------------------------

def test_mel_tokens_shape_coords_and_exact_patching(fitted, synth):
    x = torch.stack([synth[i][0] for i in range(0, 24, 4)])
    z = fitted.encode(x)
    assert z.shape == (6, 128, 64) and fitted.token_dim == 64 and fitted.num_tokens == 128
    c = fitted.coords()
    assert c.shape == (128, 3) and (c[:, 0] == 0).all()
    assert c[:, 1].max() == 7 and c[:, 2].max() == 15 and c[1].tolist() == [0, 0, 1] and c[16].tolist() == [0, 1, 0]
    # Patching is an exact inverse; the statistics normalise the data.
    assert torch.equal(fitted.tokens_to_mel(z), fitted.normalised_mel(x))
    assert abs(float(z.mean())) < 0.2 and 0.7 < float(z.std()) < 1.3
    # Token 17 = band group 1, frame group 1.
    m = fitted.normalised_mel(x)
    assert torch.equal(z[0, 17], m[0, 8:16, 8:16].reshape(-1))


def test_mel_statistics_live_in_buffers_and_are_required(fitted):
    sd = fitted.state_dict()
    assert {"band_mean", "band_std", "fitted"} <= set(sd) and bool(sd["fitted"])
    fresh = MelTokenizer()
    with pytest.raises(RuntimeError, match=r"call tokenizer.fit"):
        fresh.encode(torch.zeros(1, 16000))
    fresh.load_state_dict(sd)
    x = torch.randn(2, 16000) * 0.1
    assert torch.equal(fresh.encode(x), fitted.encode(x))
    with pytest.raises(ValueError, match="num_samples"):
        fitted.encode(torch.zeros(1, 8000))


def test_mel_round_trip_quality(fitted, synth):
    """mel -> waveform (inverse mel + Griffin-Lim) -> mel; reports and bounds the error."""
    x = torch.stack([synth[i][0] for i in range(0, 24, 2)])   # two clips per instrument
    z = fitted.encode(x)
    wave = fitted.decode(z)
    assert wave.shape == (12, 16000) and wave.abs().max() <= 1
    m1, m2 = fitted.normalised_mel(x), fitted.normalised_mel(wave)
    err_norm = float((m1 - m2).abs().mean())
    db = lambda w: 10 * torch.log10(fitted.mel(w) + 1e-10)
    d1, d2 = db(x), db(wave)
    active = d1 > d1.amax(dim=(1, 2), keepdim=True) - 40          # bins within 40 dB of each clip's peak
    err_db = float((d1 - d2).abs()[active].mean())
    print(f"\nmel round trip: {err_norm:.3f} mean |error| in normalised log-mel units, "
          f"{err_db:.2f} dB on bins within 40 dB of the peak")
    assert err_norm < 0.25 and err_db < 3.0
    # Decoding is deterministic (no random phase init), so sample files are reproducible.
    assert torch.equal(fitted.decode(z[:2]), wave[:2])


# --- writer -------------------------------------------------------------------------------

def test_audio_writer_outputs(tmp_path):
    wave = torch.rand(3, 16000) * 2 - 1
    paths = AudioSampleWriter(gap_s=0.5).write(wave, torch.tensor([2, 0, 1]), tmp_path, "final")
    assert set(paths) == {"audio", "spectrogram", "clips"}
    data, sr = sf.read(paths["audio"])
    assert sr == 16000 and data.shape == (3 * 24000,)
    assert paths["spectrogram"].stat().st_size > 1000
    clips = sorted(Path(paths["clips"]).glob("*.wav"))
    assert [c.name for c in clips] == ["0000_c2.wav", "0001_c0.wav", "0002_c1.wav"]
    back, _ = read_audio(clips[0])
    assert torch.allclose(back, wave[0], atol=1 / 32767 + 1e-6)
