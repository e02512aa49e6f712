"""``task=sample sample.prompts=FILE``: samples of a text-conditioned checkpoint, one batch of prompts
at a time, CFG against the empty prompt (``sample.cfg_scale``).

Writes into the output directory: the modality's sample files (``prompts_*``), ``prompts.txt`` (the
prompt of every sample, in order), ``samples_prompts.npz`` (``samples`` as the sampling job quantises
them, ``prompts``) and ``sample.json`` (protocol). Seeds: batch i uses ``batch_seed(seed, i)`` as
everywhere else. Not sharded over processes: prompt files are short.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.checkpoint import load_checkpoint, resolve_checkpoint
from core.convert import extract_state_dict
from core.io_utils import git_commit
from core.sample_job import generate_tokens, quantize
from core.text.model import TextSiT

from .config import ConfigError, sampler_config, write_config
from .text_build import encode_prompts, read_prompts

log = logging.getLogger("run")


def load_text_model(path, prefer: str = "ema") -> tuple[TextSiT, dict, Path]:
    """A text-conditioned checkpoint -> ``(TextSiT in eval mode, checkpoint dict, file)``."""
    file = resolve_checkpoint(path)
    state = load_checkpoint(file)
    config = state.get("model_config") or {}
    if "text" not in config:
        raise ConfigError(f"{file} is not a text-conditioned checkpoint (no text settings in its model_config); "
                          f"drop sample.prompts for class-conditioned checkpoints")
    model = TextSiT.from_arch_config(config)
    weights, _, _ = extract_state_dict(state, prefer, where=str(file))  # the EMA's own nesting included
    model.load_state_dict(weights)
    return model.eval(), state, file


def text_checkpoint_hint(path) -> str | None:
    """The fix, when a text-conditioned checkpoint was sampled without prompts (else None)."""
    try:
        state = load_checkpoint(resolve_checkpoint(path))
    except Exception:
        return None
    if "text" not in (state.get("model_config") or {}):
        return None
    return (f"checkpoint.path={path} is text-conditioned: sample it from prompts with sample.prompts=<file, one "
            f"prompt per line> (and sample.per_prompt=N)")


def prompt_sample_task(cfg: DictConfig, out_dir: Path, device: torch.device, is_main: bool) -> dict:
    s = cfg.sample
    try:
        prompts = read_prompts(s.prompts)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    model, state, file = load_text_model(cfg.checkpoint.path, cfg.checkpoint.get("prefer", "ema"))
    tokenizer = instantiate(cfg.modality.tokenizer)
    tokenizer.load_state_dict(state["tokenizer"])
    model, tokenizer = model.to(device), tokenizer.to(device).eval()
    per = int(s.get("per_prompt", 1))
    captions = [p for p in prompts for _ in range(per)]
    try:  # the pretrained encoder's directory: missing files, or not the one the checkpoint was trained with
        conditions = encode_prompts(model, captions, cfg).to(device)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    sampler = sampler_config(cfg)
    batch_size, seed = int(s.get("batch_size", 64)), int(s.seed)
    coords = tokenizer.coords().to(device)
    t0, chunks, nfe = time.perf_counter(), [], 0
    with torch.no_grad():
        for i, start in enumerate(range(0, len(captions), batch_size)):
            x, nfe = generate_tokens(model, coords, conditions[start:start + batch_size], sampler, seed, i)
            chunks.append(tokenizer.decode(x.float()).cpu())
    samples = torch.cat(chunks)
    wall = time.perf_counter() - t0
    if not is_main:
        return {"run_dir": str(out_dir)}
    write_config(cfg, out_dir)
    assets = instantiate(cfg.modality.writer).write(samples, None, out_dir, "prompts")
    arr = quantize(samples, s.get("quantize", "round"), cfg.modality.get("quantize"))
    np.savez(out_dir / "samples_prompts.npz", samples=arr, prompts=np.array(captions))
    (out_dir / "prompts.txt").write_text("".join(c + "\n" for c in captions))
    record = {"checkpoint": str(file), "step": state.get("step"), "prompts_file": str(s.prompts),
              "num_samples": len(captions), "per_prompt": per, "seed": seed,
              "sampler": OmegaConf.to_container(s, resolve=True), "nfe_per_batch": nfe, "wall_s": wall,
              "null_condition": "the empty prompt", "commit": git_commit()}
    (out_dir / "sample.json").write_text(json.dumps(record, indent=1, default=str))
    log.info("%d samples from %d prompts -> %s", len(captions), len(prompts), out_dir)
    return {"run_dir": str(out_dir), "num_samples": len(captions), "assets": {k: str(v) for k, v in assets.items()}}
