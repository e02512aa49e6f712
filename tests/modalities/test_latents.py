"""Image latents: SD-VAE tokenizer on a tiny random AutoencoderKL, the latent cache, the encode command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers", reason="the SD-VAE tokenizer needs the optional 'vae' extra")

from modalities.latents import (LatentCache, LatentFolderDataset, SDVAETokenizer, load_vae, main, patchify,  # noqa: E402
                                unpatchify)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A tiny randomly initialised AutoencoderKL (downsampling 2, 4 latent channels); no weights needed."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def _images(root, n_per_class=3, size=40):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_patchify_round_trip_and_layout():
    z = torch.randn(2, 4, 8, 6)
    t = patchify(z, 2)
    assert t.shape == (2, 12, 16)
    assert torch.equal(unpatchify(t, 2, 4, 3), z)
    assert torch.equal(t[0, 4], z[0, :, 2:4, 2:4].reshape(-1))   # token 4 = row 1, col 1; (c, p, q) order


def test_sd_vae_tokenizer(vae_dir):
    tok = SDVAETokenizer(str(vae_dir), image_size=32)
    assert tok.down == 2 and tok.latent_size == 16 and tok.grid == 8 and tok.token_dim == 16
    assert tok.num_tokens == 64 and tok.coords()[9].tolist() == [0, 1, 1]
    assert not any(k.startswith("vae") for k in tok.state_dict())          # VAE stays out of checkpoints
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens = tok.encode(x)
    assert tokens.shape == (2, 64, 16)
    z = tok.image_to_latent(x)
    raw = tok.vae.encode(x).latent_dist.mean
    assert torch.allclose(z, raw * 0.18215, atol=1e-6)
    img = tok.decode(tokens)
    assert img.shape == (2, 3, 32, 32) and img.abs().max() <= 1
    # latent input: tokens from pre-encoded latents equal tokens from images
    lat = SDVAETokenizer(str(vae_dir), image_size=32, input="latent")
    assert torch.equal(lat.encode(z), tokens)
    with pytest.raises(ValueError, match="another VAE or image_size"):
        lat.encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        load_vae(vae_dir / "nope")


def test_latent_cache_keys(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"one")
    c1 = LatentCache(tmp_path / "cache", {"size": 32})
    key = c1.key(src)
    assert c1.get(key) is None
    c1.put(key, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(c1.get(key), np.arange(6).reshape(2, 3))
    assert LatentCache(tmp_path / "cache", {"size": 64}).get(key) is None    # other config: no stale read
    src.write_bytes(b"two")
    assert c1.get(c1.key(src)) is None                                      # changed file: new key
    assert json.loads((c1.dir / "config.json").read_text()) == {"size": 32}


def test_encode_command_caches_and_dataset_reads(vae_dir, tmp_path, capsys):
    src, out = tmp_path / "images", tmp_path / "latents"
    _images(src)
    (src / "dog" / "broken.png").write_text("not an image")
    argv = ["encode", "--src", str(src), "--out", str(out), "--vae", str(vae_dir), "--image-size", "32",
            "--batch-size", "4", "--device", "cpu"]
    assert main(argv) == 0
    assert "6 images" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["class_names"] == ["cat", "dog"] and len(index["items"]) == 6 and len(index["skipped"]) == 1
    assert "broken.png" in index["skipped"][0][0]
    # second run: everything cached, nothing re-encoded
    assert main(argv) == 0
    assert "0 newly encoded" in capsys.readouterr().out
    ds = LatentFolderDataset(out, sample_posterior=False)
    assert len(ds) == 6 and ds.num_classes == 2 and len(ds.skipped) == 1
    z, y = ds[0]
    assert z.shape == (4, 16, 16) and y == 0
    # the cached mean equals encoding the same preprocessed image now
    tok = SDVAETokenizer(str(vae_dir), image_size=32)
    from modalities.latents import load_image
    ref = tok.image_to_latent(load_image(src / "cat" / "0.png", 32)[None])[0]
    assert torch.allclose(z, ref, atol=1e-5)
    sampled = LatentFolderDataset(out)
    assert not torch.equal(sampled[0][0], z)
    # a changed image size is a different cache entry
    assert main(argv[:-6] + ["--image-size", "16", "--batch-size", "4", "--device", "cpu"]) == 0
    assert "6 newly encoded" in capsys.readouterr().out
    assert main(["encode", "--src", str(tmp_path / "none"), "--out", str(out), "--vae", str(vae_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_image_latent_training_run(vae_dir, tmp_path, monkeypatch):
    """encode command -> modality=image_latent -> run.main: trains on cached latents, decodes samples."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import run

    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))
    _images(tmp_path / "images", n_per_class=8, size=32)
    assert main(["encode", "--src", str(tmp_path / "images"), "--out", str(tmp_path / "lat"), "--vae", str(vae_dir),
                 "--image-size", "32", "--device", "cpu"]) == 0
    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "modality=image_latent", "train=smoke", "model=micro", f"run_dir={tmp_path / 'run'}",
            "eval.enabled=false", "sample.num_samples=4", "sample.num_steps=4",
            f"modality.dataset.root={tmp_path / 'lat'}", f"modality.tokenizer.vae_path={vae_dir}",
            "modality.tokenizer.image_size=32",
        ])
    out = run.main(cfg)
    assert out["steps"] == 6 and Path(out["assets"]["grid"]).is_file()
