"""Objects from a composed config: dataset, tokenizer, writer (``modality``), SiT (``model``), objective (``method``)."""

from __future__ import annotations

import inspect
import logging

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from core.transformer import SiT

from .config import instantiate_with_objects, time_distribution, validate
from .text_build import build_text, is_text

log = logging.getLogger("run")


def _accepts(target: str, name: str) -> bool:
    """Whether the class at ``target`` takes keyword ``name`` (the objectives that own per-layer heads)."""
    params = inspect.signature(get_object(target)).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build(cfg: DictConfig, dataset=None, text_parts: dict | None = None) -> dict:
    """Instantiate dataset, tokenizer, writer, model and objective from a composed config.

    A joint text run passes the member's ``dataset`` (already instantiated) and ``text_parts``
    (``encoder``: the caption encoder shared by all members; ``captions``: the member's
    ``(captions, attributes)``) to :func:`app.text_build.build_text`.
    """
    validate(cfg)
    dataset = instantiate(cfg.modality.dataset) if dataset is None else dataset
    tokenizer = instantiate(cfg.modality.tokenizer)
    writer = instantiate(cfg.modality.writer)
    m = cfg.model
    model = SiT(in_channels=tokenizer.token_dim, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                mlp_ratio=m.mlp_ratio, num_classes=dataset.num_classes, learn_sigma=m.learn_sigma,
                pos_axes=list(cfg.modality.pos_axes), grad_checkpointing=m.grad_checkpointing,
                prediction=m.get("prediction", "v"))
    text = build_text(cfg, dataset, tokenizer, **(text_parts or {})) if is_text(cfg) else None
    if text:  # conditioning=text: captions replace the labels, TextSiT the SiT (docs/text_conditioning.md)
        model = text["model"]
    if model.prediction == "v" and model.in_channels > model.hidden_size:
        log.warning("model.prediction=v with %d-value tokens and hidden_size=%d: the patch embedding cannot carry "
                    "the noise, so the velocity loss plateaus and samples stay noisy; use model.prediction=x "
                    "(or auto), a smaller modality.tokenizer.patch or a wider model", model.in_channels,
                    model.hidden_size)
    extra = {}
    if "encoder" in cfg.method:
        extra["encoder"] = instantiate(cfg.method.encoder, in_dim=tokenizer.token_dim)
    objective_kwargs = dict(time_dist=time_distribution(cfg), **extra)
    target = cfg.method.objective._target_
    for key, value in (("hidden_size", m.hidden_size), ("depth", m.depth)):  # heads sized by the backbone
        if _accepts(target, key):
            objective_kwargs[key] = value
    objective = instantiate_with_objects(cfg.method.objective, **objective_kwargs)
    parts = dict(dataset=dataset, tokenizer=tokenizer, writer=writer, model=model, objective=objective)
    if text:  # the class-labelled data set stays available for the domain metrics
        parts.update(dataset=text["dataset"], base_dataset=dataset, prompts=text["prompts"])
    return parts
