import numpy as np
import pytest
import torch
from evals_helpers import gaussian_blur, is_increasing, smooth_images
from PIL import Image

from evals import fid
from evals.api import evaluate
from evals.images import quantize, save_adm_npz
from evals.inception import resize_bilinear_tf1


def tf1_resize_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Literal per-pixel TF-1 ResizeBilinear (align_corners=False, half_pixel_centers=False), float64."""
    c, h, w = img.shape
    out = np.zeros((c, size, size))
    for oy in range(size):
        sy = oy * (h / size)
        y0, y1, fy = int(np.floor(sy)), min(int(np.floor(sy)) + 1, h - 1), sy - np.floor(sy)
        for ox in range(size):
            sx = ox * (w / size)
            x0, x1, fx = int(np.floor(sx)), min(int(np.floor(sx)) + 1, w - 1), sx - np.floor(sx)
            top = img[:, y0, x0] + (img[:, y0, x1] - img[:, y0, x0]) * fx
            bot = img[:, y1, x0] + (img[:, y1, x1] - img[:, y1, x0]) * fx
            out[:, oy, ox] = top + (bot - top) * fy
    return out


def test_tf1_resize_matches_literal_definition():
    x = torch.randint(0, 256, (1, 3, 7, 11)).float()
    got = resize_bilinear_tf1(x, 23)[0].numpy()
    np.testing.assert_allclose(got, tf1_resize_reference(x[0].numpy().astype(np.float64), 23), atol=1e-3)
    # closed form: 2 -> 4 without half-pixel offset samples 0, 0.5, 1, 1.5 (clamped) along each axis
    two = torch.tensor([[[[0.0, 100.0], [200.0, 300.0]]]])
    np.testing.assert_allclose(resize_bilinear_tf1(two, 4)[0, 0, 0].numpy(), [0, 50, 100, 100])
    np.testing.assert_allclose(resize_bilinear_tf1(two, 4)[0, 0, :, 0].numpy(), [0, 100, 200, 200])


def test_eager_network_matches_the_torchscript_file(inception):
    import warnings

    from evals import weights

    path, _ = weights.resolve("inception")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(path), map_location="cpu")
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    # profiling-executor passes would only cost time here; one plain run is what we compare
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        np.testing.assert_allclose(inception.trunk(x)["pool3"].numpy(), ts(x).numpy(), atol=1e-4)


def test_features_shape_determinism_and_batch_invariance(inception):
    imgs = torch.from_numpy(quantize(smooth_images(2, 3))).permute(0, 3, 1, 2)
    a = inception(imgs)
    assert a["pool3"].shape == (2, 2048) and a["spatial"].shape == (2, 17 * 17 * 7)
    assert torch.isfinite(a["pool3"]).all() and (a["pool3"] >= 0).all()  # pool of ReLUs
    b = inception(imgs)
    assert torch.equal(a["pool3"], b["pool3"])
    split = torch.cat([inception(imgs[:1])["pool3"], inception(imgs[1:])["pool3"]])
    np.testing.assert_allclose(split.numpy(), a["pool3"].numpy(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def corrupted_sets(inception):
    """Inception summaries of one base set and its blurred / noisy versions (8 images each: the
    covariances are rank-deficient, which the low-rank Frechet route handles exactly)."""
    base = smooth_images(8, 0)
    noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(1))
    sets = {"base": fid.image_set(base, inception)}
    for s in (0.02, 0.06):
        sets[("noise", s)] = fid.image_set((base + s * noise).clamp(-1, 1), inception)
    for s in (0.7, 2.0):
        sets[("blur", s)] = fid.image_set(gaussian_blur(base, s), inception)
    return sets


@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_fid_grows_with_corruption(corrupted_sets, kind):
    base = corrupted_sets["base"]
    levels = sorted(k[1] for k in corrupted_sets if isinstance(k, tuple) and k[0] == kind)
    # strength 0 (the set itself), then increasing strengths
    fids = [fid.frechet_distance(base.pool3, x)
            for x in [base.pool3] + [corrupted_sets[(kind, s)].pool3 for s in levels]]
    assert abs(fids[0]) < 1e-6 and fids[1] > 0.1 and is_increasing(fids), fids


def test_fid_of_a_set_against_its_png_folder_is_zero_and_cached(inception, tmp_path):
    imgs = smooth_images(6, 7)
    for i, a in enumerate(quantize(imgs)):  # ImageFolder layout: class subfolders of PNGs
        d = tmp_path / "real" / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / f"{i}.png")
    cache = tmp_path / "cache"
    prot = {"sampler": "euler", "nfe": 8, "cfg_scale": 1.5}
    recs = evaluate("image", imgs, tmp_path / "real", ["fid", "sfid", "precision", "recall", "is"], prot, cache)
    r = {x["metric"]: x for x in recs}
    assert abs(r["fid"]["value"]) < 1e-3 and abs(r["sfid"]["value"]) < 1e-3
    assert r["precision"]["value"] == 1.0 and r["recall"]["value"] == 1.0
    assert r["fid"]["n_real"] == 6 and r["fid"]["n_fake"] == 6 and r["fid"]["nfe"] == 8
    assert r["fid"]["weights_sha256"].startswith("7ff4a85c") and len(r["fid"]["reference_stats_hash"]) == 64
    if not r["is"]["available"]:  # IS needs the user-supplied logits file
        assert "pt_inception-2015-12-05" in r["is"]["reason"]
    cached = list(cache.glob("fid_ref_*.npz"))
    assert len(cached) == 1
    # the second run (fake given as an ADM sample npz of the same images) reads the cached
    # reference statistics: same hash, same number
    npz = save_adm_npz(tmp_path / "samples.npz", imgs)
    again = evaluate("image", str(npz), tmp_path / "real", ["fid"], prot, cache)[0]
    assert again["reference_stats_hash"] == r["fid"]["reference_stats_hash"]
    assert again["value"] == pytest.approx(r["fid"]["value"], abs=1e-6)


def test_adm_npz_export_quantisation(tmp_path):
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    p = save_adm_npz(tmp_path / "s.npz", x)
    with np.load(p) as f:
        arr = f["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (1, 1, 6, 3)
    # clamp((x + 1) * 127.5 + 0.5, 0, 255) truncated (DiT sample_ddp.py)
    assert arr[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_precision_recall_on_known_manifolds(rng):
    a = rng.standard_normal((200, 8))
    assert fid.precision_recall(a, a) == (1.0, 1.0)
    far = a + 100.0
    assert fid.precision_recall(a, far) == (0.0, 0.0)
    # samples collapsed onto a small part of the data: high precision, low recall
    b = rng.standard_normal((200, 2))
    part = b[b[:, 0] < -0.5]  # about 30 % of the distribution, one side of it
    p, r = fid.precision_recall(b, part)
    assert p > 0.95 and r < 0.6


def test_inception_score_closed_form():
    # with one-hot-like logits for K distinct classes in equal shares, IS = K; constant logits give 1
    w = np.zeros((1008, 2048))
    w[np.arange(4), np.arange(4)] = 50.0
    feats = np.zeros((400, 2048))
    feats[np.arange(400), np.arange(400) % 4] = 1.0
    assert fid.inception_score(feats, w) == pytest.approx(4.0, rel=1e-6)
    assert fid.inception_score(feats, np.zeros((1008, 2048))) == pytest.approx(1.0)
    assert fid.inception_score(feats, w, split_size=100) == pytest.approx(4.0, rel=1e-6)


def test_missing_inception_gives_documented_error(tmp_path, monkeypatch):
    from evals import MissingWeightsError, weights
    from evals.inception import load_inception

    monkeypatch.setenv("SELFFLOW_WEIGHTS_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(MissingWeightsError, match="default_1.pt"):
        load_inception()
    rec = evaluate("image", smooth_images(2, 0), tmp_path, ["fid"], {"nfe": 1})[0]
    assert rec["available"] is False and "SELFFLOW_WEIGHTS_INCEPTION" in rec["reason"]
    with pytest.raises(MissingWeightsError):
        evaluate("image", smooth_images(2, 0), tmp_path, ["fid"], {}, strict=True)
    assert weights.spec("inception").offline
