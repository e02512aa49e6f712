"""DINOv2 backbone (evals/dinov2.py) and REPA's DINOv2 token encoder, on small random checkpoints
written in the official state-dict layout (the real 350 MB file is not available offline).

The reference forward is independent of ours: torch's own nn.TransformerEncoderLayer (pre-norm,
GELU, eps 1e-6) with the LayerScale vectors folded into the output projections.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evals.dinov2 import IMAGENET_MEAN, IMAGENET_STD, dinov2_from_state_dict, load_dinov2, preprocess, resample_pos_embed
from evals.weights import MissingWeightsError


def official_state_dict(dim=128, depth=2, grid=4, registers=0, swiglu_hidden=None, seed=0, chunks=0) -> dict:
    """Random weights under the key names of dinov2_vit*14*_pretrain.pth (LayerScale != 1)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim), "mask_token": torch.zeros(1, dim),
          "patch_embed.proj.weight": r(dim, 3, 14, 14), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    if registers:
        sd["register_tokens"] = r(1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i // (depth // chunks)}.{i}." if chunks else f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                   b + "attn.qkv.weight": r(3 * dim, dim, s=0.2), b + "attn.qkv.bias": r(3 * dim),
                   b + "attn.proj.weight": r(dim, dim, s=0.1), b + "attn.proj.bias": r(dim),
                   b + "ls1.gamma": 0.5 + r(dim, s=0.3), b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "ls2.gamma": 0.5 + r(dim, s=0.3)})
        if swiglu_hidden:
            sd.update({b + "mlp.w12.weight": r(2 * swiglu_hidden, dim, s=0.1), b + "mlp.w12.bias": r(2 * swiglu_hidden),
                       b + "mlp.w3.weight": r(dim, swiglu_hidden, s=0.1), b + "mlp.w3.bias": r(dim)})
        else:
            sd.update({b + "mlp.fc1.weight": r(4 * dim, dim, s=0.1), b + "mlp.fc1.bias": r(4 * dim),
                       b + "mlp.fc2.weight": r(dim, 4 * dim, s=0.1), b + "mlp.fc2.bias": r(dim)})
    return sd


def reference_forward(sd: dict, x: torch.Tensor, depth: int, registers: int = 0) -> torch.Tensor:
    """Independent forward with nn.TransformerEncoderLayer; LayerScale folded into proj / fc2."""
    dim = sd["cls_token"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(x), -1, -1), t], 1) + sd["pos_embed"]
    if registers:
        t = torch.cat([t[:, :1], sd["register_tokens"].expand(len(x), -1, -1), t[:, 1:]], 1)
    for i in range(depth):
        b = f"blocks.{i}."
        layer = nn.TransformerEncoderLayer(dim, dim // 64, 4 * dim, dropout=0.0, activation="gelu",
                                           layer_norm_eps=1e-6, batch_first=True, norm_first=True).eval()
        g1, g2 = sd[b + "ls1.gamma"], sd[b + "ls2.gamma"]
        layer.load_state_dict({
            "self_attn.in_proj_weight": sd[b + "attn.qkv.weight"], "self_attn.in_proj_bias": sd[b + "attn.qkv.bias"],
            "self_attn.out_proj.weight": sd[b + "attn.proj.weight"] * g1[:, None],
            "self_attn.out_proj.bias": sd[b + "attn.proj.bias"] * g1,
            "linear1.weight": sd[b + "mlp.fc1.weight"], "linear1.bias": sd[b + "mlp.fc1.bias"],
            "linear2.weight": sd[b + "mlp.fc2.weight"] * g2[:, None], "linear2.bias": sd[b + "mlp.fc2.bias"] * g2,
            "norm1.weight": sd[b + "norm1.weight"], "norm1.bias": sd[b + "norm1.bias"],
            "norm2.weight": sd[b + "norm2.weight"], "norm2.bias": sd[b + "norm2.bias"]})
        t = layer(t)
    t = F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 1 + registers:]


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("chunks", [0, 2])
def test_forward_matches_independent_transformer(registers, chunks):
    torch.manual_seed(0)
    sd = official_state_dict(registers=registers, chunks=chunks)
    net = dinov2_from_state_dict(sd)
    assert (net.dim, len(net.blocks), net.registers) == (128, 2, registers)
    x = torch.randn(2, 3, 56, 56)  # the native 4x4 grid: the stored position table as is
    flat = official_state_dict(registers=registers)  # same draws, un-chunked names
    with torch.no_grad():
        ours, ref = net(x), reference_forward(flat, x, depth=2, registers=registers)
    assert ours.shape == (2, 16, 128)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_swiglu_mlp_matches_manual():
    sd = official_state_dict(depth=1, swiglu_hidden=96)
    net = dinov2_from_state_dict(sd)
    x = torch.randn(3, 128)
    a, b = (x @ sd["blocks.0.mlp.w12.weight"].T + sd["blocks.0.mlp.w12.bias"]).split(96, dim=-1)
    expect = (F.silu(a) * b) @ sd["blocks.0.mlp.w3.weight"].T + sd["blocks.0.mlp.w3.bias"]
    with torch.no_grad():
        torch.testing.assert_close(net.blocks[0].mlp(x), expect)


def test_position_resampling():
    table = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(table, (4, 4)) is table  # native grid: untouched, both modes
    assert resample_pos_embed(table, (4, 4), "dinov2") is table
    # REPA's load-time resample: bicubic + antialias to an explicit size; class position kept
    out = resample_pos_embed(table, (2, 3))
    expect = F.interpolate(table[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(2, 3), mode="bicubic",
                           antialias=True).permute(0, 2, 3, 1).reshape(1, 6, 8)
    assert out.shape == (1, 7, 8) and torch.equal(out[:, :1], table[:, :1])
    torch.testing.assert_close(out[:, 1:], expect)
    # a constant table stays constant under either interpolation (weights sum to one)
    const = torch.ones(1, 17, 8)
    for mode in ("repa", "dinov2"):
        torch.testing.assert_close(resample_pos_embed(const, (6, 6), mode), torch.ones(1, 37, 8))
    with pytest.raises(ValueError, match="pos_resample"):
        resample_pos_embed(table, (3, 3), "nearest")


def test_off_native_grid_runs_and_rejects_bad_sizes():
    net = dinov2_from_state_dict(official_state_dict())
    with torch.no_grad():
        assert net(torch.randn(1, 3, 28, 42)).shape == (1, 6, 128)  # 2x3 grid, resampled positions
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        net(torch.randn(1, 3, 30, 30))


def test_preprocess_is_repa_order():
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    out = preprocess(img, 224)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expect = F.interpolate(((img + 1) / 2 - mean) / std, size=(224, 224), mode="bicubic", align_corners=False)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, expect)


def test_bad_checkpoints_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("SELFFLOW_WEIGHTS_DINOV2", raising=False)
    with pytest.raises(MissingWeightsError, match="dinov2_vitb14_pretrain.pth"):
        load_dinov2()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.pth.*cannot be read"):
        load_dinov2(junk)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="other.pth: not a DINOv2 checkpoint"):
        load_dinov2(other)
    broken = official_state_dict()
    broken["blocks.1.attn.qkv.weight"] = broken["blocks.1.attn.qkv.weight"][:-1]
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(ValueError, match="bad.pth: DINOv2 state dict does not match"):
        load_dinov2(bad)


@pytest.fixture
def dinov2_file(tmp_path, monkeypatch):
    """A small official-layout checkpoint installed where the weights manager looks."""
    path = tmp_path / "weights" / "dinov2_vitb14_pretrain.pth"
    path.parent.mkdir()
    torch.save(official_state_dict(), path)
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DINOV2", str(path))
    return path


def test_token_encoder_images_and_video(dinov2_file):
    from app.repa_encoders import DINOv2TokenEncoder

    enc = DINOv2TokenEncoder(in_dim=12, input_size=56)  # 4x4 DINOv2 grid
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        full = enc.net(preprocess(img, 56))  # (2, 16, 128), raster order
    # a 2x2 model grid gets the mean of each 2x2 quadrant of DINOv2 tokens
    out = enc(torch.zeros(2, 4, 12), img)
    grid = full.view(2, 4, 4, 128)
    torch.testing.assert_close(out[:, 0], grid[:, :2, :2].mean((1, 2)))
    torch.testing.assert_close(out[:, 3], grid[:, 2:, 2:].mean((1, 2)))
    # video: tubelets (2, 16, 16) over 4 frames of 32x32 -> (2 time, 2x2 space) tokens, frames averaged
    enc_v = DINOv2TokenEncoder(in_dim=12, input_size=56, patch=(2, 16, 16))
    vid = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    out_v = enc_v(torch.zeros(1, 8, 12), vid)
    per_frame = torch.stack([enc_v(torch.zeros(1, 4, 12), vid[:, f]) for f in range(4)], 1)  # (1, 4, 4, D)
    torch.testing.assert_close(out_v.view(1, 2, 4, 128), per_frame.view(1, 2, 2, 4, 128).mean(2))
    with pytest.raises(ValueError, match="RGB pixels"):
        enc(torch.zeros(2, 4, 12), torch.randn(2, 4, 32, 32))  # SD-VAE latents are not images


def test_offline_encoder_picks_dinov2_when_present(dinov2_file, monkeypatch):
    from app.repa_encoders import DINOv2TokenEncoder, offline_encoder

    enc = offline_encoder(12, "image", "auto", input_size=56)
    assert isinstance(enc, DINOv2TokenEncoder) and enc.feature_dim == 128
    with pytest.raises(ValueError, match="backbone=dinov2 is an image network"):
        offline_encoder(12, "audio", "dinov2")
    with pytest.raises(ValueError, match="name the network"):
        offline_encoder(12, "image", "auto", weights_path=str(dinov2_file))
    with pytest.raises(ValueError, match="multiple of DINOv2's patch size"):
        offline_encoder(12, "image", "dinov2", input_size=139)
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DINOV2", str(dinov2_file.parent / "absent.pth"))
    with pytest.raises(MissingWeightsError):
        offline_encoder(12, "image", "dinov2")


@pytest.mark.parametrize("modality", ["image", "video"])
def test_repa_config_builds_dinov2(dinov2_file, compose, modality):
    """configs/method/repa.yaml -> the DINOv2 encoder, with the modality's tubelet for video."""
    from hydra.utils import instantiate

    from app.repa_encoders import DINOv2TokenEncoder

    cfg = compose([f"modality={modality}", "method=repa", "method.encoder.backbone=dinov2",
                   "method.encoder.input_size=56"])
    enc = instantiate(cfg.method.encoder, in_dim=12)
    assert isinstance(enc, DINOv2TokenEncoder) and enc.input_size == 56 and enc.net.pos_resample == "repa"
    assert enc.patch == (tuple(cfg.modality.tokenizer.patch) if modality == "video" else None)


# ---- fd_dinov2 -------------------------------------------------------------------------------------

def _frechet_np(a: np.ndarray, b: np.ndarray) -> float:
    """Independent Frechet distance: float64 np.cov + scipy sqrtm."""
    from scipy import linalg

    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fd_dinov2_matches_an_independent_computation(tmp_path, monkeypatch):
    from PIL import Image

    from evals.api import evaluate

    path = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(official_state_dict(dim=64, depth=1, seed=3), path)
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DINOV2_L", str(path))
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8)
    fake = rng.integers(0, 200, (10, 20, 20, 3), dtype=np.uint8)
    (tmp_path / "real" / "c").mkdir(parents=True)
    for i, im in enumerate(real):
        Image.fromarray(im).save(tmp_path / "real" / "c" / f"{i:02d}.png")
    net = dinov2_from_state_dict(torch.load(path))

    def feats(x):  # the protocol written out: resize, /255, ImageNet mean/std, class token
        t = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float(), size=(224, 224), mode="bicubic",
                          antialias=True) / 255.0
        t = (t - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            return net.normed_tokens(t)[:, 0].double().numpy()

    expect = _frechet_np(feats(real), feats(fake))
    for attempt in range(2):  # the second call reads the cached reference statistics
        rec, = evaluate("image", fake=fake, real=tmp_path / "real", metrics=["fd_dinov2"],
                        cache_dir=tmp_path / "stats")
        assert rec["available"] and rec["n_real"] == 12 and rec["n_fake"] == 10
        assert rec["value"] == pytest.approx(expect, rel=1e-6, abs=1e-6)
    assert len(list((tmp_path / "stats").glob("fd_dinov2_ref_*.npz"))) == 1
    assert not list((tmp_path / "stats").glob("fid_ref_*"))  # never shares a file with the Inception's


def test_fd_dinov2_unavailable_without_weights_or_images(tmp_path, monkeypatch):
    from evals.api import evaluate

    monkeypatch.setenv("SELFFLOW_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("SELFFLOW_WEIGHTS_DINOV2_L", raising=False)
    fake = np.zeros((4, 16, 16, 3), np.uint8)
    (tmp_path / "real").mkdir()
    rec, = evaluate("image", fake=fake, real=tmp_path / "real", metrics=["fd_dinov2"])
    assert not rec["available"] and "dinov2_vitl14_pretrain.pth" in rec["reason"]
    path = tmp_path / "w.pth"
    torch.save(official_state_dict(dim=64, depth=1), path)
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DINOV2_L", str(path))
    stats = tmp_path / "ref_stats.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    rec, = evaluate("image", fake=fake, real=stats, metrics=["fd_dinov2"])
    assert not rec["available"] and "Inception statistics only" in rec["reason"]
