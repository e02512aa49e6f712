"""Sampling benchmark: throughput of our samplers vs a naive release-style loop, and ODE-Heun-50 vs SDE-250.

Part 1 (throughput, SiT-S/2 on 256 latent tokens x 16, random weights, tiny batch on CPU): NFE/s and
images/s of ``core.samplers.sample`` (Euler, SDE, SDE + CFG 1.8 on [0, 0.7]) against a naive loop written
the way the Self-Flow release samples: a Python step loop that rebuilds a per-token ``t`` tensor every
step, runs the adaLN MLPs on every token (the release's per-token blocks: B*N modulation rows instead of
B) and, with CFG, pushes the doubled batch through the network at every step (the release advances the
unconditional half outside the guidance interval too). Timings are interleaved and repeated; the best
repeat is reported (background load on a shared machine only adds time), the median next to it.

Part 2 (quality/cost, the embedded 32x32 shapes data): sample a briefly trained model with Euler-50,
Heun-25/50 and SDE-50/250 through ``core.sample_job.run_sampling`` and score each against real images with
honest cheap metrics: ``fd_pix8`` (Frechet distance of 8x8x3 average-pooled pixels, 192-d, float64) and
``class_mean_err`` (RMS over classes of the per-class mean-image error). A real-vs-real split gives the floor.

    python benchmarks/sampling.py --checkpoint RUN_DIR   # a run of `python run.py model=micro method=fm ...`
    python benchmarks/sampling.py --train-steps 1500     # trains that run first (about 5 min on 2 cores)
    python benchmarks/sampling.py --gpu-xl               # on a GPU: SiT-XL/2, batch 64, bf16 SDE step timing
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import REPO  # noqa: E402

from core.convert import load_pretrained  # noqa: E402
from core.io_utils import to_uint8  # noqa: E402
from core.sample_job import run_sampling  # noqa: E402
from core.samplers import SamplerConfig, sample  # noqa: E402
from core.transformer import Conditioning, SiT  # noqa: E402


def latent_coords(grid: int = 16) -> torch.Tensor:
    h, w = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3)


#################################################################################
#                    Naive release-style loop (for comparison)                  #
#################################################################################


def per_token_forward(model: SiT, x, t_tok, y, coords):
    """Our weights, but modulation computed for every token: ``(B*N, D)`` adaLN rows, as the release does."""
    B, N, _ = x.shape
    h = model.x_embedder(x) + model.pos_embed(coords, x.dtype, x.device)
    rows = model.t_embedder(t_tok.reshape(-1)) + model.y_embedder(y).repeat_interleave(N, dim=0)
    cond = Conditioning(rows=rows, index=torch.arange(B * N, device=x.device).view(B, N))
    for block in model.blocks:
        h = block(h, cond)
    return model.final_layer(h, cond)[..., : model.in_channels]


@torch.no_grad()
def naive_sde(model, noise, y, coords, num_steps, cfg_scale=1.0, interval=(0.0, 0.7), generator=None):
    """SiT's Euler-Maruyama in paper time, step by step, with per-token t and an always-doubled CFG batch."""
    B, N, _ = noise.shape
    x = torch.cat([noise, noise]) if cfg_scale > 1 else noise
    labels = torch.cat([y, torch.full_like(y, model.null_class)]) if cfg_scale > 1 else y
    ts = torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64).tolist()
    nfe = 0
    for k, t in enumerate(ts):
        guided = cfg_scale > 1 and interval[0] <= t <= interval[1]
        if guided:  # as the release: the conditional state is copied into both halves
            x = torch.cat([x[:B], x[:B]])
        t_tok = torch.full((x.shape[0], N), t, dtype=x.dtype)  # rebuilt every step, one t per token
        v = per_token_forward(model, x, t_tok, labels, coords)
        nfe += 1
        if guided:
            v_c, v_u = v.chunk(2)
            v = torch.cat([v_u + cfg_scale * (v_c - v_u)] * 2)
        score = ((1 - t) * (-v) - x) / t
        drift = v - t * score  # dx/dt in paper time
        if k == len(ts) - 1:
            x = x - drift * t  # deterministic last step to t = 0
        else:
            dt = t - ts[k + 1]
            x = x - drift * dt + (2 * t * dt) ** 0.5 * torch.randn(x.shape, generator=generator)
    return x[:B], nfe


def throughput(batch: int, steps: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = SiT(in_channels=16, hidden_size=384, depth=12, num_heads=6, num_classes=1000).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial weights (zero-init adaLN would skip nothing, but be safe)
            p.add_(torch.randn_like(p) * 0.02)
    coords = latent_coords()
    noise = torch.randn(batch, 256, 16)
    y = torch.randint(0, 1000, (batch,))
    cases = {
        "ours euler": lambda: sample(model, noise, y, coords, SamplerConfig("euler", steps)),
        "ours sde": lambda: sample(model, noise, y, coords, SamplerConfig("sde", steps), torch.Generator().manual_seed(0)),
        "ours sde cfg1.8 [0,0.7]": lambda: sample(model, noise, y, coords, SamplerConfig(
            "sde", steps, cfg_scale=1.8, guidance_high=0.7), torch.Generator().manual_seed(0)),
        "naive sde (per-token t)": lambda: naive_sde(model, noise, y, coords, steps, generator=torch.Generator().manual_seed(0)),
        "naive sde cfg1.8 (always 2B)": lambda: naive_sde(model, noise, y, coords, steps, 1.8, generator=torch.Generator().manual_seed(0)),
    }
    times = {k: [] for k in cases}
    nfes = {}
    cases["ours euler"]()  # warm-up (allocator, positional cache)
    for _ in range(repeats):  # interleaved so that background load hits all cases alike
        for name, fn in cases.items():
            t0 = time.perf_counter()
            _, nfe = fn()
            times[name].append(time.perf_counter() - t0)
            nfes[name] = nfe
    rows = []
    for name in cases:
        wall = min(times[name])  # best of the repeats: background load only ever adds time
        rows.append({"case": name, "nfe": nfes[name], "wall_s": wall, "median_s": statistics.median(times[name]),
                     "nfe_per_s": nfes[name] / wall,
                     "images_per_s": batch / wall, "s_per_image_at_250": wall / nfes[name] * 250 / batch})
    return rows


#################################################################################
#                          Quality / cost on shapes data                        #
#################################################################################


def pool8(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC 32x32 -> float64 (N, 192): 4x4 average pooling, scaled to [0, 1]."""
    x = images.astype(np.float64) / 255.0
    n, h, w, c = x.shape
    return x.reshape(n, 8, h // 8, 8, w // 8, c).mean(axis=(2, 4)).reshape(n, -1)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ea = np.linalg.eigh(ca)
    sqrt_a = (ea.eigenvectors * np.sqrt(np.clip(ea.eigenvalues, 0, None))) @ ea.eigenvectors.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)


def class_mean_err(a, la, b, lb) -> float:
    errs = [np.sqrt(((a[la == c].mean(0) - b[lb == c].mean(0)) ** 2).mean()) for c in np.unique(lb) if (la == c).any()]
    return float(np.sqrt(np.mean(np.square(errs))))


def train_micro(run_dir: Path, steps: int) -> None:
    cmd = [sys.executable, str(REPO / "run.py"), "model=micro", "method=fm", f"train.steps={steps}",
           f"run_dir={run_dir}", "eval.enabled=false", "sample.num_samples=16", "train.progress=false"]
    print("training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def quality(run_dir: Path, num_samples: int, batch: int, cache_dir: Path) -> list[dict]:
    from modalities.image import PixelPatchTokenizer, ShapesDataset  # noqa: PLC0415 -- benchmarks wire modalities

    from omegaconf import OmegaConf  # noqa: PLC0415

    cfg = OmegaConf.load(run_dir / "config.yaml")
    model, info = load_pretrained(run_dir, "ours", num_heads=int(cfg.model.num_heads), pos_axes=list(cfg.modality.pos_axes))
    tok = PixelPatchTokenizer(int(cfg.modality.dataset.image_size), 3, int(cfg.model.patch_size))
    if info.tokenizer_state:
        tok.load_state_dict(info.tokenizer_state)
    data = ShapesDataset(root=str(cfg.modality.dataset.root), image_size=int(cfg.modality.dataset.image_size),
                         per_class=int(cfg.modality.dataset.per_class), seed=int(cfg.modality.dataset.seed))
    real = np.stack([to_uint8(data[i][0]).permute(1, 2, 0).numpy() for i in range(len(data))])
    real_y = np.array([data[i][1] for i in range(len(data))])
    fr = pool8(real)
    perm = np.random.default_rng(0).permutation(len(fr))
    half = min(num_samples, len(fr) // 2)
    rows = [{"sampler": "real vs real (floor)", "nfe": 0, "fd_pix8": frechet(fr[perm[:half]], fr[perm[half:2 * half]]),
             "class_mean_err": class_mean_err(fr[perm[:half]], real_y[perm[:half]], fr[perm[half:2 * half]], real_y[perm[half:2 * half]]),
             "wall_s": 0.0}]
    configs = [("euler-50", SamplerConfig("euler", 50)), ("heun-25", SamplerConfig("heun", 25)),
               ("heun-50", SamplerConfig("heun", 50)), ("sde-50", SamplerConfig("sde", 50)),
               ("sde-250", SamplerConfig("sde", 250))]
    for name, scfg in configs:
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            s = run_sampling(model, tok.decode, tok.coords(), scfg, num_samples, batch, seed=0, out_dir=tmp,
                             class_mode="balanced")
            with np.load(s["npz"]) as z:
                fake, fy = pool8(z["arr_0"]), z["arr_1"]
        rows.append({"sampler": name, "nfe": s["nfe_per_batch"], "fd_pix8": frechet(fake, fr),
                     "class_mean_err": class_mean_err(fake, fy, fr, real_y), "wall_s": s["wall_s"]})
        print(f"  {name}: done in {s['wall_s']:.1f} s", flush=True)
    return rows


def gpu_xl(batch: int = 64, steps: int = 20) -> list[dict]:
    """SiT-XL/2 (random weights) on 256 tokens x 16, bf16 autocast: time per SDE step, ours vs naive."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = SiT(in_channels=32 // 2, hidden_size=1152, depth=28, num_heads=16, num_classes=1000, learn_sigma=True).to(dev).eval()
    coords = latent_coords().to(dev)
    noise = torch.randn(batch, 256, 16, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    out = []
    for name, fn in [("ours sde", lambda: sample(model, noise, y, coords, SamplerConfig("sde", steps), torch.Generator(dev).manual_seed(0))),
                     ("ours sde cfg1.8 [0,0.7]", lambda: sample(model, noise, y, coords, SamplerConfig("sde", steps, cfg_scale=1.8, guidance_high=0.7), torch.Generator(dev).manual_seed(0)))]:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, nfe = fn()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        out.append({"case": name, "nfe": nfe, "s_per_step": wall / nfe, "images_per_s_at_250": batch / (wall / nfe * 250)})
    # The job itself on CUDA: device generator, bf16 autocast, shards and merge (identity "decode").
    with tempfile.TemporaryDirectory() as tmp:
        s = run_sampling(model, lambda z: z.tanh(), coords, SamplerConfig("sde", 5), 16, 8, 0, tmp,
                         autocast_dtype=torch.bfloat16)
        with np.load(s["npz"]) as z:
            ok = z["arr_0"].shape == (16, 256, 16) and bool(np.isfinite(z["arr_0"]).all())
    print(f"run_sampling on cuda under bf16 autocast: 16 samples in 2 shards, finite and merged: {ok} ({s['wall_s']:.2f} s)")
    return out


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="run dir of a micro/tiny image run (ours layout)")
    ap.add_argument("--train-steps", type=int, default=1500, help="train a micro fm run first when no --checkpoint")
    ap.add_argument("--batch", type=int, default=1, help="throughput batch (SiT-S/2, CPU)")
    ap.add_argument("--steps", type=int, default=10, help="sampler steps timed for throughput")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=500, help="samples per sampler for the quality part")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--gpu-xl", action="store_true", help="only the SiT-XL/2 bf16 GPU timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)) if not torch.cuda.is_available() else torch.get_num_threads())
    if args.gpu_xl:
        print(_table(gpu_xl()))
        return
    if not args.skip_throughput:
        print(f"## Throughput: SiT-S/2, 256 tokens x 16, batch {args.batch}, {args.steps} steps, CPU "
              f"({torch.get_num_threads()} threads), best of {args.repeats} interleaved repeats")
        rows = throughput(args.batch, args.steps, args.repeats)
        print(_table(rows))
        base = {r["case"]: r for r in rows}
        print(f"speed-up ours sde vs naive sde: {base['naive sde (per-token t)']['wall_s'] / base['ours sde']['wall_s']:.2f}x; "
              f"with CFG: {base['naive sde cfg1.8 (always 2B)']['wall_s'] / base['ours sde cfg1.8 [0,0.7]']['wall_s']:.2f}x\n")
    if not args.skip_quality:
        run_dir = args.checkpoint
        cache = Path(tempfile.mkdtemp(prefix="sf_bench_"))
        if run_dir is None:
            run_dir = cache / "micro_fm"
            train_micro(run_dir, args.train_steps)
        print(f"## Quality/cost on shapes 32x32 ({run_dir}), {args.num_samples} balanced samples per sampler")
        rows = quality(run_dir, args.num_samples, 250, cache)
        print(_table(rows))
        by = {r["sampler"]: r for r in rows}
        h, s = by["heun-50"], by["sde-250"]
        print(f"SDE-250 / Heun-50 cost ratio: {s['nfe'] / h['nfe']:.2f}x NFE, {s['wall_s'] / h['wall_s']:.2f}x wall; "
              f"fd_pix8 {h['fd_pix8']:.4g} (heun-50) vs {s['fd_pix8']:.4g} (sde-250)")


if __name__ == "__main__":
    main()
