import pytest
import torch
from evals_helpers import gaussian_blur, is_increasing, smooth_images

from evals import MissingWeightsError, fid, fvd
from evals.api import evaluate
from evals.video_io import quantize_videos, read_video, write_video


def clips(n=2, t=3, seed=0):
    """(n, t, 3, 32, 32) in [-1, 1]: smooth images that drift a little from frame to frame."""
    base = smooth_images(n, seed).unsqueeze(1)
    drift = torch.linspace(0, 0.3, t).view(1, t, 1, 1, 1)
    return (base + drift * smooth_images(n, seed + 100).unsqueeze(1)).clamp(-1, 1)


def per_frame(v, fn):
    n, t = v.shape[:2]
    return fn(v.reshape(n * t, *v.shape[2:])).reshape(v.shape)


def test_fid_frame_zero_on_itself_blind_to_order_and_grows_with_corruption(inception, tmp_path):
    v = clips()
    for i, c in enumerate(quantize_videos(v)):
        write_video(tmp_path / f"{i}.mp4", c)
    assert read_video(tmp_path / "0.mp4").shape == (3, 32, 32, 3)
    real = fid.image_set(fid.video_frame_batches(tmp_path), inception)  # decoded mp4 frames
    assert real.n == 6
    noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(3))

    def score(x):
        return fid.frechet_distance(real.pool3, fid.image_set(fid.video_frame_batches(x), inception).pool3)

    own = score(v)
    shuffled = score(v[:, torch.randperm(3, generator=torch.Generator().manual_seed(0))])
    assert own < 5.0  # only H.264 (crf 0, yuv444) rounding separates the decoded frames from v
    assert shuffled == pytest.approx(own, abs=1e-6)  # frame order is invisible to fid_frame
    noisy = [score((v + s * noise).clamp(-1, 1)) for s in (0.03, 0.1)]
    blurred = [score(per_frame(v, lambda x: gaussian_blur(x, s))) for s in (0.8, 2.0)]
    assert is_increasing([own] + noisy), noisy
    assert is_increasing([own] + blurred), blurred


class TinyDetector(torch.nn.Module):
    """Stand-in with the I3D TorchScript call signature: (B, 3, T, H, W) in [0, 255] -> (B, 6)."""

    def forward(self, x, rescale=False, resize=False, return_features=False):
        assert rescale and resize and return_features  # StyleGAN-V's flags
        x = x / 127.5 - 1
        return torch.cat([x.mean((2, 3, 4)), x[:, :, 1:].sub(x[:, :, :-1]).abs().mean((2, 3, 4))], 1)


def test_fvd_pipeline_with_injected_detector(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(12, 20, 3, 8, 8, generator=g) * 2 - 1
    for i, c in enumerate(quantize_videos(real)):
        write_video(tmp_path / f"{i}.mp4", c)
    write_video(tmp_path / "short.mp4", quantize_videos(real[:1, :5])[0])  # < 16 frames: discarded
    ex = fvd.I3DExtractor(module=TinyDetector(), sha256="test", name="tiny")
    vs = fvd.video_set(tmp_path, ex, "fvd_any_16f", real=True)
    assert vs.n == 12 and vs.stats.ddof == 0 and vs.stats.dim == 6  # StyleGAN-V: biased covariance
    assert any("shorter than 16" in s for s in vs.skipped)
    same = torch.rand(12, 16, 3, 8, 8, generator=g) * 2 - 1
    frozen = same[:, :1].expand(-1, 16, -1, -1, -1)  # no motion at all
    prot = {"sampler": "heun", "nfe": 10}
    recs = evaluate("video", same, tmp_path, ["fvd"], prot, extractors={"fvd": ex}, fvd_protocol="fvd_any_16f")
    still = evaluate("video", frozen, tmp_path, ["fvd"], prot, extractors={"fvd": ex}, fvd_protocol="fvd_any_16f")
    assert recs[0]["available"] and recs[0]["covariance"] == "biased (N)" and recs[0]["n_fake"] == 12
    assert still[0]["value"] > recs[0]["value"]  # the temporal feature sees the frozen clips
    with pytest.raises(ValueError, match="unknown FVD protocol"):
        fvd.video_set(tmp_path, ex, "fvd_bogus")


def test_fvd_without_i3d_file_reports_why(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_WEIGHTS_I3D", str(tmp_path / "i3d_torchscript.pt"))
    with pytest.raises(MissingWeightsError, match="i3d_torchscript.pt"):
        fvd.I3DExtractor()
    rec = evaluate("video", clips(), tmp_path, ["fvd"], {"nfe": 4})[0]
    assert rec["available"] is False and "i3d_torchscript.pt" in rec["reason"]
    assert "fid_frame" in rec["note"]


def test_video_input_validation():
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        quantize_videos(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="not defined for video"):
        evaluate("video", clips(), ".", ["fid"], {})
