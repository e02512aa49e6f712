"""GPU paths of the extractors: same features on CUDA as on the CPU. Skipped without a GPU."""

import numpy as np
import pytest
import torch

from evals import weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_inception_on_cuda_matches_cpu():
    from evals.inception import InceptionTF2015, load_inception

    if weights.available("inception"):
        cpu, _ = load_inception(device="cpu")
        gpu, _ = load_inception(device="cuda")
    else:  # the architecture and the TF-1 resize still run; random weights are enough to compare devices
        torch.manual_seed(0)
        cpu = InceptionTF2015().eval()
        for p in cpu.parameters():
            p.data.normal_(0, 0.05)
        gpu = InceptionTF2015().eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.cuda()
    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randint(0, 256, (4, 3, 64, 80), dtype=torch.uint8)
    a, b = cpu(x), gpu(x.cuda())
    for k in ("pool3", "spatial"):
        np.testing.assert_allclose(b[k].cpu().numpy(), a[k].numpy(), rtol=1e-3, atol=1e-3)


def test_aisfx_on_cuda_matches_cpu():
    if not weights.available("aisfx"):
        pytest.skip("aisfx weights absent; run python -m evals.weights fetch")
    from evals.audio_nets import aisfx_embed, load_aisfx

    x = (np.random.default_rng(0).standard_normal(44100 * 4) * 0.1).astype(np.float32)
    cpu, _ = load_aisfx(device="cpu")
    gpu, _ = load_aisfx(device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    np.testing.assert_allclose(aisfx_embed(gpu, x), aisfx_embed(cpu, x), rtol=1e-3, atol=1e-3)


def test_api_runs_with_device_cuda(tmp_path):
    if not weights.available("inception"):
        pytest.skip("inception weights absent")
    from PIL import Image

    from evals.api import evaluate

    imgs = torch.rand(4, 3, 32, 32) * 2 - 1
    (tmp_path / "c").mkdir()
    for i, a in enumerate(((imgs + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()):
        Image.fromarray(a).save(tmp_path / "c" / f"{i}.png")
    rec = evaluate("image", imgs.cuda(), tmp_path, ["fid"], {}, tmp_path / "cache", device="cuda")[0]
    assert rec["available"] and abs(rec["value"]) < 1e-2
