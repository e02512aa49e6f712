"""The suite's aggregate report: ``report.md``, ``aggregate.json`` and PNG plots in the suite directory.

Per modality: mean +- std per method, paired differences (target - baseline) with 95 % paired
t-intervals, exact sign-flip p-values, minimum detectable effects and verdicts, metric-vs-step convergence plots, a training-cost table, sample panels linked
from each run, and the paper's own numbers (docs/method.md, "Paper results (as printed)") beside ours, labelled
as the paper's and at the paper's scale. Caveats that change how a number reads (REPA aligned
to the metric's own network, metrics that are unavailable, single seeds) are stated in the text.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402

from core.report import finish_plot  # noqa: E402

from . import aggregate as agg  # noqa: E402
from .manifest import UNRECORDED, failed_cells, provenance, read_manifest  # noqa: E402

# docs/method.md, "Paper results (as printed)". Scale: see PAPER_SCALE.
PAPER = {
    "image": {"source": "Table 1 (ImageNet 256x256, SiT-XL/2, no CFG, 50K samples, 250-step SDE)",
              "metrics": ["fid", "sfid", "is", "precision", "recall"],
              "rows": {"fm": ("SiT-XL/2, 7M steps", [8.3, 6.30, 130.57, 0.69, 0.67]),
                       "repa": ("REPA (DINOv2-B), 4M steps", [5.89, 5.73, 157.66, 0.70, 0.69]),
                       "selfflow": ("Self-Flow, 4M steps", [5.70, 4.97, 151.40, 0.72, 0.67])}},
    "video": {"source": "Table 3 (text-to-video, 625M FLUX.2-style, WAN2.2 AE, 6M videos, 600K steps)",
              "metrics": ["fvd (VideoMAEv2)", "fid_frame"],
              "rows": {"fm": ("Vanilla Flow", [50.95, 9.28]),
                       "repa": ("REPA w/ DINOv2", [49.59, 9.39]),
                       "selfflow": ("Self-Flow", [47.81, 8.92])}},
    "audio": {"source": "Table 4 (text-to-audio, FMA 1M clips, Songbloom AE, 625M, 350K steps)",
              "metrics": ["fad CLAP", "fad CLAP-M", "fad CLAP-A"],
              "rows": {"fm": ("Vanilla FM", [148.874, 0.1695, 0.1059]),
                       "repa": ("REPA w/ MERT", [148.883, 0.1677, 0.1040]),
                       "selfflow": ("Self-Flow", [145.645, 0.1634, 0.1001])}},
}

# docs/joint_training.md, "What the paper does": Table 6 (App. D), one model on image + video + audio,
# vanilla FM -> Self-Flow per loss weighting (w_I, w_V, w_A); sampling probabilities 0.57 / 0.30 / 0.13.
# Per member: its columns, then per weighting (label, fm values, selfflow values).
PAPER_JOINT_SOURCE = ("Table 6 (one 625M model on images, videos and audio; FLUX.2 / WAN2.2 / Songbloom AEs; "
                      "vanilla FM -> Self-Flow per loss weighting (w_I, w_V, w_A))")
PAPER_JOINT_WEIGHTINGS = ["(0.067, 0.319, 0.614)", "(0.105, 0.506, 0.389)", "(0.131, 0.628, 0.241) video-weighted",
                          "(0.196, 0.079, 0.725) audio-weighted", "(0.308, 0.123, 0.569) image-weighted"]
PAPER_JOINT = {
    "image": (["fid"], [([4.04], [3.69]), ([3.51], [3.25]), ([3.35], [3.19]), ([3.07], [2.99]), ([2.83], [2.74])]),
    "video": (["fid_frame", "fvd"], [([12.2, 72.9], [11.1, 66.3]), ([10.9, 64.8], [10.2, 61.0]),
                                     ([10.3, 62.7], [9.82, 58.0]), ([18.1, 116], [17.7, 112]),
                                     ([15.6, 101], [14.8, 96.7])]),
    "audio": (["fad CLAP", "fad CLAP-A", "fad CLAP-M"],
              [([153, 0.115, 0.178], [149.8, 0.114, 0.177]), ([155.4, 0.120, 0.183], [154.2, 0.119, 0.182]),
               ([160.1, 0.127, 0.190], [157.4, 0.127, 0.189]), ([153.9, 0.115, 0.178], [149.1, 0.112, 0.176]),
               ([156.4, 0.119, 0.182], [152.6, 0.117, 0.181])]),
}
PAPER_SCALE_NOTE = ("At the paper's scale (hundreds of millions of parameters, 10^5-10^6 steps, other data and "
                    "networks); only the ordering is comparable with the table above, never the values.")


def _paper_lines(modality: str, joint: bool) -> list[str]:
    """The paper's rows for this modality section: Table 6 when the section holds joint runs, else its own table."""
    if joint and modality in PAPER_JOINT:
        metrics, rows = PAPER_JOINT[modality]
        lines = ["", f"### The paper's numbers (not ours): {PAPER_JOINT_SOURCE}", "", PAPER_SCALE_NOTE, "",
                 "| weighting (w_I, w_V, w_A) | " + " | ".join(f"{m}: FM -> Self-Flow" for m in metrics) + " |",
                 "|---|" + "---|" * len(metrics)]
        for label, (fm, sf) in zip(PAPER_JOINT_WEIGHTINGS, rows):
            lines.append(f"| {label} | " + " | ".join(f"{a} -> {b}" for a, b in zip(fm, sf)) + " |")
        return lines
    paper = PAPER.get(modality)
    if not paper:
        return []
    lines = ["", f"### The paper's numbers (not ours): {paper['source']}", "", PAPER_SCALE_NOTE, "",
             "| paper row | " + " | ".join(paper["metrics"]) + " |", "|---|" + "---|" * len(paper["metrics"])]
    for _, (label, vals) in paper["rows"].items():
        lines.append(f"| {label} | " + " | ".join(str(x) for x in vals) + " |")
    return lines


def _sample_pngs(run_dir: str, modality: str) -> list[Path]:
    """Final sample grids of a run: ``samples/final_*.png``, or a joint run's ``samples/<member>/final_*.png``."""
    d = Path(run_dir) / "samples"
    return sorted(d.glob("final_*.png")) or sorted((d / modality).glob("final_*.png"))


def _f(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _pm(stats) -> str:
    mean, std, n = stats
    if n == 0:
        return "n/a"
    return f"{_f(mean)} ± {_f(std, 2)} (n={n})" if n > 1 else f"{_f(mean)} (n=1)"


def plot_convergence(curves: dict, metric: str, path: Path) -> Path | None:
    """metric vs step, one line per variant (mean over seeds, band = +-1 std)."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    for variant, points in curves.items():
        steps = [p[0] for p in points]
        mean = [p[1] for p in points]
        std = [p[2] if math.isfinite(p[2]) else 0.0 for p in points]
        ax.plot(steps, mean, marker="o", label=variant)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric + (" (lower is better)" if agg.lower_is_better(metric) else " (higher is better)"))
    return finish_plot(fig, ax, path)


def _repa_caveat(runs: list[agg.Run], modality: str, metrics: list[str]) -> str | None:
    """The plain statement the issue asks for when REPA's encoder is the metric's network."""
    for r in runs:
        if r.modality != modality or not r.variant.startswith("repa"):  # repa, repa_random, suite names
            continue
        used = r.run_dir / "encoder.json"  # written by run.py: the network actually loaded
        if used.is_file():
            cls = str(json.loads(used.read_text()).get("class", ""))
            inception, target = cls.startswith("Inception"), cls
        else:  # older runs: infer from the config
            try:
                from omegaconf import OmegaConf

                enc = OmegaConf.load(r.run_dir / "config.yaml").method.get("encoder")
            except Exception:
                enc = None
            if enc is None:
                return None
            target = str(enc.get("_target_", ""))
            backbone = str(enc.get("backbone", ""))
            inception = "Inception" in target or (target.endswith("offline_encoder") and backbone in ("auto", "inception"))  # pre-DINOv2 runs
        shared = [m for m in metrics if m in ("fid", "sfid", "fid_frame", "precision", "recall", "is")]
        if inception and shared:
            return (f"**Caution: REPA here aligns to the TF-2015 Inception, the same network that computes "
                    f"{', '.join(shared)}.** That favours REPA on these metrics (it is trained towards the "
                    "metric's feature space); a REPA win on them is weaker evidence than a win on a metric "
                    "with an independent network.")
        if "DINOv2" in target and "fd_dinov2" in metrics:
            return ("**Caution: REPA here aligns to DINOv2 features and `fd_dinov2` measures with a DINOv2 "
                    "(ViT-L/14) class token:** a related feature space, which favours REPA on that metric; "
                    "the Inception-based metrics are the independent check.")
        if "Random" in target:
            return ("REPA's encoder is the random-init stand-in (core.encoders.RandomTokenEncoder): it measures "
                    "REPA's cost, not its benefit.")
        return None
    return None


def _provenance_lines(suite_dir: Path, manifest: dict, runs: list) -> list[str]:
    """Budget, commits and dates of the cells this report aggregates (from their own records)."""
    p = provenance(sorted({Path(r.run_dir) for r in runs}))
    if not p["cells"]:
        return []
    name = (manifest.get("budget") or {}).get("name")
    n_inv = len(manifest.get("invocations", []))
    code = ", ".join(f"`{c}` ({n} cell{'s' if n != 1 else ''})" for c, n in sorted(p["commits"].items()))
    text = (f"{'Budget `' + name + '`: ' if name else ''}{p['cells']} finished run directories"
            f"{f' from {n_inv} invocation(s) of the suite runner' if n_inv else ''}. Code: {code}")
    if UNRECORDED in p["commits"]:
        text += " (no commit in their suite_cell.json: run before cells recorded it, or outside the suite runner; " \
                "each run's report.md names its commit)"
    if p["first_start"]:
        text += f". Cells ran from {p['first_start']} to {p['last_finish'] or '?'} (first start, last finish)"
    lines = [text + "."]
    failed = failed_cells(suite_dir)
    if failed:
        lines += ["", f"**Failed cells** (see their suite_cell.json): {', '.join(failed)}"]
    return lines


def default_target(suite_dir: Path) -> str:
    """The target the suite's budget names (``suite.json``), else ``selfflow``."""
    return str((read_manifest(suite_dir).get("budget") or {}).get("target") or "selfflow")


def write_report(suite_dir: Path, target: str = "selfflow", title: str | None = None) -> Path:
    """Aggregate every finished run below ``suite_dir`` and write ``report.md`` + plots there."""
    suite_dir = Path(suite_dir)
    runs = agg.load_runs(suite_dir)
    result = agg.aggregate(runs, target=target)
    (suite_dir / "aggregate.json").write_text(json.dumps(result, indent=1, default=str))
    manifest = read_manifest(suite_dir)
    s = result["settings"]
    name = manifest.get("budget", {}).get("name")
    lines = [f"# {title or ('Benchmark `' + name + '`' if name else 'Benchmark: Self-Flow vs REPA vs flow matching')}", ""]
    lines += _provenance_lines(suite_dir, manifest, runs)
    lines += ["", f"Statistics (docs/statistics.md): mean ± std over seeds (ddof=1). Paired differences "
              f"`{target} − baseline` per seed; 95% paired t-interval of their mean; exact two-sided sign-flip "
              f"permutation p-value (all 2^n sign patterns for n ≤ {s['exact_max_pairs']}, else {s['mc_resamples']} random ones; statistic |mean|); MDE = the smallest true mean "
              f"difference the paired t-test detects with {s['power']:.0%} power at alpha {1 - s['level']:.2g}, "
              f"from the observed spread (noncentral t). Verdict \"better\"/\"worse\" only with ≥ {s['min_pairs']} "
              f"paired seeds (fewer: \"{agg.TOO_FEW}\"; with n seeds the smallest possible p is 2/2^n), "
              f"p < {1 - s['level']:.2g}, a t-interval that excludes 0 and a mean difference ≥ "
              f"{s['min_rel_effect']:.0%} of the baseline's mean; otherwise \"{agg.NO_DIFF} (would have detected "
              f"≥ X)\", X = max(MDE, {s['min_rel_effect']:.0%} of the baseline). Lower is better for Frechet distances."]
    if not runs:
        lines += ["", "No finished run (no eval.json) was found."]
    for modality, res in result["modalities"].items():
        lines += ["", f"## {modality}", ""]
        variants = list(res["table"])
        metrics = sorted({m for v in res["table"].values() for m in v})
        caveat = _repa_caveat(runs, modality, metrics)
        if caveat:
            lines += [caveat, ""]
        lines += ["### Final metrics (ours, this budget)", "", "| method | " + " | ".join(metrics) + " | seeds |",
                  "|---|" + "---|" * (len(metrics) + 1)]
        for v in variants:
            lines.append(f"| {v} | " + " | ".join(_pm(res["table"][v].get(m, (0, 0, 0))) for m in metrics)
                         + f" | {res['seeds'][v]} |")
        if not metrics:
            lines += ["", "No numeric metric: every evaluator was unavailable (see each run's eval.json)."]
        if res["comparisons"]:
            lines += ["", f"### Paired differences ({target} − baseline)", "",
                      "| metric | baseline | mean diff | 95% t-interval | p (sign-flip) | MDE (80%) | seeds | verdict "
                      "| why |", "|---|---|---|---|---|---|---|---|---|"]
            for c in res["comparisons"]:
                lines.append(f"| {c['metric']} | {c['baseline']} | {_f(c['mean_diff'])} | [{_f(c['ci_low'])}, "
                             f"{_f(c['ci_high'])}] | {_f(c['p_value'], 3)} | {_f(c['mde'], 3)} | {len(c['seeds'])} "
                             f"| **{c['verdict']}** | {c['why']} |")
        for metric, curves in res["convergence"].items():
            png = plot_convergence(curves, metric, suite_dir / f"convergence_{modality}_{metric}.png")
            if png:
                lines += ["", f"![{metric} vs step ({modality})]({png.name})"]
        if res["cost"]:
            keys = ["train_samples_per_s", "train_wall_s", "wall_s", "peak_rss_mb", "peak_gpu_mem_mb"]
            keys = [k for k in keys if any(k in c for c in res["cost"].values())]
            lines += ["", "### Training cost", "",
                      "train_samples_per_s: median over log intervals without an evaluation; train_wall_s: "
                      "training loop incl. periodic evals and checkpoints; wall_s: the whole run incl. final "
                      "sampling, evaluation and report; peak_rss_mb: process resident memory during the run "
                      "(includes what earlier cells of the same process loaded).", "",
                      "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for v, c in res["cost"].items():
                lines.append(f"| {v} | " + " | ".join(_pm(c[k]) if k in c else "n/a" for k in keys) + " |")
        lines += ["", "### Samples (seed with the lowest number, EMA model)", ""]
        for v, dirs in res["runs"].items():
            pngs = _sample_pngs(dirs[0], modality) if dirs else []
            links = " ".join(f"![{v}]({os.path.relpath(p, suite_dir)})" for p in pngs[:1])
            lines.append(f"- **{v}** ({os.path.relpath(dirs[0], suite_dir)}): {links or 'no sample PNG'}")
        lines += _paper_lines(modality, joint=any(v.startswith(agg.JOINT_PREFIX) for v in variants))
    lines += ["", "Per-run details: each run directory's report.md, eval.json (protocol of every number), "
              "metrics.jsonl. All statistics: aggregate.json.", ""]
    path = suite_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
