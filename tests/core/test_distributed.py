"""Two gloo processes on CPU reproduce one process with the same global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.objectives import SelfFlowObjective
from core.path import TimeDistribution
from core.samplers import SamplerConfig
from core.data import ResumableBatchSampler
from core.trainer import Trainer, TrainConfig
from core.transformer import SiT
from modalities.image import PixelPatchTokenizer


class _Data(torch.utils.data.Dataset):
    num_classes = 3

    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand((3, 8, 8), generator=g) * 2 - 1, i % 3


def _train(out_dir, steps=4, fsdp=False, resume=None):
    torch.manual_seed(0)
    model = SiT(in_channels=12, hidden_size=32, depth=4, num_heads=2, num_classes=3)
    objective = SelfFlowObjective(TimeDistribution(), hidden_size=32, depth=4, mask_ratio=0.5)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-3, log_every=2, ckpt_every=2, progress=False,
                      ema_decay=0.9, device="cpu", fsdp=fsdp, resume=resume)
    trainer = Trainer(model, objective, PixelPatchTokenizer(8, 3, 2), _Data(), cfg, out_dir,
                      sampler_cfg=SamplerConfig(method="sde", num_steps=5))
    trainer.fit()
    samples, _, _ = trainer.generate(10, seed=3, batch_size=3)
    return trainer, samples


def _worker(rank, world, port, out_dir, fsdp=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer, samples = _train(out_dir, fsdp=fsdp)
        if fsdp:  # resume the sharded run from its step-2 checkpoint: same end state
            import shutil
            if rank == 0:
                shutil.copytree(os.path.join(out_dir, "checkpoints"), os.path.join(out_dir, "ck_copy"))
                os.remove(os.path.join(out_dir, "ck_copy", "ckpt_00000004.pt"))
                with open(os.path.join(out_dir, "ck_copy", "latest"), "w") as f:
                    f.write("ckpt_00000002.pt\n")
            dist.barrier()
            _train(os.path.join(out_dir, "resumed"), fsdp=True, resume=os.path.join(out_dir, "ck_copy"))
        if rank == 0:
            torch.save({"model": trainer.model.state_dict(), "ema": trainer.ema.model.state_dict(),
                        "head": trainer.objective.state_dict(), "samples": samples}, os.path.join(out_dir, "dist.pt"))
    finally:
        dist.destroy_process_group()


def test_rank_shards_cover_the_global_batch():
    one = iter(ResumableBatchSampler(24, 8, seed=1))
    ranks = [iter(ResumableBatchSampler(24, 8, seed=1, rank=r, world_size=2)) for r in range(2)]
    for _ in range(5):  # across an epoch boundary
        assert next(one) == next(ranks[0]) + next(ranks[1])
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(24, 7, seed=1, world_size=2)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, free_port):
    single, single_samples = _train(tmp_path / "single")
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    multi = torch.load(tmp_path / "dist.pt", weights_only=True)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(multi["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for k, v in single.ema.model.state_dict().items():
        torch.testing.assert_close(multi["ema"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for k, v in single.objective.state_dict().items():
        torch.testing.assert_close(multi["head"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # sampling sharded over two processes gives the same samples as one (to the float tolerance of the weights)
    torch.testing.assert_close(multi["samples"], single_samples, rtol=1e-4, atol=1e-4)
    # and the training actually moved the weights
    torch.manual_seed(0)
    init = SiT(in_channels=12, hidden_size=32, depth=4, num_heads=2, num_classes=3).state_dict()
    assert any((init[k] - v).abs().max() > 1e-4 for k, v in single.model.state_dict().items())


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_process_and_checkpoints_are_plain(tmp_path, free_port):
    from core.checkpoint import load_checkpoint

    single, _ = _train(tmp_path / "single")
    mp.spawn(_worker, args=(2, free_port, str(tmp_path), True), nprocs=2, join=True)
    multi = torch.load(tmp_path / "dist.pt", weights_only=True)  # rank 0's (sharded) trainer, plain copy below
    ckpt = load_checkpoint(tmp_path / "checkpoints")  # written by the FSDP2 run: full, unsharded tensors
    assert ckpt["optimizer_format"] == "fsdp_full" and ckpt["step"] == 4
    for k, v in single.model.state_dict().items():
        assert not hasattr(ckpt["model"][k], "full_tensor")
        torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for k, v in single.ema.model.state_dict().items():
        torch.testing.assert_close(ckpt["ema"]["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for k, v in single.objective.trainable_state_dict().items():
        torch.testing.assert_close(ckpt["objective"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert resumed["step"] == 4
    for k, v in ckpt["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=1e-6, atol=1e-7, msg=k)
    assert multi["samples"].shape == (10, 3, 8, 8)
