"""Run report: a loss-curve plot and ``report.md`` summarising config, training, samples and evals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and clusters have no display
import matplotlib.pyplot as plt  # noqa: E402

LOSS_KEYS = ("loss", "loss_gen", "loss_rep", "loss_proj")


def finish_plot(fig, ax, path: Path) -> Path:
    """Grid, legend, tight layout; write ``path`` and free the figure (shared by every plot)."""
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_losses(metrics: list[dict], path: Path) -> Path | None:
    """Plot every loss component logged in ``metrics`` against the step."""
    series = {k: [(m["step"], m[k]) for m in metrics if k in m] for k in LOSS_KEYS}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, points in series.items():
        steps, values = zip(*points)
        ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    return finish_plot(fig, ax, path)


def eval_curves(metrics: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Metric -> [(step, value)] from the evaluation records of ``metrics.jsonl``.

    Evaluation hooks log their numbers as records without a training loss; a metric measured at
    fewer than two steps has no curve.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for m in metrics:
        if "loss" in m or "step" not in m:
            continue
        for key, value in m.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((int(m["step"]), float(value)))
    return {k: sorted(v) for k, v in curves.items() if len({s for s, _ in v}) >= 2}


def plot_eval_metrics(metrics: list[dict], path: Path, max_panels: int = 9) -> Path | None:
    """One panel per evaluation metric against the step (when periodic evaluation ran)."""
    curves = eval_curves(metrics)
    if not curves:
        return None
    names = sorted(curves)[:max_panels]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*curves[name])
        ax.plot(steps, values, marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_dir: Path, title: str, summary: dict, metrics: list[dict], assets: dict[str, Path],
                 evals: list[dict] | None = None, notes: list[str] | None = None) -> Path:
    """Write ``report.md`` (and ``loss.png``, ``metrics.png``) into ``run_dir``; asset paths are linked relatively."""
    run_dir = Path(run_dir)
    loss_png = plot_losses(metrics, run_dir / "loss.png")
    metrics_png = plot_eval_metrics(metrics, run_dir / "metrics.png")
    lines = [f"# {title}", ""]
    lines += ["## Summary", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    last = next((m for m in reversed(metrics) if "loss" in m), None)
    if last:
        lines += ["", "## Training", "", "Last logged step: " + ", ".join(
            f"{k} = {_fmt(v)}" for k, v in last.items() if k in LOSS_KEYS + ("step", "samples_per_s"))]
    if loss_png:
        lines += ["", "![loss curve](loss.png)"]
    if assets:
        lines += ["", "## Samples (EMA model)", ""]
        for kind, path in assets.items():
            rel = os.path.relpath(path, run_dir)
            lines.append(f"![{kind}]({rel})" if str(path).endswith((".png", ".gif")) else f"- {kind}: [{rel}]({rel})")
    if evals is not None:
        lines += ["", "## Evaluation", "", "Scored against each record's `reference` (a held-out split unless it says "
                  "otherwise). Where a record gives the real data's own score, that is the value to aim for.", ""]
        if not evals:
            lines.append("No metric was computed.")
        for result in evals:
            value = result.get("value")
            shown = _fmt(value) if value is not None else f"unavailable: {result.get('reason', 'unknown')}"
            if value is not None and result.get("real_value") is not None:  # what a perfect generator scores
                shown += f" (real data: {_fmt(result['real_value'])})"
            protocol = {k: v for k, v in result.items() if k not in ("metric", "value", "reason", "real_value")}
            lines.append(f"- **{result.get('metric')}** = {shown}  \n  protocol: `{json.dumps(protocol, default=str)}`")
    if metrics_png:
        lines += ["", "### Metrics during training", "", "![metrics against the training step](metrics.png)"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Resolved configuration: `config.yaml`; per-step metrics: `metrics.jsonl`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
