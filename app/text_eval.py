"""The evaluation additions of a text-conditioned run: prompt adherence of the EMA samples."""

from __future__ import annotations

from omegaconf import DictConfig

from .prompt_metrics import prompt_adherence
from .text_build import is_text


def text_metrics(cfg: DictConfig, parts: dict) -> list:
    """``[callable(fake, labels) -> records]`` for ``EvalHook(extra_metrics=...)``; empty for label runs.

    The samples of ``Trainer.generate`` follow ``parts["prompts"].take(n)``, so sample i was made
    from prompt i (cycled): its attributes are the targets.
    """
    prompts = parts.get("prompts")
    if not is_text(cfg) or prompts is None or prompts.attributes is None:
        return []
    dataset = parts["base_dataset"]

    def adherence(fake, labels):
        return prompt_adherence(fake, dataset, prompts.attributes_of(len(fake)), cache_dir=cfg.get("cache_dir"))

    return [adherence]
