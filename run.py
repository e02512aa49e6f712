"""Hydra entry point: ``python run.py modality=image method=selfflow model=tiny train=cpu``.

The config tree (configs/) names every piece; ``app`` turns it into objects and runs the task
(``app.tasks.main``); ``benchmark=<budget>`` runs the cross-method suite (``experiments``) instead,
with the other command-line overrides forwarded to it. Every run writes its resolved config,
``metrics.jsonl``, checkpoints, samples, ``eval.json`` and ``report.md`` into one run directory.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from app.config import ConfigError  # noqa: F401 -- re-exported: `run.ConfigError`
from app.tasks import main  # noqa: F401 -- re-exported: `run.main(cfg)` (tests, scripts)
from app.cli import config_error_message, remove_unused_run_dir


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def cli(cfg: DictConfig) -> None:
    run_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("benchmark") is not None:  # `python run.py benchmark=standard ...`: the cross-method suite
        from experiments.__main__ import argv_from_overrides  # noqa: PLC0415 -- only for this task
        from experiments.__main__ import main as suite_main  # noqa: PLC0415

        remove_unused_run_dir(run_dir)  # the suite writes its own directory
        raise SystemExit(suite_main(argv_from_overrides(HydraConfig.get().overrides.task)))
    try:
        main(cfg)
    except (ConfigError, InstantiationException) as exc:
        remove_unused_run_dir(run_dir)
        raise SystemExit(config_error_message(exc)) from None


if __name__ == "__main__":
    cli()
