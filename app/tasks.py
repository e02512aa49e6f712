"""One entry for every task: ``main(cfg)`` validates, derives the run directory and the device once,
and runs ``train`` (here), ``sample`` (app/sample.py) or ``train_tokenizer`` (app/tokenizer.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from core import distributed as dist_utils
from core.checkpoint import CheckpointError
from core.io_utils import git_commit
from core.report import write_report
from core.trainer import Trainer, TrainConfig, pick_device, read_metrics

from .build import build
from .config import ConfigError, fingerprint, requested_run_dir, sampler_config, validate, write_config
from .evaluation import EvalHook
from .joint import is_joint, prepare_sample, train_joint, validate_joint
from .repa_encoders import encoder_record
from .sample import check as check_sample
from .sample import sample_task
from .text_eval import text_metrics
from .tokenizer import train_tokenizer

log = logging.getLogger("run")


def main(cfg: DictConfig) -> dict:
    """Run ``cfg.task``; returns a summary with ``run_dir``.

    Under ``torchrun`` every rank runs this; rank 0 alone writes files and evaluates.
    """
    validate_joint(cfg) if is_joint(cfg) else validate(cfg)  # modality=joint: every member (app/joint.py)
    if cfg.task == "train_tokenizer":
        return train_tokenizer(cfg, requested_run_dir(cfg))
    if cfg.task == "sample":
        check_sample(cfg)
    info = dist_utils.init_distributed(cfg.train.get("dist_backend", "auto"))
    if not info.is_main:  # under torchrun the console belongs to rank 0; other ranks report only problems
        logging.getLogger().setLevel(logging.WARNING)
    # ranks may have started at different seconds (hydra's dated output directory): rank 0's wins
    run_dir = Path(dist_utils.broadcast_object(str(requested_run_dir(cfg))))
    device = pick_device(cfg.train.get("device", "auto"), info.local_rank)
    try:
        if cfg.task == "sample":
            if is_joint(cfg):  # one member, exported from the joint checkpoint next to its samples
                cfg = prepare_sample(cfg, run_dir, info.is_main)
            return sample_task(cfg, run_dir, device, info.is_main)
        if is_joint(cfg):
            return train_joint(cfg, run_dir, device, info.is_main)
        return train(cfg, run_dir, device, info.is_main)
    except (CheckpointError, FileNotFoundError) as exc:  # checkpoint.path / train.resume: unreadable or absent
        raise ConfigError(str(exc)) from None


def train(cfg: DictConfig, run_dir: Path, device: torch.device, is_main: bool) -> dict:
    """``task=train``: train, sample with the EMA model, evaluate, and write the report."""
    commit = git_commit()  # the code this run starts with (HEAD may move while it trains)
    torch.manual_seed(int(cfg.seed))
    try:
        parts = build(cfg)
    except (ValueError, FileNotFoundError) as exc:  # bad input named by its own message (data folder, shapes)
        raise ConfigError(str(exc)) from exc
    if is_main:  # only once the parts were built: a run that cannot start leaves no run directory
        write_config(cfg, run_dir)
    encoder = getattr(parts["objective"], "encoder", None)
    if encoder is not None and is_main:  # which network REPA really used ("auto" picks at run time)
        (run_dir / "encoder.json").write_text(json.dumps(encoder_record(encoder), indent=1))
    declared = cfg.modality.get("num_classes")
    if declared is not None and declared != parts["dataset"].num_classes:
        raise ConfigError(f"modality.num_classes={declared} but the dataset has {parts['dataset'].num_classes} "
                          f"classes; fix modality.num_classes")
    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    sampler_cfg = sampler_config(cfg)
    parts["tokenizer"].fit(parts["dataset"])
    # text conditioning: the class-labelled data set for the domain metrics, and the prompt metrics
    evaluator = EvalHook(cfg, sampler_cfg, parts.get("base_dataset", parts["dataset"]),
                         extra_metrics=text_metrics(cfg, parts))
    trainer = Trainer(model=parts["model"], objective=parts["objective"], tokenizer=parts["tokenizer"],
                      dataset=parts["dataset"], cfg=train_cfg, run_dir=run_dir, sampler_cfg=sampler_cfg,
                      writer=parts["writer"], num_samples=int(cfg.sample.num_samples), sample_seed=int(cfg.sample.seed),
                      config_fingerprint=fingerprint(cfg), hooks=[evaluator], device=device,
                      prompts=parts.get("prompts"))
    summary = trainer.fit()
    assets = trainer.write_samples("final")
    prompts = parts.get("prompts")
    if prompts is not None and is_main and assets:  # which prompt each sample of the grid was made from
        assets["prompts"] = prompts.write_captions(run_dir / "samples" / "final_prompts.txt", int(cfg.sample.num_samples))
    trainer.run_hooks()
    if not is_main:
        return {**summary, "run_dir": str(run_dir)}
    evals = evaluator.results
    if evals is not None:
        (run_dir / "eval.json").write_text(json.dumps(evals, indent=1, default=str))
    n_params = sum(p.numel() for p in parts["model"].parameters())
    skipped = getattr(parts["dataset"], "skipped", [])
    if hasattr(skipped, "merge_spools"):  # files that broke inside DataLoader workers (any rank)
        skipped.merge_spools(sorted(run_dir.glob("skipped_in_workers_rank*.jsonl")))
    report_summary = {
        "modality": cfg.modality.name, "method": cfg.method.name, "model": cfg.model.name,
        "parameters": f"{n_params / 1e6:.2f} M", "prediction": parts["model"].prediction,
        "steps": summary["steps"], "batch size": train_cfg.batch_size,
        "wall time (this run)": f"{summary['wall_s']:.1f} s", "samples/s": summary["samples_per_s"],
        "sampler": f"{sampler_cfg.method}, {sampler_cfg.num_steps} steps, cfg {sampler_cfg.cfg_scale}",
        "dataset": f"{len(parts['dataset'])} items, {len(skipped)} skipped", "commit": commit,
    }
    if prompts is not None:
        c = cfg.conditioning
        report_summary["conditioning"] = f"text ({c.encoder} encoder, {c.arch} attention, text time {c.text_time})"
    if encoder is not None:
        report_summary["REPA encoder"] = getattr(encoder, "name", type(encoder).__name__)
    notes = [f"skipped unreadable file {p}: {why}" for p, why in skipped[:20]]
    write_report(run_dir, f"{cfg.method.name} on {cfg.modality.name}", report_summary,
                 read_metrics(run_dir / "metrics.jsonl"), assets, evals, notes)
    log.info("run directory: %s", run_dir)
    return {**summary, "run_dir": str(run_dir), "assets": {k: str(v) for k, v in assets.items()}}
