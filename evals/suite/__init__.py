"""The cross-modality benchmark suite: Self-Flow vs REPA vs vanilla flow matching at equal compute.

    python -m evals.suite --budget quick [--modalities image,video] [--seeds 0,1,2] [--out DIR]
    python -m evals.suite --report DIR          # aggregate any directory of finished runs

Modules: ``runner`` (the grid of ``run.main`` calls from ``configs/benchmark/<budget>.yaml``),
``aggregate`` (statistics: mean/std, paired bootstrap CIs, verdicts; pure numpy), ``report``
(report.md and plots), ``encoders`` (offline REPA encoders from the evaluators' networks).
"""
