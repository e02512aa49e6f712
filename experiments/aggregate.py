"""Statistics over a benchmark's run directories: per-method summaries, paired comparisons with a
t-interval, an exact sign-flip p-value and the minimum detectable effect, plain-words verdicts,
convergence curves and training cost.

Pure numpy + scipy.stats + json; no torch, no plotting. Inputs are the files every run writes
(``config.yaml``, ``metrics.jsonl``, ``eval.json``) plus the runner's ``suite_cell.json`` when
present, so the same code aggregates a suite directory and a plain ``python run.py -m ...`` multirun.

Statistics, and why (docs/statistics.md explains how to read them):

* **Mean and std over seeds** (std with ddof=1: the seeds are a sample of possible runs).
* **Paired differences** ``d_i = target_i - baseline_i`` per seed: runs that share a seed share the
  data order, initial noise draws and evaluation noise, so pairing removes that common variation.
* **95 % paired t-interval** of the mean difference: ``mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)``.
  Unlike a percentile bootstrap (which, with 3 seeds, is just ``[min d, max d]``), it widens with
  the t quantile when few seeds are available (12.7 for 2 seeds, 4.3 for 3, 2.6 for 6).
* **Exact sign-flip permutation p-value** (two-sided, statistic ``|mean(d)|``): under "no
  difference" each ``d_i`` is as likely to be ``+|d_i|`` as ``-|d_i|``; p is the share of the
  ``2^n`` sign patterns whose ``|mean|`` is at least the observed one. Enumerated exactly for
  ``n <= EXACT_MAX_PAIRS = 20``; above that ``MC_RESAMPLES`` random patterns with a fixed RNG seed.
  Its smallest possible value is ``2 / 2^n``: 0.0625 for 5 seeds, 0.031 for 6.
* **Minimum detectable effect** (MDE) at 80 % power for the two-sided paired t-test at
  alpha = 0.05, from the observed ``sd(d)``: the true mean difference at which the test rejects in
  80 % of repetitions, solved exactly with the noncentral t distribution (``mde``; the usual
  approximation ``(t_{1-a/2} + t_{power}) * sd / sqrt(n)`` is ``mde_approx``: 1 % smaller for
  n = 5-6, 14 % for n = 2, within 0.2 % from n = 10).
* **Verdict** for a metric where lower is better (Frechet distances): with fewer than
  ``MIN_PAIRS = 6`` paired seeds it refuses ("not enough seeds (3 < 6) for a verdict"): 6 is the
  smallest n at which the exact sign-flip test can reach p < 0.05 at all. Otherwise "better" when
  p < 0.05, the t-interval lies below zero and the mean difference is at least ``min_rel_effect``
  (default 1 %) of the baseline's mean; "worse" likewise above zero; else "no detectable
  difference (would have detected >= X)" with X = max(MDE, the 1 % floor). Signs flip for
  higher-is-better metrics (precision, recall, IS).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95          # two-sided confidence level of the t-interval; alpha = 1 - LEVEL for the tests
POWER = 0.80          # power at which the minimum detectable effect is quoted
MIN_PAIRS = 6         # the exact sign-flip test's smallest p is 2 / 2^n: < 0.05 needs n >= 6
MIN_REL_EFFECT = 0.01
EXACT_MAX_PAIRS = 20  # 2^20 sign patterns (8 MB of sums); beyond it, Monte Carlo
MC_RESAMPLES = 100_000
MC_SEED = 0
HIGHER_IS_BETTER = {"precision", "recall", "is", "inception_score", "motion_tracked_frac", "motion_shape_corr"}
# a domain classifier's metrics are named <what>_<classifier>: these <what>s are accuracies / coverages
HIGHER_IS_BETTER_PREFIXES = ("class_acc_", "precision_", "recall_", "frame_agreement_", "frame_acc_")
# outcome keys (the verdict text adds the numbers: see verdict())
BETTER, WORSE, NO_DIFF, TOO_FEW = "better", "worse", "no detectable difference", "not enough seeds"


# A joint run is listed once per member, under the member's modality, as variant "joint-<variant>".
JOINT_PREFIX = "joint-"


def lower_is_better(metric: str) -> bool:
    """Frechet distances (fid, sfid, fvd, fid_frame, fad_*, fd_*) and anything not listed as higher.
    Prompt adherence (``prompt_<attribute>_acc``, ``prompt_all_acc``) and CLIP score are accuracies /
    similarities, so higher is better."""
    if metric.startswith("prompt_") and metric.endswith("_acc") or metric == "clip_score":
        return False
    return metric not in HIGHER_IS_BETTER and not metric.startswith(HIGHER_IS_BETTER_PREFIXES)


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
    evals = json.loads((run_dir / "eval.json").read_text())
    return _load_run(run_dir, evals, None) if isinstance(evals, list) else None


def load_joint_runs(run_dir: Path) -> list[Run]:
    """A finished joint run (``modality=joint``: eval.json keyed by member) as one Run per member:
    modality = the member, variant = ``joint-<variant>``, its curves from the ``<member>/`` logs."""
    run_dir = Path(run_dir)
    path = run_dir / "eval.json"
    evals = json.loads(path.read_text()) if path.exists() else None
    if not isinstance(evals, dict):
        return []
    runs = [_load_run(run_dir, records, member) for member, records in evals.items()]
    return [r for r in runs if r is not None]


def _load_run(run_dir: Path, records: list[dict], member: str | None) -> Run | None:
    cell_path = run_dir / "suite_cell.json"
    cell = json.loads(cell_path.read_text()) if cell_path.exists() else {}
    ident = _config_identity(run_dir)
    modality = cell.get("modality") or (ident[0] if ident else None)
    variant = cell.get("variant") or (ident[1] if ident else None)
    seed = cell.get("seed", ident[2] if ident else None)
    if modality is None or variant is None or seed is None:
        return None
    if member is not None:
        modality, variant = member, JOINT_PREFIX + variant
    run = Run(modality=modality, variant=variant, seed=int(seed), run_dir=run_dir)
    for rec in records:
        if isinstance(rec.get("value"), (int, float)) and math.isfinite(rec["value"]):
            run.final[rec["metric"]] = float(rec["value"])
            run.protocol[rec["metric"]] = rec
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    eval_steps = set()
    prefix = f"{member}/" if member is not None else ""
    for m in metrics:
        if "loss" in m or "step" not in m:
            continue
        eval_steps.add(int(m["step"]))
        for k, v in m.items():
            if k != "step" and k.startswith(prefix) and isinstance(v, (int, float)) and math.isfinite(v):
                run.curve.setdefault(k[len(prefix):], []).append((int(m["step"]), float(v)))
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
    runs = []
    for p in sorted(Path(root).rglob("eval.json")):
        runs += load_joint_runs(p.parent) or [load_run(p.parent)]
    return [r for r in runs if r is not None]


# ---- statistics ----------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 -- nan for one value --, n)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size)


def t_interval(diffs, level: float = LEVEL) -> tuple[float, float]:
    """Paired t-interval of the mean: ``mean +- t_{(1+level)/2, n-1} * sd(ddof=1) / sqrt(n)``; nan for n < 2."""
    d = np.asarray(list(diffs), dtype=np.float64)
    if d.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def sign_flip_sums(diffs) -> np.ndarray:
    """``sum_i s_i d_i`` for all ``2^n`` sign patterns ``s`` (shape (2^n,)), built one seed at a time."""
    sums = np.zeros(1)
    for x in np.asarray(list(diffs), dtype=np.float64):
        sums = np.concatenate([sums + x, sums - x])
    return sums


def sign_flip_p(diffs, exact_max: int = EXACT_MAX_PAIRS, n_resamples: int = MC_RESAMPLES,
                seed: int = MC_SEED) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(diffs) = 0`` with statistic ``|mean|``.

    Exact (all ``2^n`` patterns, the observed one included) for ``n <= exact_max``; else
    ``(1 + hits) / (1 + n_resamples)`` over random patterns from ``default_rng(seed)``.
    Sums that tie the observed one up to float rounding count as at least as extreme.
    """
    d = np.asarray(list(diffs), dtype=np.float64)
    if d.size == 0:
        return float("nan")
    observed = abs(float(d.sum()))
    tol = 1e-9 * float(np.abs(d).sum())  # a tie reached in another summation order is still a tie
    if d.size <= exact_max:
        return float(np.mean(np.abs(sign_flip_sums(d)) >= observed - tol))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_resamples, d.size))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def t_test_power(effect: float, sd: float, n: int, alpha: float = 1.0 - LEVEL) -> float:
    """Power of the two-sided one-sample (paired) t-test at level ``alpha`` for a true mean ``effect``.

    ``P(|T| > t_{1-alpha/2, n-1})`` with ``T`` noncentral t, ``n-1`` dof, noncentrality ``effect*sqrt(n)/sd``.
    """
    df, crit = n - 1, float(stats.t.ppf(1.0 - alpha / 2.0, n - 1))
    nc = effect * math.sqrt(n) / sd
    lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))  # scipy returns nan where it underflows
    return float(stats.nct.sf(crit, df, nc)) + lower


def mde_approx(sd: float, n: int, alpha: float = 1.0 - LEVEL, power: float = POWER) -> float:
    """The textbook approximation ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    return (float(stats.t.ppf(1.0 - alpha / 2.0, n - 1)) + float(stats.t.ppf(power, n - 1))) * sd / math.sqrt(n)


def mde(sd: float, n: int, alpha: float = 1.0 - LEVEL, power: float = POWER) -> float:
    """Minimum detectable effect of the paired t-test: the mean difference with power ``power``.

    Solved exactly (noncentral t, ``t_test_power(mde) = power``); nan for n < 2, 0 when sd = 0.
    """
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd == 0.0:
        return 0.0
    hi = mde_approx(sd, n, alpha, power)
    while t_test_power(hi, sd, n, alpha) < power:  # the approximation can sit just below the root
        hi *= 1.5
    return float(optimize.brentq(lambda e: t_test_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * sd))


def paired_differences(target: dict[int, float], baseline: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """``target[s] - baseline[s]`` for the seeds both have (sorted); unpaired seeds are dropped."""
    seeds = sorted(set(target) & set(baseline))
    return seeds, np.array([target[s] - baseline[s] for s in seeds], dtype=np.float64)


def verdict(mean_diff: float, ci: tuple[float, float], p_value: float, n_pairs: int, metric: str,
            baseline_mean: float, mde_value: float = float("nan"), min_pairs: int = MIN_PAIRS,
            min_rel_effect: float = MIN_REL_EFFECT, alpha: float = 1.0 - LEVEL) -> tuple[str, str, str]:
    """(outcome, verdict text, why) for ``target - baseline`` of ``metric``; see the module docstring.

    outcome is one of BETTER, WORSE, NO_DIFF, TOO_FEW; the text is what the report prints.
    """
    if n_pairs < min_pairs:
        return (TOO_FEW, f"not enough seeds ({n_pairs} < {min_pairs}) for a verdict",
                f"with {n_pairs} pair(s) the smallest possible sign-flip p is {2.0 ** (1 - n_pairs):.3g}"
                if n_pairs else "no paired seeds")
    floor = min_rel_effect * abs(baseline_mean) if math.isfinite(baseline_mean) else float("nan")
    detectable = max(mde_value, floor) if math.isfinite(mde_value) else floor
    no_diff = f"{NO_DIFF} (would have detected >= {_fmt(detectable)})"
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(p_value)):
        return NO_DIFF, no_diff, "no finite t-interval or p-value"
    if p_value >= alpha or lo <= 0.0 <= hi:
        reasons = ([f"p = {p_value:.3g} >= {alpha:g}"] if p_value >= alpha else []) + \
                  (["the 95% t-interval contains 0"] if lo <= 0.0 <= hi else [])
        return NO_DIFF, no_diff, " and ".join(reasons)
    effect = abs(mean_diff) / abs(baseline_mean) if baseline_mean else float("inf")
    if effect < min_rel_effect:
        return NO_DIFF, no_diff, (f"p = {p_value:.3g} and the interval excludes 0, but the effect ({effect:.1%}) "
                                  f"is below {min_rel_effect:.0%} of the baseline")
    target_lower = hi < 0.0
    good = target_lower if lower_is_better(metric) else not target_lower
    side = "below" if target_lower else "above"
    word = BETTER if good else WORSE
    return word, word, (f"p = {p_value:.3g} < {alpha:g}, the 95% t-interval lies {side} 0 "
                        f"({'lower' if lower_is_better(metric) else 'higher'} is better), effect {effect:.1%}")


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "n/a"


def compare(diffs, metric: str, baseline_mean: float, min_pairs: int = MIN_PAIRS,
            min_rel_effect: float = MIN_REL_EFFECT) -> dict:
    """Every number of one paired comparison plus its verdict (JSON-serialisable)."""
    d = np.asarray(list(diffs), dtype=np.float64)
    mean_diff = float(d.mean()) if d.size else float("nan")
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    ci = t_interval(d)
    p = sign_flip_p(d)
    m = mde(sd, d.size)
    outcome, text, why = verdict(mean_diff, ci, p, int(d.size), metric, baseline_mean, m, min_pairs, min_rel_effect)
    return {"mean_diff": mean_diff, "sd_diff": sd, "ci_low": ci[0], "ci_high": ci[1], "p_value": p, "mde": m,
            "outcome": outcome, "verdict": text, "why": why}


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
    result = {"settings": {"level": LEVEL, "power": POWER, "min_pairs": min_pairs, "min_rel_effect": min_rel_effect,
                           "exact_max_pairs": EXACT_MAX_PAIRS, "mc_resamples": MC_RESAMPLES, "mc_seed": MC_SEED,
                           "target": target},
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
                    stats_ = compare(diffs, m, float(np.mean(list(b.values()))), min_pairs, min_rel_effect)
                    comparisons.append({"metric": m, "target": target, "baseline": base, "seeds": paired, **stats_,
                                        "direction": "lower is better" if lower_is_better(m) else "higher is better"})
        result["modalities"][modality] = {
            "table": table, "seeds": seeds, "comparisons": comparisons,
            "convergence": {m: convergence(mruns, m) for m in sorted({k for r in mruns for k in r.curve})},
            "cost": cost_table(mruns),
            "runs": {v: [str(r.run_dir) for r in sorted(g, key=lambda r: r.seed)] for v, g in sorted(variants.items())},
        }
    return result
