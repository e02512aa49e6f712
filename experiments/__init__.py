"""The cross-modality benchmark suite: Self-Flow vs REPA vs vanilla flow matching at equal compute.

    python -m experiments --budget quick [--modalities image,video] [--seeds 0,1,2] [--out DIR]
    python -m experiments --report DIR          # aggregate any directory of finished runs

An experiment runner, not an evaluator: it trains models. Modules: ``runner`` (the grid of
``app.tasks.main`` calls from ``configs/benchmark/<budget>.yaml``), ``aggregate`` (statistics:
mean/std, paired t-intervals, exact sign-flip p-values and minimum detectable effects, verdicts; pure numpy), ``report`` (report.md and plots). REPA's
offline encoders live in ``app/repa_encoders.py``.
"""
