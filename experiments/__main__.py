"""CLI: ``python -m experiments --budget quick`` (run + report) or ``--report DIR`` (report only)."""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from pathlib import Path


def _csv(text: str | None):
    return [x for x in text.split(",") if x] if text else None


# `python run.py benchmark=<budget> benchmark.<key>=...`: the hydra spelling of this CLI's flags
BENCHMARK_KEYS = {"modalities": "--modalities", "seeds": "--seeds", "variants": "--variants", "out": "--out"}


def argv_from_overrides(overrides: list[str]) -> list[str]:
    """Translate ``run.py``'s command-line overrides into this CLI's arguments.

    ``benchmark=standard`` -> ``--budget standard``; ``benchmark.modalities=[image,video]`` (or
    ``image,video``) -> ``--modalities image,video`` (likewise ``seeds``, ``variants``, ``out``);
    every other override is passed on to every cell (e.g. ``train.steps=500``).
    """
    argv, extra = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key == "benchmark":
            argv += ["--budget", value]
        elif key.startswith("benchmark."):
            flag = BENCHMARK_KEYS.get(key.split(".", 1)[1])
            if flag is None:
                raise SystemExit(f"config error: {key} is not a suite option; use one of "
                                 f"{sorted('benchmark.' + k for k in BENCHMARK_KEYS)} or edit the budget file")
            argv += [flag, value.strip("[]").replace(" ", "")]
        else:
            extra.append(item)
    return argv + extra


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    p.add_argument("--budget", default="quick", help="quick | standard | paper | ablation | path/to/budget.yaml")
    p.add_argument("--modalities", help="comma list, e.g. image,video (default: the budget's)")
    p.add_argument("--seeds", help="comma list of ints (default: the budget's)")
    p.add_argument("--variants", help="comma list of the budget's variant names (default: all)")
    p.add_argument("--out", help="suite directory (default: runs/benchmark/<budget>-<date>); rerun to resume")
    p.add_argument("--report", metavar="DIR", help="only aggregate the finished runs below DIR and write its report")
    p.add_argument("--target", help="variant the others are compared with (default: the budget's `target`, "
                                    "with --report the one recorded in DIR/suite.json, else selfflow)")
    p.add_argument("--print-commands", action="store_true",
                   help="print one `python run.py ...` line per cell (for torchrun / Slurm) and exit")
    p.add_argument("overrides", nargs="*", help="extra hydra overrides for every cell, e.g. train.steps=20")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from .report import default_target, write_report
    from .runner import commands, load_budget, run_suite

    if a.report:
        print(write_report(Path(a.report), target=a.target or default_target(Path(a.report))))
        return 0
    budget = load_budget(a.budget)
    out = Path(a.out or f"runs/benchmark/{budget.name}-{_dt.datetime.now():%Y-%m-%d_%H-%M-%S}")
    kw = dict(modalities=_csv(a.modalities), seeds=[int(s) for s in _csv(a.seeds)] if a.seeds else None,
              variants=_csv(a.variants), extra=a.overrides)
    if a.print_commands:
        print("\n".join(commands(budget, out, **kw)))
        return 0
    records = run_suite(budget, out, **kw)
    report = write_report(out, target=a.target or str(budget.get("target", "selfflow")), title=f"Benchmark `{budget.name}`")
    print(report)
    return 1 if any(r.get("status") == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
