"""The optional learned mel latent: train a tiny autoencoder, load it through MelTokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from modalities.audio import MelTokenizer, SynthInstrumentsDataset
from modalities.audio.mel_ae import load_checkpoint
from modalities.audio.mel_ae_train import train_mel_autoencoder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mel_ae")
    ds = SynthInstrumentsDataset(clips_per_class=1, root=str(root / "data"))
    report = train_mel_autoencoder(ds, MelTokenizer(), root / "ae", steps=10, batch_size=4, lr=3e-3, log_every=5)
    return ds, report


def test_checkpoint_is_safe_and_self_describing(trained):
    _, report = trained
    state = load_checkpoint(report["checkpoint"])            # weights_only=True inside
    assert state["ae_config"] == {"latent_channels": 4, "width": 32}
    assert state["mel_config"]["n_mels"] == 64 and state["mel_stats"]["band_mean"].shape == (64,)
    assert report["latent_shape"] == [4, 16, 32] and report["recon_mae_normalised_logmel"] > 0
    saved = json.loads(open(report["checkpoint"].replace(".pt", ".json")).read())
    assert saved["steps"] == 10
    assert [h["step"] for h in report["history"]] == [5, 10]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in report["history"])


def test_latent_tokenizer(trained):
    ds, report = trained
    tok = MelTokenizer(latent_checkpoint=report["checkpoint"])
    assert tok.token_dim == 16 and tok.num_tokens == 128 and tok.grid == (8, 16)
    assert bool(tok.fitted)                                   # statistics came with the checkpoint
    mean = tok.band_mean.clone()
    tok.fit(ds)                                               # must not refit: the AE was trained on these
    assert torch.equal(tok.band_mean, mean)
    x = torch.stack([ds[i][0] for i in range(4)])
    z = tok.encode(x)
    assert z.shape == (4, 128, 16) and abs(float(z.std()) - 1) < 0.5   # latent scale normalises tokens
    c = tok.coords()
    assert c.shape == (128, 3) and c[:, 1].max() == 7 and c[:, 2].max() == 15
    wave = tok.decode(z)
    assert wave.shape == (4, 16000) and torch.isfinite(wave).all()
    assert tok.tokens_to_mel(z).shape == (4, 64, 126)
    # the autoencoder travels with the tokenizer's state_dict (training checkpoints are self-contained)
    assert any(k.startswith("ae.") for k in tok.state_dict())


def test_latent_checkpoint_errors(trained, tmp_path):
    _, report = trained
    with pytest.raises(ValueError, match="other mel settings"):
        MelTokenizer(n_mels=32, latent_checkpoint=report["checkpoint"])
    with pytest.raises(FileNotFoundError, match="python -m modalities.audio.mel_ae"):
        MelTokenizer(latent_checkpoint=str(tmp_path / "missing.pt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a mel autoencoder checkpoint"):
        MelTokenizer(latent_checkpoint=str(tmp_path / "other.pt"))


@pytest.mark.slow
def test_train_tokenizer_entry_and_latent_training_run(tmp_path, monkeypatch):
    """task=train_tokenizer's entry point on the composed config, then a run on its latents."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import run
    from modalities.audio.mel_ae_train import train_tokenizer

    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))
    configs = Path(__file__).resolve().parents[2] / "configs"
    common = ["modality=audio", "modality.dataset.clips_per_class=2"]
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*common, "modality.tokenizer_training.steps=5",
                                                       "modality.tokenizer_training.batch_size=4"])
    report = train_tokenizer(cfg, tmp_path / "ae")
    assert Path(report["checkpoint"]).is_file()
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *common, f"modality.tokenizer.latent_checkpoint={report['checkpoint']}", "train=smoke", "model=micro",
            f"run_dir={tmp_path / 'run'}", "eval.enabled=false", "sample.num_samples=2", "sample.num_steps=2"])
    out = run.main(cfg)
    assert out["steps"] == 6 and Path(out["assets"]["audio"]).is_file()
