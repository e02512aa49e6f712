"""Evaluators: Frechet core, weights manager, FID / sFID / P&R / IS, FVD, fid_frame, FAD.

Entry points: :func:`evals.api.evaluate` (Python), ``python -m evals`` (CLI),
``python -m evals.weights fetch|status`` (offline weight files). Importing this package is cheap:
networks load only when a metric asks for them.
"""


def __getattr__(name):
    # Lazy, so that `python -m evals.weights` does not import evals.weights twice (runpy warning).
    if name == "MissingWeightsError":  # the error callers catch to record "metric unavailable"
        from .weights import MissingWeightsError

        return MissingWeightsError
    raise AttributeError(f"module 'evals' has no attribute {name!r}")
