"""Data-loading benchmark: can the loader feed the training step?

Measures, at the default modality configs (``configs/modality/{video,audio}.yaml``):

* video clips/s decoded with decord and with PyAV (the raw ``read_frames`` call), and clips/s
  through the dataset (decode + tensor conversion + resize/crop);
* audio clips/s read through the dataset, and log-mel spectrograms/s (the tokenizer's
  ``encode``, which runs inside the training step);
* the training step's consumption rate (samples/s) at the default train/model config;
* the DataLoader's delivery rate with the default ``train.num_workers``, and the ratio
  loader / step, which should be at least 5 (for video also from the second epoch on, when
  the decoded-clip cache of the generated set is warm).

    python benchmarks/data_loading.py                 # both modalities, default configs
    python benchmarks/data_loading.py --quick         # fewer repetitions
    python benchmarks/data_loading.py --modality video --json out.json --override train.num_workers=2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import _common  # noqa: E402,F401 -- puts the repository on sys.path
from _common import REPO  # noqa: E402


def rate(fn, n: int, min_s: float = 0.0) -> float:
    """Calls of ``fn`` per second over ``n`` calls (and at least ``min_s`` seconds), after one warm-up."""
    fn()
    count, start = 0, time.perf_counter()
    while count < n or time.perf_counter() - start < min_s:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def compose(modality: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"modality={modality}", *overrides])


def loader_rate(dataset, batch_size: int, num_workers: int, batches: int, warm: bool = False) -> float:
    """Samples/s the DataLoader delivers (after the first batch, so worker start-up is excluded).

    ``warm``: run one full epoch first, so in-memory caches (``cache_frames``) are filled, as
    they are from the second epoch of a training run on.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         drop_last=True, persistent_workers=num_workers > 0)
    if warm:
        for _ in loader:
            pass
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def step_rate(cfg, parts, steps: int) -> float:
    """Training samples/s of ``Trainer.train_step`` on a fixed batch (data loading excluded)."""
    from omegaconf import OmegaConf

    from app.config import sampler_config
    from core.trainer import Trainer, TrainConfig

    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=parts["model"], objective=parts["objective"], tokenizer=parts["tokenizer"],
                          dataset=parts["dataset"], cfg=train_cfg, run_dir=Path(tmp), sampler_cfg=sampler_config(cfg),
                          writer=parts["writer"], num_samples=1, sample_seed=0, config_fingerprint={})
        B = train_cfg.batch_size
        items = [parts["dataset"][i % len(parts["dataset"])] for i in range(B)]
        raw = torch.stack([x for x, _ in items])
        y = torch.tensor([label for _, label in items])
        return B * rate(lambda: trainer.train_step(raw, y), steps)


def bench_video(cfg, parts, reps: int) -> dict:
    from modalities.video import read_frames

    ds = parts["dataset"]
    paths = [p for p, _, _ in ds.items]
    T = ds.num_frames
    out = {"clip_shape": [T, 3, *ds.size]}
    for backend in ("decord", "pyav"):
        i = iter(range(10**9))
        out[f"{backend}_clips_per_s"] = rate(lambda: read_frames(paths[next(i) % len(paths)], range(T), backend), reps)
    out["decord_over_pyav"] = out["decord_clips_per_s"] / out["pyav_clips_per_s"]
    i = iter(range(10**9))
    out["dataset_clips_per_s"] = rate(lambda: ds[next(i) % len(ds)], reps)
    return out


def bench_audio(cfg, parts, reps: int) -> dict:
    ds, tok = parts["dataset"], parts["tokenizer"]
    out = {"clip_samples": ds.num_samples, "sample_rate": ds.sample_rate}
    i = iter(range(10**9))
    out["dataset_clips_per_s"] = rate(lambda: ds[next(i) % len(ds)], reps)
    batch = torch.stack([ds[k][0] for k in range(64)])
    out["mel_per_s_batch64"] = 64 * rate(lambda: tok.encode(batch), max(2, reps // 20))
    out["mel_per_s_single"] = rate(lambda: tok.encode(batch[:1]), reps)
    out["decode_griffin_lim_per_s_batch16"] = 16 * rate(lambda: tok.decode(tok.encode(batch[:16])), 2)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", nargs="+", default=["video", "audio"])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--override", nargs="*", default=[], help="extra hydra overrides, e.g. train.num_workers=2")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    reps, steps, batches = (20, 3, 4) if args.quick else (100, 10, 16)

    from app.build import build

    torch.manual_seed(0)
    results = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    for modality in args.modality:
        cfg = compose(modality, args.override)
        parts = build(cfg)
        parts["tokenizer"].fit(parts["dataset"])
        r = (bench_video if modality == "video" else bench_audio)(cfg, parts, reps)
        r["train_batch_size"] = int(cfg.train.batch_size)
        r["num_workers"] = int(cfg.train.num_workers)
        r["model"] = cfg.model.name
        r["method"] = cfg.method.name
        r["step_samples_per_s"] = step_rate(cfg, parts, steps)
        r["loader_samples_per_s"] = loader_rate(parts["dataset"], r["train_batch_size"], r["num_workers"], batches)
        r["loader_over_step"] = r["loader_samples_per_s"] / r["step_samples_per_s"]
        if getattr(parts["dataset"], "_frame_cache", None) is not None:  # decoded-clip cache: epoch 2 on
            r["loader_samples_per_s_epoch2"] = loader_rate(parts["dataset"], r["train_batch_size"], r["num_workers"],
                                                           batches, warm=True)
            r["loader_over_step_epoch2"] = r["loader_samples_per_s_epoch2"] / r["step_samples_per_s"]
        r["loader_ok_5x"] = r["loader_over_step"] >= 5
        results[modality] = r
        print(f"\n== {modality} (model={r['model']}, method={r['method']}, batch={r['train_batch_size']}, "
              f"num_workers={r['num_workers']})")
        for k, v in r.items():
            print(f"  {k:36s} {v:10.2f}" if isinstance(v, float) else f"  {k:36s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
