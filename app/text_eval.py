"""The evaluation additions of a text-conditioned run: prompt adherence of the EMA samples, and the
CLIP score when ``eval.metrics`` lists ``clip_score`` (a local CLIP directory at ``eval.clip_path``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from .prompt_metrics import prompt_adherence
from .text_build import is_text

# Metrics computed here rather than by evals.api.evaluate (they need the prompts): EvalHook drops
# them from the list it hands to evaluate.
TEXT_METRICS = ("clip_score",)


def requested(cfg: DictConfig) -> list[str]:
    """The text metrics ``eval.metrics`` lists (``auto`` lists none: the family's defaults only)."""
    metrics = OmegaConf.select(cfg, "eval.metrics")
    if metrics is None or isinstance(metrics, str):
        return []
    return [m for m in metrics if m in TEXT_METRICS]


def text_metrics(cfg: DictConfig, parts: dict) -> list:
    """``[callable(fake, labels) -> records]`` for ``EvalHook(extra_metrics=...)``; empty for label runs.

    The samples of ``Trainer.generate`` follow ``parts["prompts"].take(n)``, so sample i was made
    from prompt i (cycled): its attributes and caption are the targets.
    """
    prompts = parts.get("prompts")
    if not is_text(cfg) or prompts is None:
        return []
    out = []
    if prompts.attributes is not None:
        dataset = parts["base_dataset"]

        def adherence(fake, labels):
            return prompt_adherence(fake, dataset, prompts.attributes_of(len(fake)), cache_dir=cfg.get("cache_dir"))

        out.append(adherence)
    if "clip_score" in requested(cfg):
        out.append(clip_metric(cfg, prompts))
    return out


def clip_metric(cfg: DictConfig, prompts):
    """``callable(fake, labels) -> [clip_score record]`` (``available: false`` without weights)."""
    from evals.clip_score import clip_score_record  # noqa: PLC0415

    family = str(cfg.modality.get("eval_family", "image"))
    path = OmegaConf.select(cfg, "eval.clip_path")

    device = "cuda" if torch.cuda.is_available() else "cpu"  # rank 0 scores; the model is small next to SiT's
    real_value: dict[int, tuple] = {}  # n -> (value, n_real): the held-out items do not change during a run

    def clip(fake, labels):
        n = len(fake)
        captions = [prompts.captions[i] for i in prompts.indices(n)]
        record = clip_score_record(path, fake, captions, family, real=lambda: prompts.real_items(n),
                                   device=device, batch_size=int(cfg.eval.get("batch_size", 50)),
                                   known_real=real_value.get(n))
        if record.get("real_value") is not None:
            real_value[n] = (record["real_value"], record["n_real"])
        return [record]

    return clip
