"""Fixtures for the evaluator tests: real networks when their weights are present, else skip.

CI runs ``python -m evals.weights fetch`` first, so the networks are there and these tests run.
"""

import numpy as np
import pytest
import torch
from evals_helpers import require


@pytest.fixture(scope="session")
def inception():
    require("inception")
    from evals.inception import load_inception

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return load_inception()[0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
