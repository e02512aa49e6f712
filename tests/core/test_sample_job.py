"""Sampling job: deterministic SDE with a fixed seed, rank sharding, resumable shards, ADM npz round trip."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from core.sample_job import class_labels, quantize, run_sampling, write_npz_streaming
from core.samplers import SamplerConfig, sample
from core.transformer import SiT

GRID, P, CH = 4, 2, 3
SDE = SamplerConfig(method="sde", num_steps=8)


def make_model():
    torch.manual_seed(0)
    model = SiT(in_channels=CH * P * P, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    with torch.no_grad():  # random everywhere (adaLN-Zero init would make the velocity 0)
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def decode(tokens):  # (B, N, c p q) -> (B, 3, H, W) in [-1, 1]
    B = tokens.shape[0]
    x = tokens.reshape(B, GRID, GRID, CH, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, CH, GRID * P, GRID * P)
    return x.tanh()


def coords():
    h, w = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    return torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3)


def _run(out_dir, model=None, **kw):
    args = dict(num_samples=11, batch_size=3, seed=5, class_mode="random")
    args.update(kw)
    cfg = args.pop("cfg", SDE)
    return run_sampling(model or make_model(), decode, coords(), cfg, out_dir=out_dir, **args)


def _arr(path):
    with np.load(path) as z:
        return z["arr_0"], z["arr_1"]


def test_sde_with_fixed_seed_is_deterministic(tmp_path):
    model = make_model()
    noise = torch.randn(2, GRID * GRID, CH * P * P)
    y = torch.tensor([0, 2])
    a, nfe = sample(model, noise, y, coords(), SDE, generator=torch.Generator().manual_seed(3))
    b, _ = sample(model, noise, y, coords(), SDE, generator=torch.Generator().manual_seed(3))
    c, _ = sample(model, noise, y, coords(), SDE, generator=torch.Generator().manual_seed(4))
    assert nfe == SDE.num_steps and torch.equal(a, b) and not torch.allclose(a, c)
    first = _run(tmp_path / "a", model)
    second = _run(tmp_path / "b", model)
    other = _run(tmp_path / "c", model, seed=6)
    assert np.array_equal(_arr(first["npz"])[0], _arr(second["npz"])[0])
    assert not np.array_equal(_arr(first["npz"])[0], _arr(other["npz"])[0])


def test_npz_round_trip_and_pngs(tmp_path):
    summary = _run(tmp_path, save_png=True)
    arr, labels = _arr(summary["npz"])
    assert arr.dtype == np.uint8 and arr.shape == (11, GRID * P, GRID * P, 3)  # ADM: NHWC uint8
    assert np.array_equal(labels, class_labels(11, 3, "random", 5).numpy())
    shards = [np.load(tmp_path / "shards" / f"shard_{i:05d}.npz")["samples"] for i in range(4)]
    assert np.array_equal(arr, np.concatenate(shards))  # merged in batch order
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / "000010.png")), arr[10])
    assert summary["generated_batches"] == 4 and summary["nfe_per_batch"] == SDE.num_steps
    # quantisation: round (SiT, ADM-npz convention of this job) vs floor (Self-Flow / REPA releases)
    x = torch.tensor([-1.0, 0.0, 1.0, -1.5, 0.999, 0.004]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert quantize(x, "round")[0, 0, :, 0].tolist() == [0, 128, 255, 0, 255, 128]
    assert quantize(x, "floor")[0, 0, :, 0].tolist() == [0, 127, 255, 0, 254, 128]
    audio = torch.randn(2, 100)
    assert np.array_equal(quantize(audio), audio.numpy())  # non-image samples stay float
    chunks = [np.random.rand(2, 5).astype(np.float32), np.random.rand(3, 5).astype(np.float32)]
    write_npz_streaming(tmp_path / "f.npz", {"arr_0": ((5, 5), np.float32, iter(chunks))})
    assert np.array_equal(np.load(tmp_path / "f.npz")["arr_0"], np.concatenate(chunks))


def test_rerun_skips_finished_shards(tmp_path):
    first = _run(tmp_path)
    reference = _arr(first["npz"])[0]
    (tmp_path / "shards" / "shard_00002.npz").unlink()  # as if killed while making batch 2
    (tmp_path / "shards" / "shard_00001.npz").write_bytes(b"truncated")  # a foreign/corrupt file is redone
    again = _run(tmp_path)
    assert again["generated_batches"] == 2 and again["skipped_batches"] == 2
    assert np.array_equal(_arr(again["npz"])[0], reference)
    with pytest.raises(ValueError, match=r"different sampling job \(differs in \['batch_size'\]\)"):
        _run(tmp_path, batch_size=4)


def test_labels():
    bal = class_labels(30, 3, "balanced")
    assert torch.bincount(bal).tolist() == [10, 10, 10]
    rnd = class_labels(1000, 7, "random", seed=1)
    assert rnd.min() >= 0 and rnd.max() <= 6 and len(set(rnd.tolist())) == 7
    assert torch.equal(rnd, class_labels(1000, 7, "random", seed=1))
    assert class_labels(4, 0).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="class_mode"):
        class_labels(4, 3, "sorted")


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _run(out_dir, cfg=SamplerConfig(method="sde", num_steps=4))
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_samples_of_one_process(tmp_path, free_port):
    single = _run(tmp_path / "single", cfg=SamplerConfig(method="sde", num_steps=4))
    mp.spawn(_worker, args=(2, free_port, str(tmp_path / "multi")), nprocs=2, join=True)
    a, la = _arr(single["npz"])
    b, lb = _arr(tmp_path / "multi" / "samples_11.npz")
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_sampling_progress_bar_on_stderr(tmp_path, capsys):
    _run(tmp_path / "a", num_samples=4, batch_size=2, cfg=SamplerConfig(method="euler", num_steps=2), progress=True)
    assert "sampling" in capsys.readouterr().err
    _run(tmp_path / "b", num_samples=4, batch_size=2, cfg=SamplerConfig(method="euler", num_steps=2), progress=False)
    assert "sampling" not in capsys.readouterr().err
