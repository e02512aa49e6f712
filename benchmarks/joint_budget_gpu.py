#!/usr/bin/env python
"""The ``joint`` benchmark budget (Table 6's shape, configs/benchmark/joint.yaml) run longer on one GPU.

The budget is derived from joint.yaml, not copied: every cell's ``train.steps`` and
``train.eval_every`` are multiplied by ``--scale``. The joint runs and the separately trained runs
are scaled alike, so both settings still spend the same total steps per method and seed. The GPU
settings (``train.device=cuda`` by default) and any extra overrides are passed to every cell the
way ``python -m experiments ... OVERRIDES`` passes them. The layout is that of
``python -m experiments --budget joint``: ``<out>/suite.json``, ``<out>/<modality>/<variant>/seed<k>/``,
``<out>/report.md``. The derived budget is written to ``<out>/budget.yaml``.

A tiny model leaves most of one GPU idle, so cells run in ``--workers`` processes at once. Seed
``seeds[0]`` runs alone first: its cells generate the data sets and train the domain classifiers
into the cache, so the parallel workers only read them. Each later seed goes to one worker
(round robin), and a worker runs its cells one after another. Rerunning with the same ``--out``
resumes: finished cells are skipped and interrupted ones continue from their last checkpoint.

Usage::

    python benchmarks/joint_budget_gpu.py --out runs/benchmark/joint_gpu --scale 4 --workers 5
    python benchmarks/joint_budget_gpu.py --print-commands --seeds 0     # one `python run.py` line per cell
    benchmarks/joint_budget_gpu.sh                                       # the device-tool wrapper
"""

from __future__ import annotations

import argparse
import datetime as _dt
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from omegaconf import DictConfig, OmegaConf  # noqa: E402

SCALED = ("train.steps", "train.eval_every")  # per-cell step counts; everything else is kept
GPU_OVERRIDES = ["train.device=cuda"]


def _scale(override: str, scale: int) -> str:
    key, _, value = str(override).partition("=")
    return f"{key}={int(value) * scale}" if key.lstrip("+~") in SCALED else str(override)


def gpu_budget(scale: int = 1, base: str = "joint") -> DictConfig:
    """Budget ``base`` with every step count in ``common``, ``modality_overrides``, ``variants`` and
    ``cell_overrides`` multiplied by ``scale`` (an integer >= 1, so that the shares stay exact)."""
    from experiments.runner import load_budget  # noqa: PLC0415

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"--scale={scale!r}: must be an integer >= 1")
    budget = load_budget(base)
    out = OmegaConf.to_container(budget, resolve=True)
    out["name"] = f"{budget.name}_gpu_x{scale}" if scale > 1 else f"{budget.name}_gpu"
    out["common"] = [_scale(o, scale) for o in out["common"]]
    for group in ("modality_overrides", "variants", "cell_overrides"):
        for key, overrides in (out.get(group) or {}).items():
            out[group][key] = [_scale(o, scale) for o in overrides]
    return OmegaConf.create(out)


def _split(seeds: list[int], workers: int) -> list[list[int]]:
    """The first seed alone (it fills the caches), then the others round robin over the workers."""
    rest = seeds[1:]
    return [seeds[:1]] + [part for part in (rest[i::workers] for i in range(workers)) if part]


def _worker(budget_file: Path, out: Path, seeds: list[int], extra: list[str]) -> int:
    """Run the cells of ``seeds`` one after another (what each worker process does)."""
    from experiments.runner import cells, run_cell  # noqa: PLC0415

    budget = OmegaConf.load(budget_file)
    records = [run_cell(c, out) for c in cells(budget, seeds=seeds, extra=extra)]
    return 1 if any(r.get("status") == "failed" for r in records) else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/joint_budget_gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="suite directory (default runs/benchmark/joint_gpu-<date>); rerun to resume")
    p.add_argument("--base", default="joint", help="the budget to scale (a name or a YAML path; default joint)")
    p.add_argument("--scale", type=int, default=1, help="multiply every cell's train.steps and train.eval_every")
    p.add_argument("--seeds", help="comma list (default: the budget's six)")
    p.add_argument("--workers", type=int, default=5, help="processes running cells at once after the first seed")
    p.add_argument("--no-gpu", action="store_true", help=f"leave out {GPU_OVERRIDES} (a CPU check of this script)")
    p.add_argument("--print-commands", action="store_true", help="print one `python run.py` line per cell and exit")
    p.add_argument("--worker-seeds", help=argparse.SUPPRESS)  # internal: run as one worker
    p.add_argument("overrides", nargs="*", help="extra hydra overrides for every cell, e.g. train.precision=bf16")
    a = p.parse_args(argv)
    from experiments.report import write_report  # noqa: PLC0415
    from experiments.manifest import failed_cells, new_invocation, update_manifest  # noqa: PLC0415
    from experiments.runner import cells, commands  # noqa: PLC0415

    from core.io_utils import git_commit  # noqa: PLC0415

    out = Path(a.out or f"runs/benchmark/joint_gpu-{_dt.datetime.now():%Y-%m-%d_%H-%M-%S}")
    extra = ([] if a.no_gpu else GPU_OVERRIDES) + list(a.overrides)
    if a.worker_seeds:
        return _worker(out / "budget.yaml", out, [int(s) for s in a.worker_seeds.split(",")], extra)
    budget = gpu_budget(a.scale, a.base)
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else [int(s) for s in budget.seeds]
    if a.print_commands:
        print("\n".join(commands(budget, out, seeds=seeds, extra=extra)))
        return 0
    if a.workers < 1:
        raise SystemExit(f"--workers={a.workers}: must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(budget, out / "budget.yaml")
    spec, keys = OmegaConf.to_container(budget), [c.key for c in cells(budget, seeds=seeds, extra=extra)]
    invocation = {**new_invocation(git_commit(), keys), "extra_overrides": extra, "workers": a.workers}
    update_manifest(out, spec, keys, invocation)
    me = [sys.executable, str(Path(__file__).resolve()), "--out", str(out)] + (["--no-gpu"] if a.no_gpu else [])
    groups, failed = _split(seeds, a.workers), False
    for batch in (groups[:1], groups[1:]):  # the first seed alone, then the rest in parallel
        procs = [subprocess.Popen(me + ["--worker-seeds", ",".join(map(str, g)), *a.overrides], cwd=REPO) for g in batch]
        failed |= any([proc.wait() != 0 for proc in procs])  # a list: wait for every worker
    invocation.update(finished=_dt.datetime.now().isoformat(timespec="seconds"), failed=failed_cells(out))
    update_manifest(out, spec, keys, invocation)
    print(write_report(out, target=str(budget.get("target", "selfflow")), title=f"Benchmark `{budget.name}`"))
    return 1 if failed or invocation["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
