"""Hydra entry point: ``python run.py modality=image method=selfflow model=tiny train=cpu``.

The config tree (configs/) names every piece; ``app`` turns it into objects and runs the task
(``app.tasks.main``); ``benchmark=<budget>`` runs the cross-method suite (``experiments``) instead.
Every run writes its resolved config, ``metrics.jsonl``, checkpoints, samples, ``eval.json`` and
``report.md`` into one run directory.
"""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from app.config import ConfigError  # noqa: F401 -- re-exported: `run.ConfigError`
from app.tasks import main  # noqa: F401 -- re-exported: `run.main(cfg)` (tests, scripts)


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def cli(cfg: DictConfig) -> None:
    if cfg.get("benchmark") is not None:  # `python run.py benchmark=standard`: the cross-method suite
        from experiments.__main__ import main as suite_main  # noqa: PLC0415 -- only for this task

        raise SystemExit(suite_main(["--budget", str(cfg.benchmark.name)]))
    try:
        main(cfg)
    except (ConfigError, InstantiationException) as exc:
        raise SystemExit(f"config error: {exc}") from None


if __name__ == "__main__":
    cli()
