"""``task=sample``: N samples from a checkpoint (ours or a published layout) into an ADM npz, resumably.

Every rank runs this under torchrun; batches are sharded round-robin and rank 0 merges them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from core import distributed as dist_utils
from core.io_utils import git_commit

from .config import ConfigError, require, sampler_config, write_config

log = logging.getLogger("run")


def check(cfg: DictConfig) -> None:
    ck, s = cfg.get("checkpoint"), cfg.sample
    require(ck is not None and bool(ck.get("path")),
            "checkpoint.path is missing: task=sample needs checkpoint.path=<.pt file or run dir> and "
            "checkpoint.layout=selfflow|repa|sit|ours (or +experiment=selfflow_imagenet256|repa_sit_xl2|sit_xl2)")
    require(s.get("autocast") in (None, "bf16", "fp16"), f"sample.autocast={s.get('autocast')!r}: must be null, bf16 or fp16")
    member = s.get("modality")
    require(member is None or member == cfg.modality.name or "members" in cfg.modality,
            f"sample.modality={member}: picks a member of a joint checkpoint; use it with modality=joint "
            f"(this config is modality={cfg.modality.name})")


def sample_task(cfg: DictConfig, run_dir: Path, device: torch.device, is_main: bool) -> dict:
    from core.convert import load_pretrained  # noqa: PLC0415
    from core.sample_job import run_sampling  # noqa: PLC0415

    ck, s = cfg.checkpoint, cfg.sample
    out_dir = Path(dist_utils.broadcast_object(str(s.get("out_dir") or run_dir)))
    if s.get("prompts"):  # a text-conditioned checkpoint sampled from a prompt file
        from .text_sample import prompt_sample_task  # noqa: PLC0415

        return prompt_sample_task(cfg, out_dir, device, is_main)
    if is_main:
        write_config(cfg, out_dir)
    try:
        model, conv = load_pretrained(ck.path, ck.get("layout", "ours"), prefer=ck.get("prefer", "ema"),
                                      strict=bool(ck.get("strict", True)), patch_size=int(cfg.model.patch_size),
                                      pos_axes=list(cfg.modality.pos_axes), num_heads=int(cfg.model.num_heads),
                                      prediction=cfg.model.get("prediction", "auto"))  # our checkpoints' stored values win
    except ValueError:
        from .joint import joint_checkpoint_hint  # noqa: PLC0415 -- only on this error path
        from .text_sample import text_checkpoint_hint  # noqa: PLC0415

        hint = joint_checkpoint_hint(ck.path, cfg.modality.name) or text_checkpoint_hint(ck.path)
        if hint:
            raise ConfigError(hint) from None
        raise
    tokenizer = instantiate(cfg.modality.tokenizer)
    if conv.tokenizer_state is not None:  # our checkpoints carry fitted tokenizer buffers
        tokenizer.load_state_dict(conv.tokenizer_state)
    model, tokenizer = model.to(device), tokenizer.to(device).eval()
    autocast = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[s.get("autocast")]
    summary = run_sampling(
        model, tokenizer.decode, tokenizer.coords(), sampler_config(cfg), int(s.num_samples),
        int(s.get("batch_size", 64)), int(s.seed), out_dir, class_mode=s.get("class_mode", "random"),
        quantize_mode=s.get("quantize", "round"), sample_kind=cfg.modality.get("quantize"), save_png=bool(s.get("save_png", False)), autocast_dtype=autocast,
        protocol={"checkpoint": conv.summary(), "model": cfg.model.name, "modality": cfg.modality.name,
                  "commit": git_commit()})
    if is_main:
        log.info("samples: %s (%d batches generated, %d reused)", summary["npz"], summary["generated_batches"],
                 summary["skipped_batches"])
    return {**summary, "run_dir": str(out_dir)}
