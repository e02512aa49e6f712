"""Evaluators: Frechet core, weights manager, FID / sFID / P&R / IS, FVD, fid_frame, FAD.

Entry points: :func:`evals.api.evaluate` (Python), ``python -m evals`` (CLI),
``python -m evals.weights fetch|status`` (offline weight files). Importing this package is cheap:
networks load only when a metric asks for them.
"""

from .weights import MissingWeightsError  # noqa: F401  (the error callers catch)
