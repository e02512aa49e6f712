"""Shared fixtures: an isolated cache directory and hydra composition of the real config tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated data goes to a per-session temp cache, never the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("SELFFLOW_CACHE", str(cache))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture
def free_port() -> int:
    """A free TCP port on localhost for a test's process group (gloo / torchrun)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def compose():
    """``compose(overrides) -> DictConfig`` from configs/, as `python run.py <overrides>` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(overrides: list[str]):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)

    return _compose
