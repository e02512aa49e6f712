#!/usr/bin/env python
"""Model FLOPs utilisation (MFU) of the fm and Self-Flow training steps, eager and compiled.

Default: SiT-XL/2 on 32x32x4 latents (256 tokens of 16 channels), batch 32, bf16 autocast, one
CUDA device, each step through ``Trainer.train_step`` (fused AdamW, deferred finite check -- no
host sync in the step --, EMA update; Self-Flow with its EMA teacher). ``--quick`` runs a tiny
model for a couple of steps on whatever device there is (CPU included, fp32 there) so a test or CI
can smoke the script; its MFU is only printed when ``--peak-tflops`` is given.

How FLOPs are counted (analytically, matmul FLOPs only, 2 per multiply-add; ``flops_per_step``):

* per token and block, forward: ``2 * (3D^2 + D^2 + 2 * r * D^2)`` for qkv, proj and the MLP
  (``24 D^2`` at mlp ratio r = 4) plus ``4 N D`` for attention (``Q K^T`` and ``A V``: ``4 N^2 D``
  per sample and layer);
* per token, once: the patch embedding ``2 C D`` and the final linear ``2 D C_out``;
* per conditioning row (one per sample; two per sample under DTS) the timestep MLP
  ``2 (256 D + D^2)``, every block's adaLN ``2 D 6D`` and the final adaLN ``2 D 2D``;
* Self-Flow's head: ``2 (D 2D + 2D D)`` per token;
* a trained pass costs 3x its forward (backward = 2x forward); the Self-Flow teacher is one
  forward of the patch embedding, the conditioning and its first ``k`` blocks (no final layer).
  Elementwise work, norms, softmax, the optimiser and the EMA are not counted.

The teacher's FLOPs are counted as useful: the teacher forward is part of the method (it makes
the target of the representation loss), not overhead of this implementation. ``mfu_excl_teacher``
is printed too, for comparison with counts that leave it out.

The peak is the device's dense bf16 tensor-core rate: 989 TFLOP/s for an H100/H200 SXM (spec
sheet) unless ``--peak-tflops`` says otherwise.

Usage::

    python benchmarks/gpu_mfu.py                    # on a GPU: fm + selfflow, eager + compiled
    python benchmarks/gpu_mfu.py --modes cudagraphs # torch.compile mode reduce-overhead (CUDA graphs)
    python benchmarks/gpu_mfu.py --quick --modes eager   # CPU smoke (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: F401 -- puts the repository on sys.path
import torch  # noqa: E402

from _common import SyntheticImages, median, timed  # noqa: E402
from core.objectives import FlowMatchingObjective, SelfFlowObjective  # noqa: E402
from core.path import TimeDistribution  # noqa: E402
from core.trainer import Trainer, TrainConfig  # noqa: E402
from core.transformer import MODEL_SIZES, SiT  # noqa: E402
from modalities.image import PixelPatchTokenizer  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, spec sheets
T_FREQ_DIM = 256  # TimestepEmbedder's sinusoidal width


@dataclass(frozen=True)
class Arch:
    hidden: int
    depth: int
    tokens: int
    in_channels: int
    out_channels: int
    mlp_ratio: float = 4.0


def forward_flops(a: Arch, batch: int, blocks: int, rows: int, final: bool = True) -> float:
    """Matmul FLOPs of one forward through the embedding, ``blocks`` blocks and (optionally) the final layer.

    ``rows``: conditioning rows per sample (1 for one t per sample, 2 under DTS).
    """
    D, N = a.hidden, a.tokens
    mlp = int(D * a.mlp_ratio)
    per_token_block = 2 * (3 * D * D + D * D + 2 * D * mlp) + 4 * N * D
    per_token = 2 * a.in_channels * D + blocks * per_token_block + (2 * D * a.out_channels if final else 0)
    per_row = 2 * (T_FREQ_DIM * D + D * D) + blocks * 2 * D * 6 * D + (2 * D * 2 * D if final else 0)
    return batch * (N * per_token + rows * per_row)


def flops_per_step(method: str, a: Arch, batch: int, teacher_layer: int = 0) -> dict[str, float]:
    """``{"total", "teacher"}`` matmul FLOPs of one training step (see the module docstring)."""
    if method == "fm":
        return {"total": 3 * forward_flops(a, batch, a.depth, rows=1), "teacher": 0.0}
    if method != "selfflow":
        raise ValueError(f"method={method!r}: fm or selfflow")
    D = a.hidden
    student = 3 * (forward_flops(a, batch, a.depth, rows=2) + batch * a.tokens * 2 * (D * 2 * D + 2 * D * D))
    teacher = forward_flops(a, batch, teacher_layer, rows=1, final=False)
    return {"total": student + teacher, "teacher": teacher}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run_row(method: str, mode: str, args, device: torch.device) -> dict:
    hidden, depth, heads = MODEL_SIZES[args.model]
    torch.manual_seed(0)
    tok = PixelPatchTokenizer(image_size=args.image_size, channels=4, patch_size=2)
    model = SiT(in_channels=16, hidden_size=hidden, depth=depth, num_heads=heads, num_classes=1000,
                learn_sigma=True)
    p_t = TimeDistribution()
    objective = (FlowMatchingObjective(p_t) if method == "fm"
                 else SelfFlowObjective(p_t, hidden_size=hidden, depth=depth))
    cfg = TrainConfig(steps=10**6, batch_size=args.batch, precision=args.precision, compile=mode != "eager",
                      compile_mode="reduce-overhead" if mode == "cudagraphs" else "default",
                      progress=False, ckpt_every=0, device=device.type, finite_check="deferred")
    data = SyntheticImages((4, args.image_size, args.image_size), num_classes=1000, length=max(64, args.batch),
                           normal=True)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, objective, tok, data, cfg, Path(run_dir))
        raw = torch.stack([data[i][0] for i in range(args.batch)]).to(device)
        y = torch.arange(args.batch, device=device) % 1000
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.train_step(raw, y)  # compilation happens here when enabled
        _common.sync(device)
        first_s = time.perf_counter() - t0
        times = timed(lambda: trainer.train_step(raw, y), args.steps, warmup=args.warmup, device=device)
        trainer.sync_nonfinite()
    arch = Arch(hidden, depth, tokens=tok.coords().shape[0], in_channels=16, out_channels=model.out_channels)
    fl = flops_per_step(method, arch, args.batch, getattr(objective, "teacher_layer", 0))
    med = median(times)
    peak = peak_tflops(device, args.peak_tflops)
    row = {"method": method, "mode": mode, "model": f"{args.model}/2", "batch": args.batch,
           "precision": args.precision, "device": str(device), "first_step_s": round(first_s, 2),
           "median_ms": med * 1e3, "min_ms": min(times) * 1e3, "gflop_per_step": fl["total"] / 1e9,
           "teacher_gflop_per_step": fl["teacher"] / 1e9, "tflops_per_s": fl["total"] / med / 1e12,
           "nonfinite_steps": trainer.nonfinite_total}
    if peak:
        row["mfu"] = fl["total"] / med / (peak * 1e12)
        row["mfu_excl_teacher"] = (fl["total"] - fl["teacher"]) / med / (peak * 1e12)
        row["peak_tflops"] = peak
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 steps, any device: a smoke run")
    parser.add_argument("--model", default=None, choices=sorted(MODEL_SIZES), help="default SiT-XL (quick: micro)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (quick: 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3; quick 0)")
    parser.add_argument("--image-size", type=int, default=None, help="latent side (default 32; quick 8)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default bf16 (fp32 on CPU)")
    parser.add_argument("--methods", default="fm,selfflow")
    parser.add_argument("--modes", default="eager,compiled",
                        help="comma list out of eager, compiled, cudagraphs (compile mode reduce-overhead)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for the MFU (default: by GPU name)")
    parser.add_argument("--target", type=float, default=0.40, help="MFU target printed as MET / MISSED")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    q = args.quick
    args.model = args.model or ("micro" if q else "SiT-XL")
    args.batch = args.batch or (2 if q else 32)
    args.steps = args.steps or (2 if q else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if q else 3)
    args.image_size = args.image_size or (8 if q else 32)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"# gpu_mfu: {args.model}/2, batch {args.batch}, {args.precision}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}", flush=True)
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            try:
                row = run_row(method, mode, args, device)
            except Exception as exc:  # one failing path (e.g. compile) must not hide the others
                row = {"method": method, "mode": mode, "error": repr(exc)[:400]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'method':<9} {'mode':<9} {'median ms':>10} {'TFLOP/s':>9} {'GFLOP/step':>11} {'MFU':>7} {'MFU ex-T':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<9} {r['mode']:<9} ERROR {r['error'][:80]}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        ex = f"{100 * r['mfu_excl_teacher']:.1f}%" if "mfu" in r else "n/a"
        print(f"{r['method']:<9} {r['mode']:<9} {r['median_ms']:>10.1f} {r['tflops_per_s']:>9.4g} "
              f"{r['gflop_per_step']:>11.4g} {mfu:>7} {ex:>9}")
    for r in rows:
        if "mfu" in r:
            verdict = "MET" if r["mfu"] >= args.target else "MISSED"
            print(f"TARGET mfu {r['method']} {r['mode']}: {verdict} ({100 * r['mfu']:.1f}% vs >= {100 * args.target:.0f}%)")
    if not any("mfu" in r for r in rows):
        print("TARGET mfu: NOT MEASURED (no known peak for this device; pass --peak-tflops)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
