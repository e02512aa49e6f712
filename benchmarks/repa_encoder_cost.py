"""What REPA's DINOv2 encoder costs per training step, against plain flow matching in the same run.

Both rows go through the real ``Trainer.train_step`` (autocast, AdamW, EMA) with the same SiT on
the same 256 tokens: 256x256 RGB images cut into 16x16 pixel patches (768 values per token), so
REPA's encoder sees real pixels. REPA adds the DINOv2 forward (ImageNet normalisation, bicubic
resize to 224 px, ViT/14 -> 16x16 patch tokens) and its projector. The DINOv2 weights are random,
in the official layout (timing does not depend on their values; no file is downloaded).

Prints one JSON line per row and the ratio repa/fm. Usage:

    python benchmarks/repa_encoder_cost.py                 # CUDA: SiT-XL/2-width model, DINOv2-B, bf16
    python benchmarks/repa_encoder_cost.py --small --steps 3  # CPU smoke: tiny SiT, tiny DINOv2, fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import SyntheticImages, median, timed, trainer_step  # noqa: E402

from core.objectives import FlowMatchingObjective, REPAObjective  # noqa: E402
from core.path import TimeDistribution  # noqa: E402
from core.trainer import Trainer, TrainConfig  # noqa: E402
from core.transformer import SiT  # noqa: E402
from evals.dinov2 import DINOv2  # noqa: E402
from app.repa_encoders import DINOv2TokenEncoder  # noqa: E402
from modalities.image import PixelPatchTokenizer  # noqa: E402


def row(name: str, objective, a, device: str, run_dir: Path) -> dict:
    torch.manual_seed(0)
    model = SiT(in_channels=3 * a.patch ** 2, num_classes=1000, hidden_size=a.hidden, depth=a.depth,
                num_heads=a.heads)
    cfg = TrainConfig(steps=10**6, batch_size=a.batch, precision=a.precision, progress=False, ckpt_every=0,
                      device=device)
    tok = PixelPatchTokenizer(image_size=a.image_size, channels=3, patch_size=a.patch)
    data = SyntheticImages((3, a.image_size, a.image_size), num_classes=1000, length=1024)
    trainer = Trainer(model, objective, tok, data, cfg, run_dir / name)
    raw = torch.stack([data[i][0] for i in range(a.batch)]).to(device)
    y = torch.arange(a.batch, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed(trainer_step(trainer, raw, y), a.steps, warmup=2, device=device)  # warm-up: cuDNN, allocator
    med = median(times)
    out = {"row": name, "batch": a.batch, "median_ms": med * 1e3, "min_ms": min(times) * 1e3,
           "samples_per_s": a.batch / med}
    if device == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.small:
        a.hidden, a.depth, a.heads, a.enc_dim, a.enc_depth = 64, 2, 2, 64, 2
        a.image_size, a.patch, a.input_size, a.batch = 64, 16, 56, a.batch or 4
    else:  # SiT-XL width/depth on 256 tokens (as SiT-XL/2 on 32x32x4 latents), DINOv2 ViT-B/14 at 224
        a.hidden, a.depth, a.heads, a.enc_dim, a.enc_depth = 1152, 28, 16, 768, 12
        a.image_size, a.patch, a.input_size, a.batch = 256, 16, 224, a.batch or 32
    a.precision = "bf16" if device == "cuda" else "fp32"
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "precision": a.precision, "sit": f"D{a.hidden} x {a.depth}", "dinov2": f"D{a.enc_dim} x {a.enc_depth}"}
    print(json.dumps(meta), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "dinov2_random.pth"
        torch.manual_seed(0)
        torch.save(DINOv2(a.enc_dim, a.enc_depth).state_dict(), weights)
        td = TimeDistribution()
        fm = row("fm", FlowMatchingObjective(td), a, device, tmp)
        encoder = DINOv2TokenEncoder(in_dim=3 * a.patch ** 2, input_size=a.input_size, weights_path=weights)
        repa = row("repa_dinov2", REPAObjective(td, hidden_size=a.hidden, depth=a.depth, encoder=encoder),
                   a, device, tmp)
    ratio = {"row": "ratio repa_dinov2 / fm (median step time)", "value": repa["median_ms"] / fm["median_ms"]}
    print(json.dumps(ratio), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps([meta, fm, repa, ratio], indent=1))


if __name__ == "__main__":
    main()
