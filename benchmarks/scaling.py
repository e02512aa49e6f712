"""Data-parallel scaling on CPU: training samples/s with 1 process vs N gloo processes (DDP).

Same global batch, model and objective in every configuration; each process gets
``threads // N`` intra-op threads so the comparison uses the same cores. Prints samples/s and the
ratio N-process / 1-process (ideal: 1.0 on a fixed core budget, since DDP adds communication but no
compute; on more cores than one process can use, the ratio shows the gain).

    python benchmarks/scaling.py --procs 1 2 --steps 12 --model tiny
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import SyntheticImages  # noqa: E402

from core.objectives import SelfFlowObjective  # noqa: E402
from core.path import TimeDistribution  # noqa: E402
from core.trainer import Trainer, TrainConfig  # noqa: E402
from core.transformer import MODEL_SIZES, SiT  # noqa: E402
from modalities.image import PixelPatchTokenizer  # noqa: E402


def Images() -> SyntheticImages:
    return SyntheticImages((3, 32, 32), num_classes=4, length=4096)


def measure(rank: int, world: int, port: int, args, out_path: str) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, args.threads // world))
    hidden, depth, heads = MODEL_SIZES[args.model]
    torch.manual_seed(0)
    model = SiT(in_channels=48, hidden_size=hidden, depth=depth, num_heads=heads, num_classes=4)
    objective = SelfFlowObjective(TimeDistribution(), hidden_size=hidden, depth=depth)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, progress=False, ckpt_every=0, device="cpu",
                      log_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, objective, PixelPatchTokenizer(32, 3, 4), Images(), cfg, tmp)
        data = iter(trainer._loader())
        for _ in range(args.warmup):
            trainer.train_step(*next(data))
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(*next(data))
        if world > 1:
            dist.barrier()
        elapsed = time.perf_counter() - t0
    if rank == 0:
        Path(out_path).write_text(json.dumps({"procs": world, "seconds": elapsed,
                                              "samples_per_s": args.steps * args.batch / elapsed}))
    if world > 1:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--threads", type=int, default=2, help="total intra-op threads, split over processes")
    parser.add_argument("--model", default="tiny", choices=sorted(MODEL_SIZES))
    args = parser.parse_args()
    print(f"loadavg before: {open('/proc/loadavg').read().split()[:3]}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            out = os.path.join(tmp, f"{n}.json")
            if n == 1:
                measure(0, 1, 0, args, out)
            else:
                mp.spawn(measure, args=(n, free_port(), args, out), nprocs=n, join=True)
            rows.append(json.loads(Path(out).read_text()))
    base = rows[0]["samples_per_s"]
    print(f"model={args.model} global batch={args.batch} steps={args.steps} threads={args.threads} (Self-Flow step)")
    for r in rows:
        print(f"procs={r['procs']}: {r['samples_per_s']:.1f} samples/s ({r['seconds']:.1f} s)  ratio vs 1 process: "
              f"{r['samples_per_s'] / base:.2f}")
    print(f"loadavg after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
