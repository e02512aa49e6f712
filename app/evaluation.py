"""The trainer's evaluation hook: score EMA samples with the modality's metrics through ``evals``."""

from __future__ import annotations

import inspect

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.io_utils import cache_dir
from core.samplers import SamplerConfig
from modalities.splits import reference_for

from .text_eval import TEXT_METRICS


class EvalHook:
    """``hook(trainer, step) -> {metric: value}`` for ``Trainer.hooks``.

    The full provenance records of the latest call are kept in :attr:`results` (None until the
    first evaluation; only on rank 0), for ``eval.json`` and the report.
    """

    def __init__(self, cfg: DictConfig, sampler_cfg: SamplerConfig, dataset, extra_metrics=()):
        self.cfg, self.sampler_cfg, self.dataset = cfg, sampler_cfg, dataset
        # callable(fake, labels) -> records, after the modality's metrics (text: prompt adherence)
        self.extra_metrics = list(extra_metrics)
        self.results: list[dict] | None = None

    def __call__(self, trainer, step: int) -> dict:
        cfg, sampler_cfg = self.cfg, self.sampler_cfg
        if not cfg.eval.enabled or cfg.eval.num_samples <= 0:
            return {}
        protocol = {"step": step, "sampler": sampler_cfg.method, "num_steps": sampler_cfg.num_steps,
                    "cfg_scale": sampler_cfg.cfg_scale, "sample_shift": sampler_cfg.shift}
        family = cfg.modality.eval_family  # the metric family (validated by app.config.validate)
        evaluate = None
        if family != "none":
            try:
                from evals.api import evaluate  # noqa: PLC0415 -- optional, heavy
            except ImportError as exc:
                results = [{"metric": "eval", "value": None, "reason": f"evals package unavailable: {exc}"}]
                self.results = results
                return {}
        fake, labels, nfe = trainer.generate(int(cfg.eval.num_samples), seed=int(cfg.sample.seed) + 1)  # all ranks
        if not trainer.dist.is_main:
            return {}
        real, protocol["reference"] = reference_for(self.dataset)  # held-out split, not the training items
        protocol["nfe"] = nfe
        results = []
        if evaluate is not None:
            metrics = None if cfg.eval.metrics == "auto" else [m for m in cfg.eval.metrics if m not in TEXT_METRICS]
            results = evaluate(family, fake=fake, real=real,
                               metrics=metrics, protocol=protocol, cache_dir=cache_dir("stats", root=cfg.cache_dir),
                               sample_rate=OmegaConf.select(cfg, "modality.dataset.sample_rate"),
                               device=str(trainer.device), limit_real=cfg.eval.get("limit_real"),
                               batch_size=int(cfg.eval.get("batch_size", 50)))
        results += modality_metrics(cfg, fake, self.dataset, protocol, labels)
        for metric in self.extra_metrics:
            results += [{**record, **{k: v for k, v in protocol.items() if k not in record}}
                        for record in metric(fake, labels)]
        self.results = results
        return {r["metric"]: r["value"] for r in results if isinstance(r.get("value"), (int, float))}


def modality_metrics(cfg: DictConfig, fake, dataset, protocol: dict, labels=None) -> list[dict]:
    """Metrics a modality names under ``modality.metrics`` (video motion, domain classifiers).

    Each is ``callable(fake, dataset[, labels=...])``; it gets the samples' conditioning labels
    when it has a ``labels`` parameter. It returns a dict (first value the headline, the rest
    kept as details) or a list of finished records (``{"metric", "value", ...}``).
    """
    results = []
    for name, node in (cfg.modality.get("metrics") or {}).items():
        fn = instantiate(node)
        takes_labels = "labels" in inspect.signature(fn).parameters
        values = fn(fake, dataset, labels=labels) if takes_labels else fn(fake, dataset)
        if isinstance(values, list):
            results += [{**record, **{k: v for k, v in protocol.items() if k not in record}} for record in values]
            continue
        headline = next(iter(values))
        record = {"metric": f"{name}_{headline}", "value": values[headline], "details": values,
                  "extractor": "none (network-free)", **protocol}
        if values[headline] is None:
            record.update(available=False, reason=values.get("reason", "no value"))
        results.append(record)
    return results
