"""``task=train_tokenizer``: train the modality's learned tokenizer (e.g. the mel autoencoder)."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig

from .config import ConfigError, write_config


def train_tokenizer(cfg: DictConfig, run_dir: Path) -> dict:
    node = cfg.modality.get("tokenizer_training")
    if node is None:
        raise ConfigError(f"task=train_tokenizer: modality={cfg.modality.name} has no learned tokenizer "
                          "(no modality.tokenizer_training section); try modality=audio")
    write_config(cfg, run_dir)
    return get_object(node._target_)(cfg, run_dir)
