"""One prepared GPU check (run it where a CUDA device exists; it refuses to run on CPU).

Measures, with our real code paths (Trainer.train_step: bf16 autocast, fused AdamW, EMA, the
Self-Flow objective with its EMA teacher):

1. SiT-XL/2 Self-Flow training steps at batch 32 on 32x32x4 latents (256 tokens x 16), bf16,
   eager and with ``train.compile=true``: ms/step, samples/s, model FLOPs utilisation (MFU)
   against the H200's dense bf16 peak (989 TFLOP/s spec) -- FLOPs counted analytically below;
2. the same with activation checkpointing (peak memory vs eager);
3. scalar-t inference forward: t (B,) vs the same t given per token (B, N), batch 64;
4. SiT-XL/2 sampling at batch 64 in bf16: SDE 250 steps and Euler 50 steps (images/s, latents
   only -- the SD-VAE decode is not included).

The NCCL path is checked separately by ``torchrun --nproc_per_node=1 run.py ...`` (see the
command in the closing note / README). Usage: ``python benchmarks/gpu_check.py --json out.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import SyntheticImages, median, timed  # noqa: E402

from core.objectives import SelfFlowObjective  # noqa: E402
from core.path import TimeDistribution  # noqa: E402
from core.samplers import SamplerConfig, sample  # noqa: E402
from core.trainer import Trainer, TrainConfig  # noqa: E402
from core.transformer import SiT  # noqa: E402
from modalities.image import PixelPatchTokenizer  # noqa: E402

H200_BF16_PEAK = 989e12  # dense bf16 tensor-core peak (spec sheet); ~790e12 measured on an 8k matmul here
XL = dict(hidden_size=1152, depth=28, num_heads=16)


def Latents() -> SyntheticImages:
    """Random 4x32x32 "SD-VAE latents" with ImageNet-sized labels (only cost matters here)."""
    return SyntheticImages((4, 32, 32), num_classes=1000, length=4096, normal=True)


def forward_flops(batch: int, tokens: int, hidden: int, depth: int) -> float:
    """Matmul FLOPs of one forward: per block per token 24 D^2 (qkv 6, proj 2, MLP 16) + 4 N D (attention)."""
    return batch * tokens * depth * (24 * hidden**2 + 4 * tokens * hidden)


def train_row(compile_model: bool, grad_ckpt: bool, batch: int, steps: int, run_dir: Path) -> dict:
    torch.manual_seed(0)
    model = SiT(in_channels=16, num_classes=1000, grad_checkpointing=grad_ckpt, **XL)
    objective = SelfFlowObjective(TimeDistribution(), hidden_size=XL["hidden_size"], depth=XL["depth"])
    cfg = TrainConfig(steps=10**6, batch_size=batch, precision="bf16", compile=compile_model, progress=False,
                      ckpt_every=0, device="cuda")
    tok = PixelPatchTokenizer(image_size=32, channels=4, patch_size=2)
    trainer = Trainer(model, objective, tok, Latents(), cfg, run_dir)
    data = Latents()
    raw = torch.stack([data[i][0] for i in range(batch)]).cuda()
    y = torch.arange(batch).cuda()
    torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter()
    trainer.train_step(raw, y)  # includes compilation when enabled
    torch.cuda.synchronize()
    first = time.perf_counter() - t_compile
    times = timed(lambda: trainer.train_step(raw, y), steps, warmup=2)
    med = median(times)
    f = forward_flops(batch, 256, XL["hidden_size"], XL["depth"])
    teacher = forward_flops(batch, 256, XL["hidden_size"], objective.teacher_layer)
    step_flops = 3 * f + teacher  # student fwd + bwd (2x) + truncated no-grad teacher fwd
    return {"row": f"selfflow train bf16 compile={compile_model} grad_ckpt={grad_ckpt}", "batch": batch,
            "first_step_s": first, "median_ms": med * 1e3, "min_ms": min(times) * 1e3,
            "samples_per_s": batch / med, "tflops_per_s": step_flops / med / 1e12,
            "mfu_vs_989": step_flops / med / H200_BF16_PEAK,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}


@torch.no_grad()
def forward_rows(batch: int, steps: int) -> list[dict]:
    torch.manual_seed(0)
    model = SiT(in_channels=16, num_classes=1000, **XL).cuda().eval()
    coords = PixelPatchTokenizer(32, 4, 2).coords().cuda()
    x = torch.randn(batch, 256, 16, device="cuda")
    y = torch.arange(batch, device="cuda")
    t = torch.rand(batch, device="cuda")
    t_tok = t[:, None].expand(batch, 256).contiguous()
    rows = {}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for name, tt in (("plain t (B,)", t), ("scalar t given per token (B,N)", t_tok)):
            times = timed(lambda: model(x, tt, y, coords), steps, warmup=3)
            rows[name] = median(times)
    base = rows["plain t (B,)"]
    return [{"row": f"forward bf16 {k}", "batch": batch, "median_ms": v * 1e3, "ratio_vs_plain": v / base}
            for k, v in rows.items()]


@torch.no_grad()
def sampling_rows(batch: int) -> list[dict]:
    torch.manual_seed(0)
    model = SiT(in_channels=16, num_classes=1000, **XL).cuda().eval()
    coords = PixelPatchTokenizer(32, 4, 2).coords().cuda()
    y = torch.randint(0, 1000, (batch,), device="cuda")
    out = []
    for cfg in (SamplerConfig(method="sde", num_steps=250), SamplerConfig(method="euler", num_steps=50),
                SamplerConfig(method="sde", num_steps=250, cfg_scale=1.8, guidance_high=0.7)):
        g = torch.Generator(device="cuda").manual_seed(0)
        noise = torch.randn(batch, 256, 16, device="cuda", generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            sample(model, noise, y, coords, cfg, generator=g)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            x, nfe = sample(model, noise, y, coords, cfg, generator=g)
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out.append({"row": f"sample SiT-XL/2 bf16 {cfg.method} {cfg.num_steps} steps cfg {cfg.cfg_scale}",
                    "batch": batch, "seconds": dt, "images_per_s": batch / dt, "nfe": nfe, "nfe_per_s": nfe / dt,
                    "finite": bool(torch.isfinite(x).all())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "flash_sdp": torch.backends.cuda.flash_sdp_enabled()}
    print(json.dumps(info), flush=True)
    results = []
    run_dir = Path("/tmp/gpu_check_run")
    for compile_model, grad_ckpt in ((False, False), (False, True)) + (() if args.skip_compile else ((True, False),)):
        try:
            row = train_row(compile_model, grad_ckpt, 32, args.steps, run_dir)
        except Exception as exc:  # report and continue: one failing path must not hide the others
            row = {"row": f"selfflow train compile={compile_model} grad_ckpt={grad_ckpt}", "error": repr(exc)[:500]}
        print(json.dumps(row), flush=True)
        results.append(row)
        torch.cuda.empty_cache()
    for row in forward_rows(64, args.steps) + sampling_rows(64):
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
