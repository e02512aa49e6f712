"""Statistics over a benchmark's run directories: per-method summaries, paired differences with
bootstrap confidence intervals, plain-words verdicts, convergence curves and training cost.

Pure numpy + json; no torch, no plotting. Inputs are the files every run writes (``config.yaml``,
``metrics.jsonl``, ``eval.json``) plus the runner's ``suite_cell.json`` when present, so the same
code aggregates a suite directory and a plain ``python run.py -m ...`` multirun directory.

Statistics, and why:

* **Mean and std over seeds** (std with ddof=1: the seeds are a sample of possible runs).
* **Paired differences** ``target - baseline`` per seed: runs that share a seed share the data
  order, initial noise draws and evaluation noise, so pairing removes that common variation.
* **95 % percentile bootstrap CI** of the mean paired difference: resample the seeds' differences
  with replacement ``N_RESAMPLES = 10_000`` times with ``numpy.random.default_rng(BOOTSTRAP_SEED=0)``
  (fixed: the report is reproducible), take the 2.5 / 97.5 percentiles of the resampled means.
  With few seeds the percentile bootstrap is too narrow (it cannot see variance the seeds did not
  show), which is why a verdict also needs ``MIN_PAIRS`` seeds.
* **Verdict** for a metric where lower is better (Frechet distances): "better" when the whole CI
  lies below zero, "worse" when it lies above zero, and in both cases the mean difference is at
  least ``min_rel_effect`` (default 1 %) of the baseline's mean, and there are at least
  ``MIN_PAIRS = 3`` paired seeds; otherwise "no detectable difference at this budget". Signs flip
  for higher-is-better metrics (precision, recall, IS).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_PAIRS = 3
MIN_REL_EFFECT = 0.01
HIGHER_IS_BETTER = {"precision", "recall", "is", "inception_score"} | {f"{m}_{net}" for m in ("class_acc", "precision", "recall") for net in ("shapesnet", "digitnet", "timbrenet")}  # noqa: E501
BETTER, WORSE, NO_DIFF = "better", "worse", "no detectable difference at this budget"


def lower_is_better(metric: str) -> bool:
    """Frechet distances (fid, sfid, fvd, fid_frame, fad_*, fd_*) and anything not listed as higher."""
    return metric not in HIGHER_IS_BETTER


# ---- reading run directories ---------------------------------------------------------------------

@dataclass
class Run:
    """One training run as the aggregator sees it."""

    modality: str
    variant: str  # method name, or the suite's variant name (ablations)
    seed: int
    run_dir: Path
    final: dict[str, float] = field(default_factory=dict)  # metric -> value at the last evaluation
    curve: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    cost: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, dict] = field(default_factory=dict)  # metric -> its eval.json record


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
                continue
    return out


def _config_identity(run_dir: Path) -> tuple[str, str, int] | None:
    """(modality, method, seed) from a run's resolved config.yaml (no YAML library needed for these keys)."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    try:
        from omegaconf import OmegaConf  # installed with hydra; only the three keys are read

        cfg = OmegaConf.load(path)
        return str(cfg.modality.name), str(cfg.method.name), int(cfg.seed)
    except Exception:
        return None


def train_throughput(metrics: list[dict], eval_steps: set[int]) -> float:
    """Median training samples/s over log intervals that contain no evaluation.

    The trainer's interval rate includes anything that ran inside the interval (evaluations,
    checkpoints). An evaluation at step s runs after that step's log line, so it lands in the
    interval (prev, step] with prev <= s < step; those are dropped, and the first interval
    (warm-up) too when there are others. The final evaluation runs after the last log line.
    """
    logs = [m for m in metrics if "samples_per_s" in m and "step" in m]
    rates, prev = [], 0
    for i, m in enumerate(logs):
        step = int(m["step"])
        if not any(prev <= s < step for s in eval_steps) and (i > 0 or len(logs) == 1):
            rates.append(float(m["samples_per_s"]))
        prev = step
    if not rates:
        rates = [float(m["samples_per_s"]) for m in logs]
    return float(np.median(rates)) if rates else float("nan")


def load_run(run_dir: Path) -> Run | None:
    """A finished run (its ``eval.json`` exists), or None."""
    run_dir = Path(run_dir)
    if not (run_dir / "eval.json").exists():
        return None
    cell_path = run_dir / "suite_cell.json"
    cell = json.loads(cell_path.read_text()) if cell_path.exists() else {}
    ident = _config_identity(run_dir)
    modality = cell.get("modality") or (ident[0] if ident else None)
    variant = cell.get("variant") or (ident[1] if ident else None)
    seed = cell.get("seed", ident[2] if ident else None)
    if modality is None or variant is None or seed is None:
        return None
    run = Run(modality=modality, variant=variant, seed=int(seed), run_dir=run_dir)
    for rec in json.loads((run_dir / "eval.json").read_text()):
        if isinstance(rec.get("value"), (int, float)) and math.isfinite(rec["value"]):
            run.final[rec["metric"]] = float(rec["value"])
            run.protocol[rec["metric"]] = rec
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    eval_steps = set()
    for m in metrics:
        if "loss" in m or "step" not in m:
            continue
        eval_steps.add(int(m["step"]))
        for k, v in m.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                run.curve.setdefault(k, []).append((int(m["step"]), float(v)))
    run.cost["train_samples_per_s"] = train_throughput(metrics, eval_steps)
    peaks = [m["peak_mem_mb"] for m in metrics if "peak_mem_mb" in m]
    if peaks:
        run.cost["peak_gpu_mem_mb"] = float(max(peaks))
    for key in ("wall_s", "train_wall_s", "peak_rss_mb", "peak_gpu_mem_mb", "steps"):
        if isinstance(cell.get(key), (int, float)):
            run.cost[key] = float(cell[key])
    return run


def load_runs(root: Path) -> list[Run]:
    """Every finished run below ``root`` (suite layout or hydra multirun layout)."""
    runs = [load_run(p.parent) for p in sorted(Path(root).rglob("eval.json"))]
    return [r for r in runs if r is not None]


# ---- statistics ----------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 -- nan for one value --, n)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size)


def bootstrap_ci(values, level: float = 0.95, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_differences(target: dict[int, float], baseline: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """``target[s] - baseline[s]`` for the seeds both have (sorted); unpaired seeds are dropped."""
    seeds = sorted(set(target) & set(baseline))
    return seeds, np.array([target[s] - baseline[s] for s in seeds], dtype=np.float64)


def verdict(mean_diff: float, ci: tuple[float, float], n_pairs: int, metric: str, baseline_mean: float,
            min_pairs: int = MIN_PAIRS, min_rel_effect: float = MIN_REL_EFFECT) -> tuple[str, str]:
    """(verdict, why) for ``target - baseline`` of ``metric``; see the module docstring."""
    lo, hi = ci
    if n_pairs < min_pairs:
        return NO_DIFF, f"only {n_pairs} paired seed(s); a verdict needs >= {min_pairs}"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NO_DIFF, "no finite confidence interval"
    effect = abs(mean_diff) / abs(baseline_mean) if baseline_mean else float("inf")
    if lo <= 0.0 <= hi:
        return NO_DIFF, "the 95% CI contains 0"
    if effect < min_rel_effect:
        return NO_DIFF, f"CI excludes 0 but the effect ({effect:.1%}) is below {min_rel_effect:.0%} of the baseline"
    target_lower = hi < 0.0
    good = target_lower if lower_is_better(metric) else not target_lower
    side = "below" if target_lower else "above"
    return (BETTER if good else WORSE), f"the 95% CI lies {side} 0 ({'lower' if lower_is_better(metric) else 'higher'} is better)"


# ---- aggregation ---------------------------------------------------------------------------------

def _by(runs, key):
    out: dict = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out


def convergence(runs: list[Run], metric: str) -> dict[str, list[tuple[int, float, float, int]]]:
    """variant -> [(step, mean, std, n seeds)] of ``metric`` over the evaluation checkpoints."""
    out = {}
    for variant, group in sorted(_by(runs, lambda r: r.variant).items()):
        per_step: dict[int, list[float]] = {}
        for r in group:
            for step, v in r.curve.get(metric, []):
                per_step.setdefault(step, []).append(v)
        if per_step:
            out[variant] = [(s, *mean_std(v)) for s, v in sorted(per_step.items())]
    return out


def cost_table(runs: list[Run]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """variant -> cost key -> (mean, std, n) over seeds."""
    out = {}
    for variant, group in sorted(_by(runs, lambda r: r.variant).items()):
        keys = sorted({k for r in group for k in r.cost})
        out[variant] = {k: mean_std([r.cost[k] for r in group if k in r.cost and math.isfinite(r.cost[k])])
                        for k in keys}
    return out


def aggregate(runs: list[Run], target: str = "selfflow", baselines=None, min_pairs: int = MIN_PAIRS,
              min_rel_effect: float = MIN_REL_EFFECT) -> dict:
    """Everything the report shows, per modality (JSON-serialisable).

    baselines: variants compared against ``target`` (default: every other variant present).
    """
    result = {"settings": {"n_resamples": N_RESAMPLES, "bootstrap_seed": BOOTSTRAP_SEED, "level": 0.95,
                           "min_pairs": min_pairs, "min_rel_effect": min_rel_effect, "target": target},
              "modalities": {}}
    for modality, mruns in sorted(_by(runs, lambda r: r.modality).items()):
        variants = _by(mruns, lambda r: r.variant)
        metrics = sorted({m for r in mruns for m in r.final})
        table = {v: {m: mean_std([r.final[m] for r in g if m in r.final]) for m in metrics}
                 for v, g in sorted(variants.items())}
        seeds = {v: sorted(r.seed for r in g) for v, g in variants.items()}
        comparisons = []
        names = [b for b in (baselines or sorted(variants)) if b != target and b in variants]
        if target in variants:
            for base in names:
                for m in metrics:
                    t = {r.seed: r.final[m] for r in variants[target] if m in r.final}
                    b = {r.seed: r.final[m] for r in variants[base] if m in r.final}
                    paired, diffs = paired_differences(t, b)
                    if not paired:
                        continue
                    ci = bootstrap_ci(diffs)
                    mean_diff = float(diffs.mean())
                    word, why = verdict(mean_diff, ci, len(paired), m, float(np.mean(list(b.values()))),
                                        min_pairs, min_rel_effect)
                    comparisons.append({"metric": m, "target": target, "baseline": base, "seeds": paired,
                                        "mean_diff": mean_diff, "ci_low": ci[0], "ci_high": ci[1],
                                        "verdict": word, "why": why,
                                        "direction": "lower is better" if lower_is_better(m) else "higher is better"})
        result["modalities"][modality] = {
            "table": table, "seeds": seeds, "comparisons": comparisons,
            "convergence": {m: convergence(mruns, m) for m in sorted({k for r in mruns for k in r.curve})},
            "cost": cost_table(mruns),
            "runs": {v: [str(r.run_dir) for r in sorted(g, key=lambda r: r.seed)] for v, g in sorted(variants.items())},
        }
    return result
